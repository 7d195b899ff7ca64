"""Issue 9 item 13 (SPEC 22): reads never write, and a store this process cannot write opens
for reading. The read-only store is a real read-only bind mount of a store folder (tests run as
root, so permission bits would not stop writes); writes raise ``StorageError`` with EROFS, and a
collection whose index is behind its log raises EROFS naming the fix, never a stale answer."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import app


@contextlib.contextmanager
def read_only_view(src: Path, mnt: Path) -> Iterator[Path]:
    mnt.mkdir()
    bind = subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"a read-only bind mount needs mount privileges: {bind.stderr!r}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True)
        probe = mnt / ".probe"
        with pytest.raises(OSError) as denied:
            probe.touch()
        assert denied.value.errno == errno.EROFS
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file below ``root`` (SQLite's -wal/-shm aside) with its size and content hash."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            if f.endswith(("-wal", "-shm")):
                continue
            out[str(p.relative_to(root))] = (
                p.stat().st_size,
                hashlib.sha256(p.read_bytes()).hexdigest(),
            )
    for dirpath, dirs, _files in os.walk(root):
        for d in dirs:
            out[str(Path(dirpath, d).relative_to(root)) + "/"] = (0, "")
    return out


def _build(root: Path) -> None:
    with app.open_store(root) as store:
        ctx = store.context("x")
        ctx.define_collection("t", indexes=["n"])
        ctx.append("t", [{"id": f"r{i}", "n": i} for i in range(20)])
        ctx.delete("t", ["r0"])
        ctx.embeddings.save("e", ["a", "b"], [[1.0, 0.0], [0.0, 1.0]])
        wf = store.workflows.submit(
            "append", context="x", items=[{"id": "w1"}], params={"collection": "w"}
        )
        store.workflows.process(wf.workflow_id)


def _reads(store: app.Store) -> dict[str, Any]:
    ctx = store.context("x", create=False)
    return {
        "contexts": store.contexts(),
        "count": ctx.count("t"),
        "where": ctx.count("t", {"n": {"$gte": 10}}),
        "get": ctx.get("t", "r5"),
        "query": ctx.query("t", {"n": {"$lt": 3}}, order_by="n"),
        "iter": len(list(ctx.iter("t"))),
        "history": len(ctx.history("t", "r0")),
        "empty": ctx.count("nothing"),
        "emb": ctx.embeddings.load("e", mmap=False).ids,
        "collections": ctx.collections(),
        "workflows": [(w.workflow_id, w.status) for w in store.workflows.list()],
        "metrics": store.workflows.metrics()["by_status"],
    }


def test_reads_never_write_to_a_writable_store(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _build(root)
    before = _snapshot(root)
    with app.open_store(root, create=False) as store:
        expected = _reads(store)
        store.stats()
        with pytest.raises(app.NotFoundError):
            store.context("nope", create=False)
    with app.open_store(root) as store:  # a second process-like open, all reads again
        assert _reads(store) == expected
    assert _snapshot(root) == before
    # a store folder without a contexts folder: opening it without create writes nothing
    shutil.rmtree(root / "contexts")
    before = _snapshot(root)
    with app.open_store(root, create=False) as store:
        assert store.contexts() == []
    assert _snapshot(root) == before


def test_read_only_store_opens_for_reading(tmp_path: Path) -> None:
    src = tmp_path / "s"
    _build(src)
    with app.open_store(src) as store:
        expected = _reads(store)
    before = _snapshot(src)
    with read_only_view(src, tmp_path / "ro") as ro:
        for create in (False, True):
            with app.open_store(ro, create=create) as store:
                assert _reads(store) == expected
                store.stats()
                writes: list[Callable[[], object]] = [
                    lambda: store.context("x").append("t", [{"id": "new"}]),
                    lambda: store.context("x").delete("t", ["r1"]),
                    lambda: store.context("x").define_collection("v"),
                    lambda: store.context("x").compact("t"),
                    lambda: store.context("y"),
                    lambda: store.drop_context("x"),
                    lambda: store.save_context("x", {"collections": {}}),
                    lambda: store.context("x").embeddings.save("f", ["a"], [[1.0]]),
                ]
                for write in writes:
                    with pytest.raises(app.StorageError) as err:
                        write()
                    assert not isinstance(err.value, app.IntegrityError), err.value
                    assert err.value.errno == errno.EROFS, err.value
                assert _reads(store) == expected
                report = store.context("x").verify()  # no writer can exist: no lock needed
                assert report.ok, report.problems
    assert _snapshot(src) == before


def test_read_only_store_refuses_a_stale_index(tmp_path: Path) -> None:
    """The index is behind the log (as after a crash between the log's fsync and the index
    commit): on a read-only store that is EROFS naming the fix, never the older answer."""
    src = tmp_path / "s"
    _build(src)
    index = src / "contexts" / "x" / "x.sqlite"
    old_index = tmp_path / "old.sqlite"
    shutil.copyfile(index, old_index)
    with app.open_store(src) as store:
        store.context("x").append("t", [{"id": "late", "n": 99}])
    shutil.copyfile(old_index, index)
    with read_only_view(src, tmp_path / "ro") as ro, app.open_store(ro) as store:
        for read in (
            lambda c: c.count("t"),
            lambda c: c.get("t", "r5"),
            lambda c: c.query("t"),
            lambda c: list(c.iter("t")),
        ):
            with pytest.raises(app.StorageError, match=re.escape("where it can be written")) as err:
                read(store.context("x", create=False))
            assert err.value.errno == errno.EROFS
            assert not isinstance(err.value, app.IntegrityError)
    with app.open_store(src) as store:  # writable again: caught up, nothing lost
        assert store.context("x").count("t") == 20
        assert store.context("x").get("t", "late")["n"] == 99


def test_read_only_store_reads_what_a_live_writer_left_in_the_wal(tmp_path: Path) -> None:
    """A writer elsewhere still has the index open (its latest rows live in the -wal file):
    the read-only open reads them too, instead of the older pages of the main file."""
    src = tmp_path / "s"
    _build(src)
    with app.open_store(src) as writer:
        ctx = writer.context("x")
        for i in range(5):
            ctx.append("t", [{"id": f"w{i}", "n": 100 + i}])
        wal = src / "contexts" / "x" / "x.sqlite-wal"
        assert wal.exists() and wal.stat().st_size > 0
        with read_only_view(src, tmp_path / "ro") as ro, app.open_store(ro) as store:
            assert store.context("x").count("t") == 24
            assert store.context("x").get("t", "w4")["n"] == 104
