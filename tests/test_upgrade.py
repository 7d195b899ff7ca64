"""``ctxstore upgrade`` (docs/api.md, "Upgrading a store"): opening never migrates, using an
older part raises ``SchemaVersionError`` naming the command, the command migrates under the
store's lock and keeps everything; a newer, unknown format is refused.

The old store is really written in the old format: a store used by this version, then its
tracker rewritten as version 1 wrote it (no steady-clock heartbeat, priority or retry
columns, user_version 1) or version 2 (no priority or retry columns),
and trust marks as version 1 wrote them (empty files).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from backend_matrix import BACKENDS

import app
from app.backends.postgres import upgrade as pg_upgrade
from app.backends.postgres.catalog import FORMAT_VERSION, PgContexts
from app.backends.postgres.connect import Database
from app.backends.postgres.schema import ensure_schema, schema_version
from app.backends.postgres.upgrade import PgPart
from app.core import layout
from app.core.workflow_types import WorkflowStatus as S
from app.managers.maintenance.upgrade import planned, upgrade_store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def embedded_root(tmp_path: Path) -> Path:
    """An embedded store's folder (the module's ``backend_kind`` serves the PostgreSQL tests,
    so the matrix's ``store_root`` would be a URL here)."""
    return tmp_path / "store"


def env() -> dict[str, str]:
    """The test process's environment now (fixtures set $CTXSTORE_WORK, the AWS variables),
    without $CTXSTORE_ROOT."""
    return {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}


def cli(root: Path | str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "app", "--root", str(root), *args],
        capture_output=True,
        timeout=120,
        env={**env(), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=False,
    )


def tracker_version(root: Path) -> int:
    db = sqlite3.connect(layout.tracker(root))
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def old_store(root: Path) -> dict[str, str]:
    """A store whose tracker is in version 1's format, holding a completed and a pending
    workflow; returns their ids by status."""
    with app.open_store(root) as store:
        ctx = store.context("c")
        ctx.append("t", [{"id": "a", "v": 1}])
        done = store.workflows.submit(
            "append",
            context="c",
            items=[{"id": f"w{i}"} for i in range(7)],
            params={"collection": "t"},
        )
        assert store.workflows.process(done.workflow_id).status == S.COMPLETED
        pending = store.workflows.submit(
            "append", context="c", items=[{"id": "p"}], params={"collection": "t"}
        )
    downgrade_tracker(root, 1)
    return {"completed": done.workflow_id, "pending": pending.workflow_id}


V3_COLUMNS = ("priority", "max_retries", "attempts", "chunk_failures", "not_before")


def downgrade_tracker(root: Path, version: int) -> None:
    """Rewrite the tracker as ``version`` wrote it: version 2 had no priority or retry
    columns (nor their queue index), version 1 no steady-clock heartbeat columns either."""
    db = sqlite3.connect(layout.tracker(root))
    db.execute("DROP INDEX IF EXISTS workflows_queue")
    dropped = V3_COLUMNS + (("beat_boot", "beat_steady") if version == 1 else ())
    for column in dropped:
        db.execute(f"ALTER TABLE workflows DROP COLUMN {column}")
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()


def test_opening_never_migrates_and_use_names_the_command(embedded_root: Path) -> None:
    old_store(embedded_root)
    raw = layout.tracker(embedded_root).read_bytes()
    with app.open_store(embedded_root) as store:
        assert store.context("c").get("t", "a") == {"id": "a", "v": 1}  # records unaffected
        with pytest.raises(app.SchemaVersionError, match="run `ctxstore upgrade`"):
            store.workflows.list()
        with pytest.raises(app.SchemaVersionError, match="ctxstore upgrade"):
            store.workflows.submit(
                "append", context="c", items=[{"id": "x"}], params={"collection": "t"}
            )
    assert tracker_version(embedded_root) == 1
    assert layout.tracker(embedded_root).read_bytes() == raw  # not a byte written


def test_upgrade_migrates_the_tracker_and_keeps_every_workflow(embedded_root: Path) -> None:
    ids = old_store(embedded_root)
    with app.open_store(embedded_root) as store:
        steps = planned(store)
        assert len(steps) == 1 and "tracker version 1 -> 3" in steps[0].what
        seen: list[str] = []
        report = upgrade_store(store, on_step=seen.append)
        assert report.applied == [steps[0].what]
        assert seen == [steps[0].what, "c"]  # the migration, then each context checked
        assert report.checked == 1 and report.notes == []
    assert tracker_version(embedded_root) == 3
    with app.open_store(embedded_root) as store:
        assert store.workflows.get(ids["completed"]).status == S.COMPLETED
        assert store.workflows.get(ids["pending"]).status == S.PENDING
        assert store.workflows.process(ids["pending"]).status == S.COMPLETED
        assert store.context("c").count("t") == 9
        assert store.verify().ok
        assert planned(store) == []
        again = upgrade_store(store)
        assert again.applied == [] and again.checked == 1


