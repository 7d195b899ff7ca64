"""A whole collection's ``iter`` (no filter, commit order) reads the records from the batch log
of the embedded backend, each batch checksum verified, as of one committed state of the index:
the same records in the same order as the index holds, whatever was superseded, deleted or
compacted, and damage to the log is an ``IntegrityError``, never skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import app
from app.backends.local.records import collection
from app.core.errors import IntegrityError
from app.formats import batchlog


@pytest.fixture(autouse=True)
def small_batches_read_from_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests' batches are small: read them from the log all the same (by default a log
    of batches under ``LOG_READ_BATCH`` bytes on average is read from the index)."""
    monkeypatch.setattr(collection, "LOG_READ_BATCH", 0)


def _log(root: Path) -> Path:
    return root / "contexts" / "c" / "t.jsonl"


def _from_index(ctx: app.Context) -> list[dict[str, Any]]:
    """The current records as the index holds them (a query reads the index's rows)."""
    return ctx.query("t", {"id": {"$ne": ""}})


def test_plain_appends_read_from_the_log(tmp_path: Path) -> None:
    with app.open_store(tmp_path) as s:
        ctx = s.context("c")
        for b in range(3):
            ctx.append("t", [{"id": f"r{b}-{i}", "v": i, "s": "\u00e9\n"} for i in range(500)])
        got = list(ctx.iter("t"))
        assert len(got) == 1500
        assert got == _from_index(ctx)
        assert got[0] == {"id": "r0-0", "v": 0, "s": "\u00e9\n"}


def test_superseded_deleted_and_compacted_versions_are_not_returned(tmp_path: Path) -> None:
    with app.open_store(tmp_path) as s:
        ctx = s.context("c")
        ctx.append("t", [{"id": f"r{i}", "v": 0} for i in range(50)])
        ctx.append("t", [{"id": f"r{i}", "v": 1} for i in range(0, 50, 3)])
        ctx.delete("t", ["r1", "r4", "absent"])
        ctx.append("t", [{"id": "new", "v": 2}])
        expected = _from_index(ctx)
        assert list(ctx.iter("t")) == expected
        assert {r["id"]: r["v"] for r in expected}["r3"] == 1
        assert "r1" not in {r["id"] for r in expected}
        ctx.compact("t")
        assert list(ctx.iter("t")) == expected == _from_index(ctx)


def test_a_delete_of_absent_ids_leaves_every_put_current(tmp_path: Path) -> None:
    with app.open_store(tmp_path) as s:
        ctx = s.context("c")
        ctx.append("t", [{"id": f"r{i}"} for i in range(10)])
        ctx.delete("t", ["nope", "neither"])
        ctx.append("t", [{"id": f"q{i}"} for i in range(10)])
        assert [r["id"] for r in ctx.iter("t")] == [f"r{i}" for i in range(10)] + [
            f"q{i}" for i in range(10)
        ]


def test_a_flipped_byte_in_the_log_is_an_integrity_error(tmp_path: Path) -> None:
    with app.open_store(tmp_path) as s:
        ctx = s.context("c")
        ctx.append("t", [{"id": f"r{i}", "name": "aaaa"} for i in range(100)])
        ctx.append("t", [{"id": f"q{i}", "name": "bbbb"} for i in range(100)])
    data = _log(tmp_path).read_bytes()
    at = data.rindex(b"bbbb")
    _log(tmp_path).write_bytes(data[:at] + b"bbbc" + data[at + 4 :])
    with app.open_store(tmp_path) as s:
        ctx = s.context("c")
        with pytest.raises(IntegrityError, match="checksum mismatch"):
            list(ctx.iter("t"))


