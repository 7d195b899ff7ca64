"""Contract tests of ``ContextCatalog`` (``app.backends.protocols``): the store's catalogue of
contexts behind the backend. A new backend adds a factory to ``FACTORIES`` and every test runs
against it; ``Store`` reaches the catalogue only through the protocol (the spy test)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from backend_servers import _with_database

import app
from app.backends.local import LocalBackend
from app.backends.local.contexts import LocalContexts
from app.backends.protocols import Backend, ContextCatalog
from app.backends.registry import SCHEMES
from app.core.locks import Lock, WriterLock
from app.managers.store import Store, open_store

FACTORIES: dict[str, Callable[[Path], Backend]] = {
    "local": lambda tmp: LocalBackend(tmp / "store"),
}
SERVER_FACTORIES: dict[str, Callable[[Path, str], Backend]] = {
    "postgres": lambda tmp, url: _pg_catalog_backend(url, tmp / "cache"),
}
"""Factories that need a server: called with a FRESH database's URL per test (``pg_database``)."""


class _CatalogOnly:
    """A backend with only its catalogue (the PostgreSQL backend has no other part yet)."""

    def __init__(self, catalog: ContextCatalog) -> None:
        self._catalog = catalog

    def catalog(self) -> ContextCatalog:
        return self._catalog


def _pg_catalog_backend(url: str, cache: Path) -> Backend:
    from app.backends.postgres.catalog import PgContexts

    return cast(Backend, _CatalogOnly(PgContexts(url, cache)))


@pytest.fixture
def pg_database(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test (a store is one database); dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"t_catalog_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


@pytest.fixture(params=sorted(FACTORIES) + sorted(SERVER_FACTORIES))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param in SERVER_FACTORIES:
        url = request.getfixturevalue("pg_database")
        made = SERVER_FACTORIES[request.param](tmp_path, url)
        close = getattr(made.catalog(), "close", None)
        if close is not None:  # before the database is dropped
            request.addfinalizer(close)
        return made
    return FACTORIES[request.param](tmp_path)


@pytest.fixture
def catalog(backend: Backend) -> ContextCatalog:
    found = backend.catalog()
    found.open(create=True)
    return found


def test_the_catalog_is_one_object_per_backend(backend: Backend) -> None:
    assert backend.catalog() is backend.catalog()


def test_open_without_create_finds_no_store_and_writes_nothing(backend: Backend) -> None:
    with pytest.raises(app.NotFoundError):
        backend.catalog().open(create=False)
    backend.catalog().open(create=True)
    backend.catalog().open(create=False)  # now there is one


def test_create_list_exists_drop(catalog: ContextCatalog) -> None:
    assert catalog.names() == [] and not catalog.exists("a") and not catalog.present("a")
    with catalog.writer_lock.hold():
        catalog.create("a")
        catalog.create("a")  # nothing when present
        catalog.create("b")
    assert catalog.names() == ["a", "b"]
    assert catalog.exists("a") and catalog.present("a")
    released: list[str] = []

    @contextmanager
    def release() -> Iterator[None]:
        released.append("enter")
        yield
        released.append("exit")

    with catalog.writer_lock.hold():
        catalog.drop("a", release)
    assert released == ["enter", "exit"]
    assert catalog.names() == ["b"] and not catalog.exists("a")
    with catalog.writer_lock.hold(), pytest.raises(app.NotFoundError):
        catalog.drop("a", release)
    catalog.check()
    catalog.check_versions()


def test_staging_folders_are_never_contexts_and_go_away(catalog: ContextCatalog) -> None:
    with catalog.staging("import") as folder:
        assert folder.is_dir()
        (folder / "x").write_bytes(b"x")
        assert catalog.names() == []
    assert not folder.exists()


def test_install_new_and_replace(catalog: ContextCatalog) -> None:
    with catalog.writer_lock.hold():
        catalog.create("src")
    forgotten: list[str] = []
    with catalog.staging("save") as staged, catalog.writer_lock.hold():
        shutil.copytree(catalog.folder("src"), staged, dirs_exist_ok=True)
        with pytest.raises(app.NotFoundError):
            catalog.install("new", staged, replace=True, forget=lambda: forgotten.append("x"))
        catalog.install("new", staged, replace=False, forget=lambda: forgotten.append("x"))
    assert catalog.exists("new") and forgotten == []
    with catalog.staging("save") as staged, catalog.writer_lock.hold():
        shutil.copytree(catalog.folder("src"), staged, dirs_exist_ok=True)
        (staged / "marker-file").write_bytes(b"new content")
        catalog.install("new", staged, replace=True, forget=lambda: forgotten.append("new"))
    assert forgotten == ["new"]
    assert (catalog.folder("new") / "marker-file").read_bytes() == b"new content"
    assert catalog.names() == ["new", "src"]


def test_sweep_removes_leftovers_only(catalog: ContextCatalog) -> None:
    leftover = catalog.contexts_dir / ".import-0123456789abcdef"
    leftover.mkdir()
    with catalog.staging("export") as live:
        catalog.sweep()
        assert live.is_dir()
    assert not leftover.exists()


def test_the_store_lock_is_a_lock() -> None:
    def accepts(lock: Lock) -> Lock:
        return lock

    assert hasattr(accepts(WriterLock(Path("/nonexistent/.lock"))), "hold")


def test_store_reaches_the_catalog_only_through_the_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class Spy:
        """Records each call, then delegates to the embedded catalogue."""

        def __init__(self, inner: LocalContexts) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(self._inner, name)

    class SpyBackend(LocalBackend):
        def catalog(self) -> Any:
            if not hasattr(self, "_spy"):
                self._spy = Spy(super().catalog())
            return self._spy

    backend = SpyBackend(tmp_path / "s")
    monkeypatch.setitem(SCHEMES, "spy", lambda url, files: backend)
    with open_store("spy://x") as store:
        assert isinstance(store, Store)
        store.context("c")
        assert store.contexts() == ["c"]
        store.drop_context("c")
    for name in ("open", "check_versions", "sweep", "present", "create", "names", "drop"):
        assert name in calls, name


def test_drop_release_runs_around_the_removal(tmp_path: Path) -> None:
    """The store closes the context and holds its writer lock inside ``release``."""
    with open_store(tmp_path / "s") as store:
        ctx = store.context("c")
        catalog = store.backend.catalog()
        seen: list[bool] = []
        real_drop = catalog.drop

        def drop(name: str, release: Callable[[], AbstractContextManager[None]]) -> None:
            def wrapped() -> AbstractContextManager[None]:
                @contextmanager
                def inner() -> Iterator[None]:
                    with release():
                        seen.append(ctx.writer_lock.held)
                        yield

                return inner()

            real_drop(name, wrapped)

        catalog.drop = drop  # type: ignore[method-assign]
        store.drop_context("c")
        assert seen == [True] and store.contexts() == []
