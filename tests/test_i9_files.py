"""Issue 9, items 3, 8, 13 (files): SHA-256 checked on the first open of each file identity
(``mmap=True`` too), export refuses damaged files, folders of the wrong type are damage,
reads never write."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import app

REPO = Path(__file__).resolve().parent.parent
SHARD1 = re.escape("shard-000001.npz")
RACY = 0.1  # seconds after which a new file's checked identity is remembered


def rows(n: int, dim: int = 8, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def names(n: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def shard(ctx: app.Context, name: str, i: int = 0) -> Path:
    return sorted((ctx.path / "embeddings" / name).glob("shard-*.npz"))[i]


def flip_vector_byte(path: Path, keep_times: bool = False) -> None:
    """Flip one bit inside the vectors' data (not the zip or npy headers) in place."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    pos = len(data) // 2
    data[pos] ^= 0x10
    with open(path, "r+b") as fh:  # in place: same inode
        fh.write(bytes(data))
    if keep_times:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def tree_state(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file below root: (mtime_ns, size, sha256); and every name (dirs too)."""
    out: dict[str, tuple[int, int, str]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[rel] = (st.st_mtime_ns, st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[rel] = (0, 0, "dir")
    return out


# ------------------------------------------------------------ item 3: mmap loads ----


@pytest.mark.parametrize("mmap", [True, False])
def test_load_refuses_a_damaged_shard_on_first_open(ctx: app.Context, mmap: bool) -> None:
    vectors = rows(500, 16)
    ctx.embeddings.save("e", names(500), vectors)
    flip_vector_byte(shard(ctx, "e"))
    from app.formats import filecheck

    filecheck.VERIFIED.clear()
    with pytest.raises(app.IntegrityError, match=SHARD1):
        ctx.embeddings.load("e", mmap=mmap)
    with pytest.raises(app.IntegrityError, match=SHARD1):
        ctx.embeddings.search("e", vectors[0], k=3)
    if mmap:  # verify=False is the explicit way to skip the check: the flipped value is read
        es = ctx.embeddings.load("e", mmap=True, verify=False)
        assert not np.array_equal(np.asarray(es.vectors), vectors)
    else:  # reading the whole file still checks the zip CRC-32 of each member
        with pytest.raises(app.IntegrityError, match="CRC"):
            ctx.embeddings.load("e", mmap=False, verify=False)
    assert any("shard-000001.npz" in p for p in ctx.verify().problems)


def test_load_in_a_fresh_process_refuses_a_damaged_shard(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        s.context("c").embeddings.save("e", names(300), rows(300, 8))
        path = shard(s.context("c"), "e")
    flip_vector_byte(path)
    code = (
        "import app, sys\n"
        "s = app.open_store(sys.argv[1])\n"
        "try:\n"
        "    s.context('c').embeddings.load('e')\n"
        "except app.IntegrityError as exc:\n"
        "    print('refused', exc)\n"
        "else:\n"
        "    print('loaded')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(store_root)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert out.startswith("refused") and "shard-000001.npz" in out


def test_damage_after_the_first_check_is_found(ctx: app.Context) -> None:
    vectors = rows(400, 8)
    ctx.embeddings.save("e", names(400), vectors)
    time.sleep(RACY)  # old enough for its identity to be remembered
    assert np.array_equal(ctx.embeddings.load("e").vectors, vectors)  # first check: ok
    flip_vector_byte(shard(ctx, "e"), keep_times=True)  # in place, mtime restored
    report = ctx.verify()  # verify always re-hashes
    assert not report.ok and any("shard-000001.npz" in p for p in report.problems)
    # the file's identity (ctime) changed, so the next open checks it again
    with pytest.raises(app.IntegrityError, match=SHARD1):
        ctx.embeddings.load("e")


def test_repeat_opens_do_not_hash_again(ctx: app.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx.embeddings.save("e", names(200), rows(200, 8))
    from app.formats import filecheck

    filecheck.VERIFIED.clear()
    calls: list[int] = []
    real = filecheck.sha256_fd

    def counting(fd: int) -> str:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(filecheck, "sha256_fd", counting)
    ctx.embeddings.load("e")
    ctx.embeddings.load("e")
    assert len(calls) == 2  # "racily clean": a file as young as its timestamps' tick
    calls.clear()
    time.sleep(RACY)
    for _ in range(5):
        ctx.embeddings.load("e")
        ctx.embeddings.load("e", mmap=False)
    ctx.embeddings.search("e", np.ones(8), k=2)
    assert len(calls) == 1  # one SHA-256 per file identity per process
    ctx.embeddings.load("e", verify=False)
    filecheck.VERIFIED.clear()
    ctx.embeddings.load("e")
    assert len(calls) == 2


def test_verified_cache_is_bounded_and_thread_safe() -> None:
    from app.formats import filecheck

    cache = filecheck.VerifiedFiles(max_entries=8)
    for i in range(100):
        cache.remember((1, i, 2, 3, 4), "x")
    assert len(cache) == 8 and cache.known((1, 99, 2, 3, 4), "x")
    assert not cache.known((1, 0, 2, 3, 4), "x") and not cache.known((1, 99, 2, 3, 4), "y")


# ------------------------------------------------- item 8: export refuses damage ----


def test_export_refuses_a_damaged_shard(store: app.Store, tmp_path: Path) -> None:
    ctx = store.context("c")
    ctx.append("items", [{"id": "a"}])
    ctx.embeddings.save("e", names(100), rows(100))
    flip_vector_byte(shard(ctx, "e"))
    dest = tmp_path / "x.tar.gz"
    with pytest.raises(app.IntegrityError, match=SHARD1):
        store.export_context("c", dest)
    assert not dest.exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".x.tar.gz*"))


@pytest.mark.parametrize("kind", ["pth", "joblib"])
def test_export_refuses_a_damaged_model(store: app.Store, tmp_path: Path, kind: str) -> None:
    ctx = store.context("c")
    model: Any = {"w": torch.arange(4000, dtype=torch.float32)} if kind == "pth" else {"k": 1}
    ctx.models.save("m", model)
    path = ctx.path / "models" / "m" / f"v0001.{kind}"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    dest = tmp_path / "x.tar.gz"
    with pytest.raises(app.IntegrityError, match=re.escape(f"v0001.{kind}")):
        store.export_context("c", dest)
    assert not dest.exists()


@pytest.mark.parametrize("what", ["shard", "model"])
def test_export_refuses_a_missing_recorded_file(
    store: app.Store, tmp_path: Path, what: str
) -> None:
    ctx = store.context("c")
    ctx.embeddings.save("e", names(10), rows(10))
    ctx.models.save("m", {"k": 1})
    path = shard(ctx, "e") if what == "shard" else ctx.path / "models" / "m" / "v0001.joblib"
    path.unlink()
    with pytest.raises(app.IntegrityError, match=re.escape(path.name)):
        store.export_context("c", tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_every_archive_export_writes_imports(store: app.Store, tmp_path: Path) -> None:
    ctx = store.context("c")
    ctx.append("items", [{"id": "a"}])
    ctx.embeddings.save("e", names(50), rows(50))
    ctx.embeddings.save("e", names(5, "b"), rows(5, seed=2), mode="append")
    ctx.models.save("m", {"w": torch.ones(10)})
    store.export_context("c", tmp_path / "ok.tar.gz")
    store.import_context(tmp_path / "ok.tar.gz", name="back")
    assert store.context("back").embeddings.load("e").ids == names(50) + names(5, "b")


# ----------------------------------------- item 13: folders and files of the wrong type ----


def _replace_by_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_bytes(b"not a folder")


def test_embedding_set_folder_replaced_by_a_file(ctx: app.Context) -> None:
    ctx.embeddings.save("e", names(10), rows(10))
    folder = ctx.path / "embeddings" / "e"
    _replace_by_file(folder)
    report = ctx.verify()
    assert not report.ok and any(str(folder) in p for p in report.problems)
    with pytest.raises(app.IntegrityError, match=re.escape(str(folder))):
        ctx.embeddings.save("e", names(3), rows(3))
    with pytest.raises(app.IntegrityError, match=re.escape(str(folder))):
        ctx.embeddings.save("e", names(3), rows(3), mode="append")
    with pytest.raises(app.IntegrityError, match=re.escape(str(folder))):
        ctx.embeddings.load("e")
    with pytest.raises(app.IntegrityError, match=re.escape(str(folder))):
        ctx.embeddings.delete("e")
    assert folder.read_bytes() == b"not a folder"  # nothing was written over it


def test_embeddings_folder_replaced_by_a_file(ctx: app.Context) -> None:
    ctx.embeddings.save("e", names(10), rows(10))
    folder = ctx.path / "embeddings"
    _replace_by_file(folder)
    report = ctx.verify()
    assert not report.ok and any(str(folder) in p for p in report.problems)
    for call in (
        lambda: ctx.embeddings.save("x", names(3), rows(3)),
        lambda: ctx.embeddings.load("e"),
        lambda: ctx.embeddings.list(),
    ):
        with pytest.raises(app.IntegrityError, match=re.escape(str(folder))):
            call()


def test_shard_and_metadata_replaced_by_folders(ctx: app.Context) -> None:
    ctx.embeddings.save("e", names(10), rows(10))
    ctx.embeddings.save("f", names(10), rows(10))
    path = shard(ctx, "e")
    path.unlink()
    path.mkdir()
    meta = ctx.path / "embeddings" / "f" / "metadata.json"
    meta.unlink()
    meta.mkdir()
    problems = ctx.verify().problems
    assert any(str(path) in p for p in problems) and any(str(meta) in p for p in problems)
    with pytest.raises(app.IntegrityError, match=re.escape(str(path))):
        ctx.embeddings.load("e")
    with pytest.raises(app.IntegrityError, match=re.escape(str(meta))):
        ctx.embeddings.load("f")
    with pytest.raises(app.IntegrityError, match=re.escape(str(meta))):
        ctx.embeddings.save("f", names(2), rows(2))


def test_model_folder_and_files_of_the_wrong_type(ctx: app.Context) -> None:
    ctx.models.save("m", {"k": 1})
    ctx.models.save("n", {"k": 2})
    folder = ctx.path / "models" / "m"
    _replace_by_file(folder)
    artefact = ctx.path / "models" / "n" / "v0001.joblib"
    artefact.unlink()
    artefact.mkdir()
    problems = ctx.verify().problems
    assert any(str(folder) in p for p in problems) and any(str(artefact) in p for p in problems)
    with pytest.raises(app.IntegrityError, match=re.escape(str(folder))):
        ctx.models.save("m", {"k": 3})
    with pytest.raises(app.IntegrityError, match=re.escape(str(folder))):
        ctx.models.load("m")
    with pytest.raises(app.IntegrityError, match=re.escape(str(artefact))):
        ctx.models.load("n")


# ------------------------------------------------------- item 13: reads never write ----


def test_multi_shard_mmap_load_writes_nothing(store: app.Store) -> None:
    ctx = store.context("c")
    parts = [rows(100, 8, seed=i) for i in range(3)]
    ctx.embeddings.save("e", names(100, "a"), parts[0])
    ctx.embeddings.save("e", names(100, "b"), parts[1], mode="append")
    ctx.embeddings.save("e", names(100, "c"), parts[2], mode="append")
    before = tree_state(ctx.path / "embeddings")
    es = ctx.embeddings.load("e", mmap=True)
    assert np.array_equal(es.vectors, np.concatenate(parts))
    # mapped from a temporary file outside the store, not held in memory (SPEC 5)
    assert isinstance(es.vectors, np.memmap) and not es.vectors.flags.writeable
    assert es.ids == names(100, "a") + names(100, "b") + names(100, "c")
    ctx.embeddings.search("e", parts[1][5], k=1)
    ctx.embeddings.load("e", mmap=False)
    ctx.embeddings.list()
    store.stats()
    assert ctx.verify().ok
    assert tree_state(ctx.path / "embeddings") == before
    assert len(ctx.embeddings.info("e").shards) == 3
    info = ctx.embeddings.compact("e")  # compaction is explicit (a write)
    assert len(info.shards) == 1
    es = ctx.embeddings.load("e", mmap=True)
    assert isinstance(es.vectors, np.memmap) and np.array_equal(es.vectors, np.concatenate(parts))


def test_model_load_and_verify_write_nothing(store: app.Store) -> None:
    ctx = store.context("c")
    ctx.models.save("p", {"w": torch.arange(100, dtype=torch.float32)})
    ctx.models.save("j", {"k": list(range(10))})
    ctx.models.delete("j", version=1)
    ctx.models.save("j", {"k": 2})
    before = tree_state(store.root)
    for _ in range(2):
        ctx.models.load("p")
        ctx.models.load("j")
        ctx.models.list()
        ctx.models.versions("j")
        assert ctx.models.verify() == []
        ctx.models.is_trusted(ctx.models.info("j").sha256)
    after = tree_state(store.root)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not {k for k in changed if "models" in k or "trust" in k}, changed


def test_export_archive_never_holds_links(store: app.Store, tmp_path: Path) -> None:
    ctx = store.context("c")
    ctx.embeddings.save("e", names(10), rows(10))
    store.export_context("c", tmp_path / "a.tar.gz")
    with tarfile.open(tmp_path / "a.tar.gz") as tf:
        assert all(m.isreg() or m.isdir() for m in tf.getmembers())