def test_upgrade_waits_for_the_store_writer_lock(embedded_root: Path) -> None:
    old_store(embedded_root)
    with app.open_store(embedded_root) as holder, app.open_store(embedded_root) as other:
        done = threading.Event()

        def upgrade() -> None:
            upgrade_store(other)
            done.set()

        with holder.writer_lock.hold():
            worker = threading.Thread(target=upgrade)
            worker.start()
            assert not done.wait(0.5)  # blocked behind the lock
            assert tracker_version(embedded_root) == 1
        worker.join(60)
        assert done.is_set()
    assert tracker_version(embedded_root) == 3


def test_cli_upgrade_dry_run_then_upgrade(embedded_root: Path) -> None:
    ids = old_store(embedded_root)
    dry = cli(embedded_root, "upgrade", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert b"tracker version 1 -> 3" in dry.stdout and b"1 migration(s) pending" in dry.stdout
    assert tracker_version(embedded_root) == 1
    listed = cli(embedded_root, "workflows", "list")
    assert listed.returncode == 1 and b"ctxstore upgrade" in listed.stderr
    done = cli(embedded_root, "upgrade")
    assert done.returncode == 0, done.stderr
    assert b"1 migration(s) applied; 1 context(s) checked" in done.stdout
    assert tracker_version(embedded_root) == 3
    shown = cli(embedded_root, "workflows", "show", ids["completed"])
    assert shown.returncode == 0, shown.stderr
    again = cli(embedded_root, "upgrade", "--json")
    assert orjson.loads(again.stdout)["applied"] == []


def test_cli_upgrade_takes_root_after_the_command(embedded_root: Path, tmp_path: Path) -> None:
    old_store(embedded_root)
    proc = cli(tmp_path / "elsewhere", "upgrade", "--root", str(embedded_root))
    assert proc.returncode == 0, proc.stderr
    assert tracker_version(embedded_root) == 3
    assert not (tmp_path / "elsewhere").exists()


def test_a_newer_tracker_is_refused_and_upgrade_leaves_it(embedded_root: Path) -> None:
    old_store(embedded_root)
    db = sqlite3.connect(layout.tracker(embedded_root))
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with app.open_store(embedded_root) as store:
        with pytest.raises(app.SchemaVersionError, match="unknown"):
            store.workflows.list()
        assert planned(store) == []  # nothing an upgrade knows how to do
    assert tracker_version(embedded_root) == 99


def test_upgrade_notes_version_1_trust_marks_and_never_signs_them(embedded_root: Path) -> None:
    old_store(embedded_root)
    trust = embedded_root / "trust"
    trust.mkdir(exist_ok=True)
    sha = "ab" * 32
    (trust / sha).write_bytes(b"")  # what version 1 wrote: an empty mark
    proc = cli(embedded_root, "upgrade")
    assert proc.returncode == 0, proc.stderr
    assert b"1 model trust mark(s) written by version 1" in proc.stderr
    assert b"ctxstore models trust --existing" in proc.stderr
    assert (trust / sha).read_bytes() == b""  # still unsigned


def test_upgrade_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    proc = cli(tmp_path / "none", "upgrade")
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"error: ")
    assert not (tmp_path / "none").exists()


def test_a_current_store_has_nothing_to_upgrade(store: app.Store, embedded_root: Path) -> None:
    store.context("x").append("t", [{"id": "1"}])
    report = upgrade_store(store)
    assert report.applied == [] and report.checked == 1
    assert not layout.tracker(embedded_root).exists()  # checking never creates the tracker


# -- PostgreSQL: every part's tables, under the schema advisory lock ------------------------


