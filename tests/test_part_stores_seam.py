"""Models and embedding sets reach their files and documents only through the backend seam
(``app.backends.protocols.FileStore`` / ``MetaStore``): a backend that records every call sees
the model files put before their ``vNNNN.json`` record is written, loads and checks reading
through the stores, and verify / export's ``recorded_files`` listing and checking through
them. PERSISTENCE_LAYER_STRATEGY.md, "The backend seam"."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import app
from app.backends.local import LocalBackend, LocalFileStore, LocalMetaStore
from app.backends.protocols import FileStore, FileWriter, MetaStore, StoredFile
from app.core.errors import IntegrityError
from app.core.layout import EMBEDDINGS_DIR, MODELS_DIR
from app.managers.embeddings import recorded_files as set_files
from app.managers.models import recorded_files as model_files
from app.managers.store import open_store

Calls = list[tuple[str, str, str]]  # (part, call, key)


class RecordingFiles:
    """A ``FileStore`` that notes every call and delegates to the embedded one."""

    def __init__(self, inner: LocalFileStore, part: str, calls: Calls) -> None:
        self.inner, self.part, self.calls = inner, part, calls

    def _note(self, call: str, key: str) -> None:
        self.calls.append((self.part, f"files.{call}", key))

    def put(self, key: str, write: FileWriter) -> StoredFile:
        self._note("put", key)
        return self.inner.put(key, write)

    def local_path(self, key: str) -> Path:
        self._note("local_path", key)
        return self.inner.local_path(key)

    def open(self, key: str) -> int:
        self._note("open", key)
        return self.inner.open(key)

    def check(self, key: str, size: int, sha256: str) -> str | None:
        self._note("check", key)
        return self.inner.check(key, size, sha256)

    def list(self, item: str) -> list[str]:
        self._note("list", item)
        return self.inner.list(item)

    def delete(self, key: str) -> bool:
        self._note("delete", key)
        return self.inner.delete(key)

    def retain(self, item: str, keep: set[str]) -> None:
        self._note("retain", item)
        self.inner.retain(item, keep)


class RecordingMeta:
    """A ``MetaStore`` that notes every call and delegates to the embedded one."""

    def __init__(self, inner: LocalMetaStore, part: str, calls: Calls) -> None:
        self.inner, self.part, self.calls = inner, part, calls

    def _note(self, call: str, key: str) -> None:
        self.calls.append((self.part, f"meta.{call}", key))

    def where(self, key: str) -> Path:
        return self.inner.where(key)

    def exists(self, key: str) -> bool:
        self._note("exists", key)
        return self.inner.exists(key)

    def read(self, key: str) -> bytes | None:
        self._note("read", key)
        return self.inner.read(key)

    def write(self, key: str, data: bytes) -> None:
        self._note("write", key)
        self.inner.write(key, data)

    def delete(self, key: str) -> bool:
        self._note("delete", key)
        return self.inner.delete(key)

    def names(self, item: str) -> list[str]:
        self._note("names", item)
        return self.inner.names(item)

    def holders(self, name: str) -> list[str]:
        self._note("holders", name)
        return self.inner.holders(name)

    def items(self) -> list[str]:
        self._note("items", "")
        return self.inner.items()


class RecordingBackend(LocalBackend):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: Calls = []

    def files(self, context: str, part: str) -> Any:
        return RecordingFiles(super().files(context, part), part, self.calls)

    def meta(self, context: str, part: str) -> Any:
        return RecordingMeta(super().meta(context, part), part, self.calls)


@pytest.fixture
def spied(tmp_path: Path) -> Iterator[tuple[app.Context, RecordingBackend]]:
    root = tmp_path / "s"
    open_store(root).close()
    backend = RecordingBackend(root)
    store = app.Store(backend)
    try:
        yield store.context("c"), backend
    finally:
        store.close()


def _state() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(3)}


def _of(calls: Calls, part: str) -> list[tuple[str, str]]:
    return [(call, key) for p, call, key in calls if p == part]


def test_the_recording_stores_meet_the_protocols(tmp_path: Path) -> None:
    backend = RecordingBackend(tmp_path / "s")
    assert isinstance(backend.files("c", MODELS_DIR), FileStore)
    assert isinstance(backend.meta("c", MODELS_DIR), MetaStore)


@pytest.mark.parametrize("format", ["pth", "safetensors", "joblib"])
def test_a_model_save_puts_its_file_before_writing_its_record(
    spied: tuple[app.Context, RecordingBackend], format: str
) -> None:
    ctx, backend = spied
    model: Any = _state() if format != "joblib" else {"k": [1, 2, 3]}
    info = ctx.models.save("m", model, format=format)
    calls = _of(backend.calls, MODELS_DIR)
    put = calls.index(("files.put", f"m/{info.file}"))
    commit = calls.index(("meta.write", "m/v0001.json"))
    assert put < commit
    assert [c for c in calls if c[0] in ("files.put", "meta.write")] == [
        calls[put],
        calls[commit],
    ]
    assert _of(backend.calls, EMBEDDINGS_DIR) == []


def test_a_model_load_reads_its_record_and_file_through_the_stores(
    spied: tuple[app.Context, RecordingBackend],
) -> None:
    ctx, backend = spied
    ctx.models.save("m", _state())
    backend.calls.clear()
    loaded = ctx.models.load("m")
    assert torch.equal(loaded["w"], _state()["w"])
    calls = _of(backend.calls, MODELS_DIR)
    assert ("meta.read", "m/v0001.json") in calls
    assert ("files.local_path", "m/v0001.pth") in calls


def test_model_versions_delete_and_verify_go_through_the_stores(
    spied: tuple[app.Context, RecordingBackend],
) -> None:
    ctx, backend = spied
    for _ in range(3):
        ctx.models.save("m", _state())
    backend.calls.clear()
    assert ctx.models.verify() == []
    calls = _of(backend.calls, MODELS_DIR)
    assert {key for call, key in calls if call == "files.check"} == {
        f"m/v000{n}.pth" for n in (1, 2, 3)
    }
    backend.calls.clear()
    ctx.models.delete("m", version=2)
    calls = _of(backend.calls, MODELS_DIR)
    assert ("meta.delete", "m/v0002.json") in calls
    assert ("files.delete", "m/v0002.pth") in calls
    assert calls.index(("meta.delete", "m/v0002.json")) < calls.index(
        ("files.delete", "m/v0002.pth")
    )
    assert ctx.models.save("m", _state()).version == 4  # never given out twice
    ctx.models.delete("m")
    assert ctx.models.names() == []
    assert not (ctx.path / MODELS_DIR / "m").exists()
    assert ctx.models.save("m", _state()).version == 1


def test_a_failed_put_leaves_no_version(
    spied: tuple[app.Context, RecordingBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, backend = spied
    ctx.models.save("m", _state())

    def broken(self: LocalFileStore, key: str, write: FileWriter) -> StoredFile:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalFileStore, "put", broken)
    with pytest.raises(OSError):
        ctx.models.save("m", _state())
    monkeypatch.undo()
    assert [v.version for v in ctx.models.versions("m")] == [1]
    assert not any(call == "meta.write" and key == "m/v0002.json" for _, call, key in backend.calls)


def test_a_damaged_model_is_named_by_verify(spied: tuple[app.Context, RecordingBackend]) -> None:
    ctx, _ = spied
    info = ctx.models.save("m", _state())
    path = ctx.path / MODELS_DIR / "m" / info.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    problems = ctx.models.verify()
    assert len(problems) == 1 and str(path) in problems[0] and "SHA-256" in problems[0]
    with pytest.raises(IntegrityError):
        ctx.models.load("m")


def test_embedding_verify_reads_documents_and_checks_shards_through_the_stores(
    spied: tuple[app.Context, RecordingBackend],
) -> None:
    ctx, backend = spied
    ctx.embeddings.save("e", ["a", "b"], np.ones((2, 3), dtype=np.float32))
    ctx.embeddings.save("e", ["c"], np.ones((1, 3), dtype=np.float32), mode="append")
    backend.calls.clear()
    assert ctx.embeddings.verify() == []
    calls = _of(backend.calls, EMBEDDINGS_DIR)
    assert ("meta.read", "e/metadata.json") in calls
    assert [key for call, key in calls if call == "files.check"] == [
        "e/shard-000001.npz",
        "e/shard-000002.npz",
    ]


def test_shards_without_metadata_are_found_through_the_file_store(
    spied: tuple[app.Context, RecordingBackend],
) -> None:
    ctx, backend = spied
    ctx.embeddings.save("e", ["a"], np.ones((1, 3), dtype=np.float32))
    meta = ctx.path / EMBEDDINGS_DIR / "e" / "metadata.json"
    meta.unlink()
    backend.calls.clear()
    assert ctx.embeddings.verify() == [f"{meta}: missing (shards without metadata)"]
    assert (EMBEDDINGS_DIR, "files.list", "e") in backend.calls


def test_recorded_files_match_what_the_stores_hold(
    spied: tuple[app.Context, RecordingBackend],
) -> None:
    ctx, _ = spied
    m1 = ctx.models.save("m", _state())
    m2 = ctx.models.save("m", {"k": 1}, format="joblib")
    e = ctx.embeddings.save("e", ["a"], np.ones((1, 3), dtype=np.float32))
    assert model_files(ctx.path / MODELS_DIR) == {
        f"m/{i.file}": (i.size_bytes, i.sha256) for i in (m1, m2)
    }
    shard = e.shards[0]
    assert set_files(ctx.path / EMBEDDINGS_DIR) == {
        f"e/{shard.file}": (shard.size_bytes, shard.sha256)
    }
    (ctx.path / MODELS_DIR / "m" / "v0001.json").write_bytes(b"{}")
    with pytest.raises(IntegrityError, match=r"v0001\.json"):
        model_files(ctx.path / MODELS_DIR)
