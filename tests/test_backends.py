"""The backend seam (``app.backends``): the FileStore and MetaStore contracts, run against
every backend in ``FACTORIES``, plus what only the embedded backend can show (links) and the
registry's scheme switch.

To run the contract against another backend, add a factory to ``FACTORIES`` (a function of
the test's request and a temporary folder returning what has ``files()``/``meta()``: a
``Backend``, or ``ObjectParts`` over a directory URL or a fresh test S3 bucket): every test of
``TestFileStoreContract`` and ``TestMetaStoreContract`` then runs for it too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest
from backend_servers import s3_storage_options

import app
from app.backends.local import LocalBackend, LocalFileStore, LocalMetaStore
from app.backends.local.records import LocalRecords
from app.backends.objects import ObjectParts
from app.backends.protocols import (
    FileDigest,
    FileStore,
    FileWriter,
    MetaStore,
    WorkflowTracker,
)
from app.backends.registry import SCHEMES, backend_for, redact
from app.core.atomic import atomic_file
from app.core.layout import (
    MODEL_FILE_PATTERN,
    MODEL_RECORD_PATTERN,
    MODELS_DIR,
    SET_META,
    shard_name,
)
from app.formats.tracker import TrackerDB


class Parts(Protocol):
    """What the contract tests use of a backend: its per-part file and document stores."""

    def files(self, context: str, part: str) -> FileStore: ...
    def meta(self, context: str, part: str) -> MetaStore: ...


def _objects_dir(request: pytest.FixtureRequest, tmp: Path) -> Parts:
    return ObjectParts(f"file://{tmp / 'objects'}", tmp / "cache")


def _objects_s3(request: pytest.FixtureRequest, tmp: Path) -> Parts:
    url: str = request.getfixturevalue("s3_url")  # a fresh bucket (tests/backend_servers.py)
    return ObjectParts(f"{url}/store", tmp / "cache", s3_storage_options())


FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], Parts]] = {
    "local": lambda request, tmp: LocalBackend(tmp / "store"),
    "objects-dir": _objects_dir,
    "objects-s3": _objects_s3,
}
CONTEXT, PART = "c1", "embeddings"


@pytest.fixture(params=sorted(FACTORIES))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Parts:
    factory = FACTORIES[request.param]
    return factory(request, tmp_path)


@pytest.fixture
def files(backend: Parts) -> FileStore:
    return backend.files(CONTEXT, PART)


@pytest.fixture
def meta(backend: Parts) -> MetaStore:
    return backend.meta(CONTEXT, PART)


def shard(item: str, n: int) -> str:
    return f"{item}/{shard_name(n)}"


def doc(item: str) -> str:
    return f"{item}/{SET_META}"


def writing(data: bytes) -> FileWriter:
    """A writer that creates ``data`` atomically at the path it is given."""

    def write(path: Path) -> FileDigest:
        with atomic_file(path) as fh:
            fh.write(data)
        return FileDigest(hashlib.sha256(data).hexdigest(), len(data))

    return write


def read_all(files: FileStore, key: str) -> bytes:
    fd = files.open(key)
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read()
    finally:
        os.close(fd)


class Boom(Exception):
    pass


class TestFileStoreContract:
    def test_put_then_read_list_check(self, files: FileStore) -> None:
        stored = files.put(shard("s", 1), writing(b"hello"))
        assert stored.key == shard("s", 1) and stored.size == 5
        assert stored.sha256 == hashlib.sha256(b"hello").hexdigest()
        assert read_all(files, shard("s", 1)) == b"hello"
        assert files.local_path(shard("s", 1)).read_bytes() == b"hello"
        assert files.check(shard("s", 1), 5, stored.sha256) is None
        assert files.list("s") == [shard("s", 1)]

    def test_list_is_sorted_and_per_item(self, files: FileStore) -> None:
        for n in (3, 1, 2):
            files.put(shard("s", n), writing(b"x" * n))
        files.put(shard("t", 9), writing(b"y"))
        assert files.list("s") == [shard("s", 1), shard("s", 2), shard("s", 3)]
        assert files.list("t") == [shard("t", 9)]
        assert files.list("nothing-here") == []

    def test_a_failed_put_leaves_nothing_under_the_key(self, files: FileStore) -> None:
        def failing(path: Path) -> FileDigest:
            with atomic_file(path) as fh:
                fh.write(b"half")
                raise Boom

        with pytest.raises(Boom):
            files.put(shard("s", 1), failing)
        assert files.list("s") == []
        with pytest.raises(app.NotFoundError):
            files.open(shard("s", 1))

    def test_files_are_immutable(self, files: FileStore) -> None:
        files.put(shard("s", 1), writing(b"first"))
        with pytest.raises(app.ConflictError):
            files.put(shard("s", 1), writing(b"second"))
        assert read_all(files, shard("s", 1)) == b"first"

    def test_missing_files(self, files: FileStore) -> None:
        with pytest.raises(app.NotFoundError):
            files.open(shard("s", 1))
        problem = files.check(shard("s", 1), 1, "0" * 64)
        assert problem is not None and "missing" in problem
        assert files.delete(shard("s", 1)) is False

    def test_check_finds_a_wrong_size_or_digest(self, files: FileStore) -> None:
        stored = files.put(shard("s", 1), writing(b"hello"))
        assert "size" in (files.check(shard("s", 1), 6, stored.sha256) or "")
        assert "SHA-256" in (files.check(shard("s", 1), 5, "0" * 64) or "")

    def test_delete_and_retain(self, files: FileStore) -> None:
        for n in (1, 2, 3):
            files.put(shard("s", n), writing(b"z"))
        assert files.delete(shard("s", 2)) is True
        assert files.list("s") == [shard("s", 1), shard("s", 3)]
        files.retain("s", {shard("s", 3)})
        assert files.list("s") == [shard("s", 3)]
        files.retain("s", set())
        assert files.list("s") == []

    @pytest.mark.parametrize("key", ["s", "s/", "../s/shard-000001.npz", "s/notes.txt", "/x"])
    def test_keys_are_item_slash_file(self, files: FileStore, key: str) -> None:
        with pytest.raises(app.InvalidInput):
            files.put(key, writing(b"x"))


class TestMetaStoreContract:
    def test_missing_document(self, meta: MetaStore) -> None:
        assert meta.read(doc("s")) is None
        assert meta.exists(doc("s")) is False
        assert meta.delete(doc("s")) is False
        assert meta.names("s") == []
        assert meta.holders(SET_META) == []

    def test_write_read_replace_delete(self, meta: MetaStore) -> None:
        meta.write(doc("s"), b'{"a": 1}')
        assert meta.exists(doc("s")) and meta.read(doc("s")) == b'{"a": 1}'
        meta.write(doc("s"), b'{"a": 2}')
        assert meta.read(doc("s")) == b'{"a": 2}'
        assert meta.delete(doc("s")) is True
        assert meta.read(doc("s")) is None and not meta.exists(doc("s"))

    def test_listing_is_sorted(self, meta: MetaStore) -> None:
        for item in ("b", "a", "c"):
            meta.write(doc(item), b"{}")
        assert meta.holders(SET_META) == ["a", "b", "c"]
        assert meta.names("a") == [SET_META]
        assert str(meta.where(doc("a"))).endswith(f"a/{SET_META}")

    def test_keys_are_item_slash_document(self, meta: MetaStore) -> None:
        for key in ("s", "../s/metadata.json", "s/other.json"):
            with pytest.raises(app.InvalidInput):
                meta.write(key, b"{}")


# -- what only the embedded backend can show ---------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "store")


def test_local_put_is_atomic_and_leaves_only_a_temp_file_retain_sweeps(
    local: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = local.files(CONTEXT, PART)
    files.put(shard("s", 1), writing(b"one"))
    real_replace = os.replace

    def crash(src: str, dst: str) -> None:  # killed between the write and the rename
        raise Boom

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Boom):
        files.put(shard("s", 2), writing(b"two"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert files.list("s") == [shard("s", 1)]
    folder = files.local_path(shard("s", 1)).parent
    Path(folder, ".shard-000002.npz.abc.tmp").write_bytes(b"partial")  # as a SIGKILL leaves
    files.retain("s", {shard("s", 1)})
    assert sorted(os.listdir(folder)) == [shard_name(1)]


def test_local_meta_write_is_atomic(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = local.meta(CONTEXT, PART)
    meta.write(doc("s"), b"old")

    def crash(src: str, dst: str) -> None:
        raise Boom

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Boom):
        meta.write(doc("s"), b"new")
    monkeypatch.undo()
    assert meta.read(doc("s")) == b"old"
    assert os.listdir(meta.where(doc("s")).parent) == [SET_META]


def test_local_stores_never_follow_links(local: LocalBackend, tmp_path: Path) -> None:
    files, meta = local.files(CONTEXT, PART), local.meta(CONTEXT, PART)
    files.put(shard("s", 1), writing(b"real"))
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    os.symlink(outside, files.local_path(shard("s", 2)))
    with pytest.raises(app.IntegrityError, match="symbolic link"):
        files.open(shard("s", 2))
    assert "symbolic link" in (files.check(shard("s", 2), 6, "0" * 64) or "")
    with pytest.raises(app.IntegrityError, match="symbolic link"):
        files.list("s")  # a link anywhere in the item is refused, never written around
    os.symlink(outside, meta.where(doc("s")))
    with pytest.raises(app.IntegrityError, match="symbolic link"):
        meta.read(doc("s"))
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / SET_META).write_bytes(b"{}")
    os.symlink(target, meta.where(doc("t")).parent)  # the item folder itself is a link
    with pytest.raises(app.IntegrityError, match="symbolic link"):
        meta.read(doc("t"))
    assert "t" not in meta.holders(SET_META)


def test_local_stores_live_where_the_layout_says(local: LocalBackend) -> None:
    files, meta = local.files(CONTEXT, PART), local.meta(CONTEXT, PART)
    assert isinstance(files, LocalFileStore) and isinstance(meta, LocalMetaStore)
    part = local.root / "contexts" / CONTEXT / PART
    assert files.local_path(shard("s", 1)) == part / "s" / shard_name(1)
    assert meta.where(doc("s")) == part / "s" / SET_META
    with pytest.raises(app.InvalidInput):
        local.files(CONTEXT, "no-such-part")
    with pytest.raises(app.InvalidInput):
        local.files("../up", PART)


def test_the_records_of_a_local_backend_are_the_embedded_ones(local: LocalBackend) -> None:
    records = local.records(CONTEXT)
    assert isinstance(records, LocalRecords)
    assert records.path == local.root / "contexts" / CONTEXT and records.name == CONTEXT
    staged = LocalBackend.at(CONTEXT, local.root / "elsewhere").records(CONTEXT)
    assert isinstance(staged, LocalRecords) and staged.path == local.root / "elsewhere"


def _as_protocol(tracker: TrackerDB) -> WorkflowTracker:
    """mypy checks that ``TrackerDB`` satisfies ``WorkflowTracker`` structurally."""
    return tracker


def test_the_embedded_tracker_is_a_workflow_tracker(local: LocalBackend) -> None:
    tracker = _as_protocol(local.tracker())
    try:
        assert (
            tracker.list_rows(status=None, workflow_type=None, context=None, limit=10, offset=0)
            == []
        )
        assert tracker.check() == []
    finally:
        tracker.close()


# -- the registry ----------------------------------------------------------------------------


def test_a_directory_is_the_embedded_backend(tmp_path: Path) -> None:
    for root in (tmp_path / "s", str(tmp_path / "s"), "relative/dir"):
        backend = backend_for(root)
        assert isinstance(backend, LocalBackend) and backend.root == Path(root)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_postgresql_without_files_is_a_clear_error_without_the_password(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CTXSTORE_FILES", raising=False)
    with pytest.raises(app.InvalidInput, match="files URL") as caught:
        backend_for(f"{scheme}://alice:s3cret@db-host:5432/ctx")
    assert caught.value.argument == "files"
    assert "s3cret" not in str(caught.value) and "alice:***@db-host" in str(caught.value)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_postgresql_with_files_is_the_postgres_backend(
    scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.backends.postgres.backend import PostgresBackend

    monkeypatch.setenv("CTXSTORE_FILES", str(tmp_path / "files"))
    monkeypatch.delenv("CTXSTORE_WORK", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = backend_for(f"{scheme}://alice:s3cret@db-host:5432/ctx")  # connects to nothing yet
    assert isinstance(made, PostgresBackend)
    assert made.files_url == str(tmp_path / "files")
    assert made.work.is_relative_to(tmp_path / "cache" / "ctxstore" / "work")
    assert "s3cret" not in str(made.work) and "s3cret" not in repr(made)


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(app.InvalidInput, match="no backend serves") as caught:
        backend_for("s3://bucket/prefix")
    assert caught.value.argument == "root"


def test_a_scheme_is_one_registration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = LocalBackend(tmp_path)
    monkeypatch.setitem(SCHEMES, "postgresql", lambda url, files: made)
    assert backend_for("postgresql://db/ctx") is made


def test_redact() -> None:
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact("postgresql://h/db") == "postgresql://h/db"


def test_a_file_store_never_touches_the_parts_documents(local: LocalBackend) -> None:
    """A model record ``v0001.json`` matches the model file pattern too: a store told the
    part's document names never lists, removes, reads or writes one."""
    part = local.root / "contexts" / CONTEXT / MODELS_DIR
    files = LocalFileStore(part, MODEL_FILE_PATTERN, "model", documents=MODEL_RECORD_PATTERN)
    meta = local.meta(CONTEXT, MODELS_DIR)
    files.put("m/v0001.pth", writing(b"weights"))
    meta.write("m/v0001.json", b"record")
    assert files.list("m") == ["m/v0001.pth"]
    for call in (files.local_path, files.open, files.delete):
        with pytest.raises(app.InvalidInput, match="document"):
            call("m/v0001.json")
    with pytest.raises(app.InvalidInput, match="document"):
        files.put("m/v0002.json", writing(b"x"))
    files.retain("m", set())
    assert meta.read("m/v0001.json") == b"record"
    assert files.list("m") == []