@pytest.fixture
def pg_database(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test (a store is one database); dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"t_upgrade_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urllib.parse.urlsplit(pg_server_url)
    try:
        yield urllib.parse.urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


WIDGETS_V1 = PgPart("ops_widgets", ("CREATE TABLE ops_widgets (id integer PRIMARY KEY)",), 1)
WIDGETS_V2 = PgPart(
    "ops_widgets",
    ("CREATE TABLE ops_widgets (id integer PRIMARY KEY, label text NOT NULL DEFAULT '')",),
    2,
    {1: ("ALTER TABLE ops_widgets ADD COLUMN label text NOT NULL DEFAULT ''",)},
)


def test_pg_part_older_is_refused_on_use_and_migrated_by_upgrade(pg_database: str) -> None:
    db = Database(pg_database)
    try:
        assert pg_upgrade.upgrade(db, WIDGETS_V1) is True  # created at version 1
        with db.transaction() as conn:
            conn.execute("INSERT INTO ops_widgets (id) VALUES (1), (2)")
        # this version (v2) using the part: refused, naming the command; nothing changes
        with (
            pytest.raises(app.SchemaVersionError, match="run `ctxstore upgrade`"),
            db.transaction() as conn,
        ):
            ensure_schema(conn, WIDGETS_V2.name, WIDGETS_V2.ddl, WIDGETS_V2.version)
        (pending,) = pg_upgrade.planned(db, [WIDGETS_V2])
        assert pending == (WIDGETS_V2, 1)
        assert pg_upgrade.describe(*pending) == "PostgreSQL part ops_widgets: version 1 -> 2"
        assert pg_upgrade.upgrade(db, WIDGETS_V2) is True
        with db.connection() as conn:
            rows = conn.execute("SELECT id, label FROM ops_widgets ORDER BY id").fetchall()
            assert rows == [(1, ""), (2, "")]  # every row kept, the new column added
            assert schema_version(conn, "ops_widgets") == 2
            ensure_schema(conn, WIDGETS_V2.name, WIDGETS_V2.ddl, 2)  # usable now
        assert pg_upgrade.upgrade(db, WIDGETS_V2) is False  # idempotent
        assert pg_upgrade.planned(db, [WIDGETS_V2]) == []
        # an older ctxstore (v1) meeting the upgraded part: unknown, newer
        with pytest.raises(app.SchemaVersionError, match="unknown"), db.transaction() as conn:
            ensure_schema(conn, WIDGETS_V1.name, WIDGETS_V1.ddl, 1)
        with pytest.raises(app.SchemaVersionError, match="newer"):
            pg_upgrade.upgrade(db, WIDGETS_V1)
    finally:
        db.close()


def test_pg_part_without_a_migration_is_refused_and_left_alone(pg_database: str) -> None:
    db = Database(pg_database)
    try:
        pg_upgrade.upgrade(db, WIDGETS_V1)
        v3 = WIDGETS_V2._replace(version=3)  # knows 1 -> 2 only
        with pytest.raises(app.SchemaVersionError, match="cannot migrate version 2"):
            pg_upgrade.upgrade(db, v3)
        with db.connection() as conn:  # the transaction rolled back: still version 1
            assert schema_version(conn, "ops_widgets") == 1
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'ops_widgets'"
            ).fetchall()
            assert columns == [("id",)]
    finally:
        db.close()


def test_pg_store_parts_are_created_by_upgrade_and_an_older_store_names_it(
    pg_database: str, tmp_path: Path
) -> None:
    import psycopg

    catalog = PgContexts(pg_database, tmp_path / "work")
    db = Database(pg_database)
    try:
        assert [p.name for p, _ in pg_upgrade.planned(db)][:1] == ["catalog"]  # empty database
        catalog.open(create=True)  # create=True: the current store schema
        missing = pg_upgrade.planned(db)
        assert ("catalog", FORMAT_VERSION) not in [(p.name, v) for p, v in missing]
        for part, _ in missing:
            pg_upgrade.upgrade(db, part)
        assert pg_upgrade.planned(db) == []
        with psycopg.connect(pg_database) as conn:  # what an older store would record
            conn.execute("UPDATE ctxstore_meta SET schema_version = 0 WHERE part = 'catalog'")
        with pytest.raises(app.SchemaVersionError, match="run `ctxstore upgrade`"):
            catalog.open(create=False)
    finally:
        catalog.close()
        db.close()


