"""``PgContexts`` beyond the shared contract suite (tests/test_context_catalog.py runs that one
on PostgreSQL too): what only a server catalogue has -- the marker row, two hosts (two local
working folders) sharing one database, and the advisory writer lock across processes. A REAL
PostgreSQL server (``pg_database``: a fresh database per test)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_context_catalog import pg_database  # noqa: F401 - the fixture

import app
from app.backends.postgres.catalog import FORMAT_VERSION, PgContexts

REPO = Path(__file__).resolve().parent.parent


def test_open_without_create_writes_nothing(pg_database: str, tmp_path: Path) -> None:  # noqa: F811
    import psycopg

    catalog = PgContexts(pg_database, tmp_path / "cache")
    try:
        with pytest.raises(app.NotFoundError):
            catalog.open(create=False)
        assert catalog.names() == [] and not catalog.exists("a")
    finally:
        catalog.close()
    with psycopg.connect(pg_database) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,)
    assert not (tmp_path / "cache").exists()


def test_an_unknown_format_version_is_refused(pg_database: str, tmp_path: Path) -> None:  # noqa: F811
    import psycopg

    catalog = PgContexts(pg_database, tmp_path / "cache")
    try:
        catalog.open(create=True)
        with psycopg.connect(pg_database) as conn:
            conn.execute(
                "UPDATE ctxstore_meta SET schema_version = %s WHERE part = %s",
                (FORMAT_VERSION + 1, "catalog"),
            )
        with pytest.raises(app.SchemaVersionError):
            catalog.open(create=False)
        with pytest.raises(app.SchemaVersionError):
            catalog.open(create=True)  # opening never migrates
    finally:
        catalog.close()


def test_two_hosts_share_the_catalogue(pg_database: str, tmp_path: Path) -> None:  # noqa: F811
    one = PgContexts(pg_database, tmp_path / "host1")
    two = PgContexts(pg_database, tmp_path / "host2")
    try:
        one.open(create=True)
        two.open(create=False)
        with one.writer_lock.hold():
            one.create("a")
        assert two.names() == ["a"] and two.exists("a")
        with two.writer_lock.hold():
            two.create("a")  # present: nothing
            two.create("b")
        assert one.names() == ["a", "b"]
    finally:
        one.close()
        two.close()


def test_a_cache_left_by_a_killed_drop_is_never_reused(
    pg_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The drop's commit removed the row, then the process died before the local cache went:
    the name is free, and neither ``create`` nor ``install`` revives the stale files."""
    import psycopg

    catalog = PgContexts(pg_database, tmp_path / "cache")
    try:
        catalog.open(create=True)
        for again in ("create", "install"):
            with catalog.writer_lock.hold():
                catalog.create("a")
            (catalog.folder("a") / "stale").write_bytes(b"old")
            with psycopg.connect(pg_database) as conn:
                conn.execute("DELETE FROM ctxstore_contexts WHERE name = %s", ("a",))
            assert catalog.names() == [] and not catalog.present("a")
            with catalog.writer_lock.hold():
                if again == "create":
                    catalog.create("a")
                else:
                    with catalog.staging("import") as staged:
                        (staged / "context.json").write_bytes(b"{}")
                        catalog.install("a", staged, replace=False, forget=lambda: None)
            assert catalog.names() == ["a"]
            assert not (catalog.folder("a") / "stale").exists()
            with catalog.writer_lock.hold():
                catalog.drop("a", contextlib.nullcontext)
    finally:
        catalog.close()


def test_the_url_password_is_never_shown(tmp_path: Path) -> None:
    catalog = PgContexts("postgresql://someone:s3cret@127.0.0.1:1/store", tmp_path / "cache")
    shown = [repr(catalog), catalog.where(), repr(catalog.writer_lock)]
    assert all("s3cret" not in text for text in shown), shown


def test_the_writer_lock_is_reentrant_and_shared_by_threads(
    pg_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    catalog = PgContexts(pg_database, tmp_path / "cache")
    lock = catalog.writer_lock
    other: list[str] = []

    def contender() -> None:
        try:
            with lock.hold(timeout=0.2):
                other.append("got it")
        except app.ConflictError:
            other.append("timed out")

    try:
        with lock.hold():
            with lock.hold():
                assert lock.held
            thread = threading.Thread(target=contender)
            thread.start()
            thread.join()
        assert other == ["timed out"] and not lock.held
        thread = threading.Thread(target=contender)
        thread.start()
        thread.join()
        assert other == ["timed out", "got it"]
    finally:
        catalog.close()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from app.backends.postgres.catalog import PgContexts

    catalog = PgContexts(sys.argv[1], Path(sys.argv[2]))
    with catalog.context_lock("c").hold():
        print("held", flush=True)
        time.sleep(600)
    """
)


def test_a_killed_holder_releases_the_context_lock(pg_database: str, tmp_path: Path) -> None:  # noqa: F811
    """Another process holds a context's lock: this one times out (ConflictError); once that
    process is killed (SIGKILL, no cleanup) the server ends its session and the lock is free."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, pg_database, str(tmp_path / "other")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    catalog = PgContexts(pg_database, tmp_path / "cache")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(app.ConflictError), catalog.context_lock("c").hold(timeout=0.3):
            pass
        with catalog.context_lock("d").hold(timeout=5):  # another context: not blocked
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        with catalog.context_lock("c").hold(timeout=30):
            assert catalog.context_lock("c").held
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=30)
        catalog.close()


def test_a_store_runs_on_the_postgresql_catalogue(
    pg_database: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The seam end to end: ``Store`` over a backend whose catalogue is ``PgContexts`` (the
    records still in the local working folder, strategy 9.2) -- create, write, list, export,
    import and overwrite a whole context (staging + install), drop; a second host sees the
    same contexts (not their records yet)."""
    from app.backends.local import LocalBackend
    from app.backends.registry import SCHEMES
    from app.managers.store import open_store

    class PgCatalogBackend(LocalBackend):
        def __init__(self, root: Path) -> None:
            super().__init__(root)
            self._pg = PgContexts(pg_database, root)

        def catalog(self) -> Any:
            return self._pg

    made: list[PgCatalogBackend] = []

    def host(name: str) -> Callable[[str, str | None], PgCatalogBackend]:
        def make(url: str, files: str | None) -> PgCatalogBackend:
            made.append(PgCatalogBackend(tmp_path / name))
            return made[-1]

        return make

    monkeypatch.setitem(SCHEMES, "pgone", host("one"))
    monkeypatch.setitem(SCHEMES, "pgtwo", host("two"))
    try:
        with pytest.raises(app.NotFoundError):
            open_store("pgone://x", create=False)
        with open_store("pgone://x") as store:
            store.context("c").append("things", [{"id": "x", "v": 1}])
            assert store.contexts() == ["c"]
            assert store.context("c").get("things", "x") == {"id": "x", "v": 1}
            store.export_context("c", tmp_path / "c.tar.gz")  # a staging folder
            store.import_context(tmp_path / "c.tar.gz", name="d")  # staging + install
            store.import_context(tmp_path / "c.tar.gz", name="d", on_conflict="overwrite")
            assert store.contexts() == ["c", "d"]
            assert store.context("d").get("things", "x") == {"id": "x", "v": 1}
        with open_store("pgtwo://x", create=False) as other:
            assert other.contexts() == ["c", "d"]
        with open_store("pgone://x") as store:
            store.drop_context("c")
            store.drop_context("d")
            assert store.contexts() == []
        with open_store("pgtwo://x", create=False) as other:
            assert other.contexts() == []
    finally:
        for backend in made:
            backend.catalog().close()
