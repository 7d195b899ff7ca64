"""Issue 9 item 16 (SPEC 4, 11, 22): compaction, re-indexing and rebuild replace a collection's
index content in one transaction. The concurrent readers scenario is in
tests/reliability/test_rel_swap_readers.py; these are the single-thread edges."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

import app


def _tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def _fill(ctx: app.Context, n: int) -> None:
    ctx.define_collection("t", indexes=["g"])
    ctx.append("t", [{"id": f"r{i}", "g": i % 7, "v": 0} for i in range(n)])
    ctx.append("t", [{"id": f"r{i}", "g": i % 7, "v": 1} for i in range(0, n, 3)])


@pytest.mark.parametrize("swap", ["compact", "rebuild", "both"])
def test_stream_started_before_a_swap_finishes_consistently(ctx: app.Context, swap: str) -> None:
    n = 5000
    _fill(ctx, n)
    expected = {r["id"]: r for r in ctx.iter("t")}
    stream = ctx.iter("t")
    first = [next(stream) for _ in range(10)]
    if swap in ("compact", "both"):
        ctx.append("t", [{"id": f"r{i}", "g": i % 7, "v": 2} for i in range(0, n, 5)])
        ctx.compact("t")
    if swap in ("rebuild", "both"):
        ctx.rebuild_index()
    rest = list(stream)
    seen = first + rest
    assert len(seen) == n and {r["id"]: r for r in seen} == expected  # the snapshot, whole
    assert ctx.count("t") == n and ctx.count("t", {"g": 3}) == len(range(3, n, 7))


def test_rebuild_keeps_the_index_file_and_other_connections(store_root: Path) -> None:
    """The rebuilt content is copied into the live file (one transaction): same inode, so
    connections of other threads and processes stay valid and see the new content."""
    with app.open_store(store_root) as s:
        ctx = s.context("c")
        _fill(ctx, 1000)
        db = ctx.path / "c.sqlite"
        inode = os.stat(db).st_ino
        other = sqlite3.connect(db)
        assert other.execute('SELECT count(*) FROM "c_t"').fetchone()[0] == 1000
        ctx.rebuild_index()
        assert os.stat(db).st_ino == inode
        assert other.execute('SELECT count(*) FROM "c_t"').fetchone()[0] == 1000
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()
        assert ctx.verify().ok


def test_failed_compaction_leaves_live_table_and_no_side_tables(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        ctx = s.context("c")
        _fill(ctx, 300)
        log = ctx.path / "t.jsonl"
        db = ctx.path / "c.sqlite"
        data = bytearray(log.read_bytes())
        at = data.index(b'"v":0', len(data) // 3)
        data[at + 4 : at + 5] = b"5"  # a flipped digit inside a committed batch
        log.write_bytes(bytes(data))
        with pytest.raises(app.IntegrityError):
            ctx.compact("t")
        assert ctx.count("t") == 300  # reads still answer from the untouched table
        assert not {t for t in _tables(db) if t.startswith(("n_", "nb_"))}


def test_reindex_after_a_compaction_died_before_its_swap(store_root: Path) -> None:
    """A compaction killed after renaming the new log but before swapping the index in: the
    next writer re-indexes the new log aside and swaps it in."""
    with app.open_store(store_root) as s:
        ctx = s.context("c")
        _fill(ctx, 400)
        expected = {r["id"]: r for r in ctx.iter("t")}
        with open(ctx.path / "t.new", "wb") as fh:
            ctx.write_compacted_log("t", fh)
        os.replace(ctx.path / "t.new", ctx.path / "t.jsonl")
    with app.open_store(store_root) as s:
        ctx = s.context("c")
        ctx.append("t", [{"id": "late", "g": 0}])
        expected["late"] = {"id": "late", "g": 0}
        assert {r["id"]: r for r in ctx.iter("t")} == expected
        assert ctx.verify().ok
        assert not {t for t in _tables(ctx.path / "c.sqlite") if t.startswith(("n_", "nb_"))}