@pytest.fixture(params=BACKENDS[1:])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_pg_cli_upgrade_creates_missing_parts_and_refuses_a_newer_store(
    matrix_store_args: tuple[str, str | None],
) -> None:
    import psycopg

    root, files = matrix_store_args
    assert files is not None
    with app.open_store(root, files=files) as store:  # create=True: the current store schema
        store.context("c").append("t", [{"id": "1"}])
        assert planned(store) == []  # every part's tables exist at this version
    current = cli(root, "--files", files, "upgrade", "--dry-run")
    assert current.returncode == 0 and b"0 migration(s) pending" in current.stdout
    with psycopg.connect(root) as conn:  # a store written before the access part existed
        conn.execute("DROP TABLE tokens, audit")
        conn.execute("DELETE FROM ctxstore_meta WHERE part = 'access'")
    with app.open_store(root, files=files, create=False) as store:  # opening adds nothing
        assert [s.what for s in planned(store)] == ["PostgreSQL part access: create at version 1"]
        assert store.tokens.list() == []  # reads of the missing part read as empty
    dry = cli(root, "--files", files, "upgrade", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert b"PostgreSQL part access: create at version 1" in dry.stdout
    done = cli(root, "--files", files, "upgrade")
    assert done.returncode == 0, done.stderr
    assert b"1 migration(s) applied; 1 context(s) checked" in done.stdout
    again = cli(root, "--files", files, "upgrade", "--json")
    assert orjson.loads(again.stdout)["applied"] == []
    with app.open_store(root, files=files, create=False) as store:
        assert store.context("c").get("t", "1") == {"id": "1"}
    with psycopg.connect(root) as conn:
        conn.execute(
            "UPDATE ctxstore_meta SET schema_version = %s WHERE part = 'catalog'",
            (FORMAT_VERSION + 1,),
        )
    newer = cli(root, "--files", files, "upgrade")
    assert newer.returncode == 1
    assert b"unknown" in newer.stderr or b"newer" in newer.stderr
    with pytest.raises(app.SchemaVersionError, match="unknown"):
        app.open_store(root, files=files, create=False)


# -- the tracker's priorities and retries (version 3 embedded, part version 2 on PostgreSQL) --


def test_a_version_2_tracker_is_refused_then_upgraded_with_attempts_filled(
    embedded_root: Path,
) -> None:
    ids = old_store(embedded_root)  # written as version 1, brought to version 2 below
    assert upgrade_store_to_2(embedded_root)
    with app.open_store(embedded_root) as store:
        with pytest.raises(app.SchemaVersionError, match="version 2 is older"):
            store.workflows.get(ids["completed"])
        (step,) = planned(store)
        assert "tracker version 2 -> 3" in step.what
        assert upgrade_store(store).applied == [step.what]
    assert tracker_version(embedded_root) == 3
    with app.open_store(embedded_root) as store:
        done = store.workflows.get(ids["completed"])
        assert (done.priority, done.max_retries, done.attempts) == (0, 0, done.chunks_done)
        assert done.attempts == 1
        again = store.workflows.process(ids["pending"])
        assert again.status == S.COMPLETED and again.attempts == 1
        late = store.workflows.submit(
            "append", context="c", items=[{"id": "q"}], params={"collection": "t"}, priority=5
        )
        assert store.workflows.get(late.workflow_id).priority == 5


def upgrade_store_to_2(root: Path) -> bool:
    """What ``ctxstore upgrade`` of version 2 did to a version-1 tracker."""
    db = sqlite3.connect(layout.tracker(root))
    try:
        db.execute("ALTER TABLE workflows ADD COLUMN beat_boot TEXT")
        db.execute("ALTER TABLE workflows ADD COLUMN beat_steady REAL")
        db.execute("PRAGMA user_version=2")
        db.commit()
    finally:
        db.close()
    return tracker_version(root) == 2


def test_pg_tracker_part_1_is_refused_then_migrated_keeping_every_workflow(
    matrix_store_args: tuple[str, str | None],
) -> None:
    import psycopg

    root, files = matrix_store_args
    with app.open_store(root, files=files) as store:
        store.context("c").append("t", [{"id": "a"}])
        done = store.workflows.submit(
            "append",
            context="c",
            items=[{"id": f"w{i}"} for i in range(5)],
            params={"collection": "t"},
            chunk_size=2,
        )
        assert store.workflows.process(done.workflow_id).status == S.COMPLETED
        pending = store.workflows.submit(
            "append", context="c", items=[{"id": "p"}], params={"collection": "t"}
        )
    with psycopg.connect(root) as conn:  # the tracker tables as part version 1 created them
        conn.execute(
            "ALTER TABLE ctxstore_workflows DROP COLUMN max_retries, DROP COLUMN attempts,"
            " DROP COLUMN chunk_failures, DROP COLUMN not_before"
        )
        conn.execute("UPDATE ctxstore_meta SET schema_version = 1 WHERE part = 'tracker'")
    with app.open_store(root, files=files, create=False) as store:
        with pytest.raises(app.SchemaVersionError, match="run `ctxstore upgrade`"):
            store.workflows.list()
        assert [s.what for s in planned(store)] == ["PostgreSQL part tracker: version 1 -> 2"]
    proc = cli(root, "--files", files, "upgrade")
    assert proc.returncode == 0, proc.stderr
    assert b"1 migration(s) applied" in proc.stdout
    with app.open_store(root, files=files, create=False) as store:
        assert planned(store) == []
        old = store.workflows.get(done.workflow_id)
        assert old.status == S.COMPLETED and old.attempts == old.chunks_done == 3
        assert store.workflows.process(pending.workflow_id).status == S.COMPLETED
        assert store.context("c").count("t") == 7
