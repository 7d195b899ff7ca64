"""The store is wired to its backend (``app.backends``): ``open_store`` picks the backend by
the root, and contexts, their parts and the workflows use that backend's stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from service_support import free_port

import app
from app.backends.local import LocalBackend, LocalFileStore, LocalMetaStore
from app.backends.protocols import Backend
from app.backends.registry import SCHEMES
from app.core.layout import ANN_DIR, EMBEDDINGS_DIR
from app.formats.tracker import TrackerDB
from app.managers.store import open_store


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url_without_files_is_a_clear_error(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CTXSTORE_FILES", raising=False)
    with pytest.raises(app.InvalidInput, match="CTXSTORE_FILES") as caught:
        open_store(f"{scheme}://alice:s3cret@db-host/ctx")
    assert caught.value.argument == "files"
    assert "s3cret" not in str(caught.value) and "alice:***@db-host" in str(caught.value)


def test_ctxstore_root_may_hold_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXSTORE_ROOT", "postgresql://bob:pw@h/db")
    monkeypatch.delenv("CTXSTORE_FILES", raising=False)
    with pytest.raises(app.InvalidInput) as caught:
        open_store()
    assert caught.value.argument == "files" and "pw@" not in str(caught.value)


def test_files_with_a_directory_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(app.InvalidInput, match="embedded store") as caught:
        open_store(tmp_path / "s", files=str(tmp_path / "f"))
    assert caught.value.argument == "files"
    assert not (tmp_path / "s").exists()


def test_an_unreachable_server_is_a_storage_error_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTXSTORE_WORK", str(tmp_path / "work"))
    port = free_port()  # nothing listens there
    with pytest.raises(app.StorageError) as caught:
        open_store(
            f"postgresql://alice:s3cret@127.0.0.1:{port}/ctx?connect_timeout=2",
            files=str(tmp_path / "files"),
        )
    assert "s3cret" not in str(caught.value) and "alice:***@127.0.0.1" in str(caught.value)


def test_a_registered_backend_is_reached_through_open_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registered scheme's backend becomes the store's: the store's catalogue of contexts,
    records, parts and tracker all go through it (the fake server is a ``LocalBackend`` on a
    temporary folder, reached through the protocols only)."""
    seen: list[str] = []
    fake = LocalBackend(tmp_path / "server")

    def opener(url: str, files: str | None) -> Backend:
        seen.append(url)
        return fake

    monkeypatch.setitem(SCHEMES, "fakedb", opener)
    with open_store("fakedb://u:secret@h/db") as store:
        assert seen == ["fakedb://u:secret@h/db"]
        assert store.backend is fake and store.root == fake.root
        assert store.contexts() == []
        ctx = store.context("c")
        ctx.define_collection("items")
        ctx.append("items", [{"id": "a", "v": 1}])
        assert ctx.backend is fake
        assert store.contexts() == ["c"] and store.exists("c")
        store.drop_context("c")
        assert store.contexts() == []


def test_a_registered_backend_without_a_store_is_not_found_unless_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = LocalBackend(tmp_path / "server")
    monkeypatch.setitem(SCHEMES, "fakedb", lambda url, files: fake)
    with pytest.raises(app.NotFoundError):
        open_store("fakedb://h/db", create=False)
    assert not fake.root.exists()  # create=False writes nothing
    open_store("fakedb://h/db").close()
    open_store("fakedb://h/db", create=False).close()


def test_an_unknown_scheme_never_reaches_a_store(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    monkeypatch.setattr("app.managers.store.Store", built.append)
    with pytest.raises(app.InvalidInput, match="no backend serves") as caught:
        open_store("mysql://alice:s3cret@db-host/ctx")
    assert caught.value.argument == "root" and "s3cret" not in str(caught.value)
    assert built == []


def test_a_directory_store_keeps_its_local_backend(tmp_path: Path) -> None:
    with open_store(tmp_path / "s") as store:
        assert isinstance(store.backend, LocalBackend)
        assert store.backend.root == store.root
        ctx = store.context("c")
        assert ctx.backend is store.backend


def test_parts_and_workflows_use_the_backends_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files_calls: list[tuple[str, str]] = []
    meta_calls: list[tuple[str, str]] = []
    trackers: list[TrackerDB] = []

    class Spy(LocalBackend):
        def files(self, context: str, part: str) -> LocalFileStore:
            files_calls.append((context, part))
            return super().files(context, part)

        def meta(self, context: str, part: str) -> LocalMetaStore:
            meta_calls.append((context, part))
            return super().meta(context, part)

        def tracker(self) -> TrackerDB:
            trackers.append(super().tracker())
            return trackers[-1]

    root = tmp_path / "s"
    open_store(root).close()
    store = app.Store(Spy(root))
    try:
        ctx = store.context("c")
        ctx.embeddings.save("e", ["a", "b"], np.ones((2, 3), dtype=np.float32))
        # the sets' files and documents, and those of their ANN indexes (derived data)
        wanted = [("c", EMBEDDINGS_DIR), ("c", ANN_DIR)]
        assert files_calls == wanted and meta_calls == wanted
        assert ctx.embeddings.info("e").count == 2
        assert store.workflows.list() == []
        assert len(trackers) == 1
    finally:
        store.close()


def test_a_staged_context_lives_in_its_own_folder(tmp_path: Path) -> None:
    with open_store(tmp_path / "s") as store:
        folder = tmp_path / "staged"
        folder.mkdir()
        staged = store.open_staged("c", folder, trusted=True)
        assert isinstance(staged.backend, LocalBackend)
        assert staged.backend.context_folder("c") == folder
        store_files = staged.backend.files("c", EMBEDDINGS_DIR)
        assert isinstance(store_files, LocalFileStore)
        assert store_files.root == folder / EMBEDDINGS_DIR


def test_context_reaches_records_only_through_the_protocol() -> None:
    """``Context`` imports no storage format and no part of the embedded records
    implementation: a new backend's ``Records`` needs no edit of it."""
    import ast

    source = Path(__file__).resolve().parent.parent / "app" / "managers" / "context.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    storage = sorted(
        m for m in imported if m.startswith(("app.formats", "app.backends.local.", "sqlite3"))
    )
    assert storage == [], storage