def test_a_large_batch_is_read_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``LAZY_BATCH`` bytes a batch is hashed piece by piece and read again to parse."""
    monkeypatch.setattr(batchlog, "LAZY_BATCH", 4096)
    monkeypatch.setattr(batchlog.MappedEntries, "READ_CHUNK", 1000)
    with app.open_store(tmp_path) as s:
        ctx = s.context("c")
        ctx.append("t", [{"id": f"r{i}", "pad": "x" * (i % 300)} for i in range(400)])
        ctx.append("t", [{"id": f"r{i}", "pad": "y"} for i in range(0, 400, 7)])
        assert list(ctx.iter("t")) == _from_index(ctx)
    data = _log(tmp_path).read_bytes()
    at = data.index(b"x" * 250)
    _log(tmp_path).write_bytes(data[:at] + b"z" + data[at + 1 :])
    with app.open_store(tmp_path) as s, pytest.raises(IntegrityError):
        list(s.context("c").iter("t"))


def test_an_iteration_sees_one_state_through_writes_and_compaction(tmp_path: Path) -> None:
    with app.open_store(tmp_path) as s:
        ctx = s.context("c")
        ctx.append("t", [{"id": f"r{i}", "v": 0} for i in range(30)])
        ctx.append("t", [{"id": f"r{i}", "v": 1} for i in range(0, 30, 2)])
        before = _from_index(ctx)
        it = ctx.iter("t")
        first = next(it)
        ctx.append("t", [{"id": "r1", "v": 9}, {"id": "late", "v": 9}])
        ctx.delete("t", ["r3"])
        ctx.compact("t")
        assert [first, *it] == before
        after = list(ctx.iter("t"))
        assert after == _from_index(ctx)
        assert {r["id"]: r["v"] for r in after}["r1"] == 9


def test_filters_and_orders_still_read_the_index(tmp_path: Path) -> None:
    with app.open_store(tmp_path) as s:
        ctx = s.context("c")
        ctx.append("t", [{"id": f"r{i}", "v": i % 5} for i in range(40)])
        assert [r["id"] for r in ctx.iter("t", {"v": 3})] == [f"r{i}" for i in range(3, 40, 5)]
        ordered = list(ctx.iter("t", order_by="-v"))
        assert [r["v"] for r in ordered] == sorted((i % 5 for i in range(40)), reverse=True)
        assert list(ctx.iter("missing")) == []


def test_the_next_batch_is_verified_by_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``AHEAD_FROM`` bytes the next batch is verified while this one is parsed: the
    same records, and damage in a later batch still raises when that batch is reached."""
    monkeypatch.setattr(collection, "AHEAD_FROM", 0)
    with app.open_store(tmp_path) as s:
        ctx = s.context("c")
        for b in range(6):
            ctx.append("t", [{"id": f"r{b}-{i}", "b": b} for i in range(50)])
        ctx.append("t", [{"id": "r2-3", "b": 9}])
        assert list(ctx.iter("t")) == _from_index(ctx)
    data = _log(tmp_path).read_bytes()
    at = data.index(b'"b":4')
    _log(tmp_path).write_bytes(data[:at] + b'"b":5' + data[at + 5 :])
    with app.open_store(tmp_path) as s:
        it = s.context("c").iter("t")
        firsts = [next(it)["b"] for _ in range(199)]  # batches 0-3 (r2-3 is superseded)
        assert firsts == [0] * 50 + [1] * 50 + [2] * 49 + [3] * 50
        with pytest.raises(IntegrityError, match="checksum mismatch"):
            list(it)


def test_many_tiny_batches_read_from_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below ``LOG_READ_BATCH`` bytes per batch on average (the default) a batch read costs
    more than the index row: the same records, from the index."""
    monkeypatch.setattr(collection, "LOG_READ_BATCH", 16 << 10)
    with app.open_store(tmp_path) as s:
        ctx = s.context("c")
        for i in range(30):
            ctx.append("t", [{"id": f"r{i % 20}", "v": i}])
        got = list(ctx.iter("t"))
        assert got == _from_index(ctx)
        assert [r["v"] for r in got] == list(range(10, 30))
