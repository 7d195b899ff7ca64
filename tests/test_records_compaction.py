"""Records, ``compact``: the report, history kept, batch metadata and idempotency kept.

Through the public API (docs/api.md, "Records"); helpers in ``records_support``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from records_support import canonical, log_path

import app


@pytest.mark.embedded_only("compares the report's byte counts with the JSONL log file")
def test_compact_report_and_history(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": f"k{i}", "v": 0} for i in range(20)])
    ctx.append("notes", [{"id": f"k{i}", "v": 1} for i in range(10)])  # 10 superseded
    ctx.append("notes", [{"id": f"k{i}", "v": 2} for i in range(5)])  # 5 more superseded
    ctx.delete("notes", ["k19", "k18", "k0"])  # 3 tombstones
    entries_before = 20 + 10 + 5 + 3
    survivors = ctx.query("notes")
    assert len(survivors) == 17
    bytes_before = log_path(ctx, "notes").stat().st_size
    report = ctx.compact("notes")
    assert isinstance(report, app.CompactionReport)
    assert report.records_before == entries_before
    assert report.records_after == len(survivors)
    assert report.bytes_before == bytes_before
    assert report.bytes_after == log_path(ctx, "notes").stat().st_size
    assert report.bytes_after < report.bytes_before
    assert ctx.query("notes") == survivors
    assert ctx.count("notes") == 17
    for rec in survivors:
        hist = ctx.history("notes", rec["id"])
        assert len(hist) == 1
        assert hist[0].data == rec and not hist[0].deleted
        assert hist[0].sha256 == hashlib.sha256(canonical(rec)).hexdigest()
    h1 = ctx.history("notes", "k1")
    assert h1[0].data == {"id": "k1", "v": 2}
    assert ctx.history("notes", "k0") == []
    with pytest.raises(app.NotFoundError):
        ctx.get("notes", "k0")
    # compacting again changes nothing but keeps working
    again = ctx.compact("notes")
    assert again.records_before == again.records_after == 17
    assert ctx.query("notes") == survivors


def test_compact_keeps_batch_metadata_and_idempotency(ctx: app.Context) -> None:
    r1 = ctx.append("notes", [{"id": "a", "v": 1}, {"id": "b"}], batch_id="first")
    ctx.append("notes", [{"id": "a", "v": 2}], batch_id="second")
    hist_b = ctx.history("notes", "b")
    ctx.compact("notes")
    assert ctx.history("notes", "b") == hist_b or (
        [(h.batch_id, h.committed_at, h.sha256, h.data) for h in ctx.history("notes", "b")]
        == [(h.batch_id, h.committed_at, h.sha256, h.data) for h in hist_b]
    )
    with pytest.raises(app.ConflictError):  # the request digest survives compaction
        ctx.append("notes", [{"id": "zzz"}], batch_id="first")
    again = ctx.append("notes", [{"id": "a", "v": 1}, {"id": "b"}], batch_id="first")
    assert again.duplicate
    assert (again.count, again.sha256, again.committed_at) == (
        r1.count,
        r1.sha256,
        r1.committed_at,
    )
    with pytest.raises(app.NotFoundError):
        ctx.get("notes", "zzz")


def test_compact_then_append_and_reopen(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        c = s.context("c")
        c.append("notes", [{"id": str(i), "v": i} for i in range(30)])
        c.delete("notes", [str(i) for i in range(0, 30, 2)])
        c.compact("notes")
        c.append("notes", [{"id": "new", "v": -1}])
        expected = c.query("notes")
    with app.open_store(store_root) as s:
        c = s.context("c")
        assert c.query("notes") == expected
        assert c.verify().ok


def test_compact_missing_collection(ctx: app.Context) -> None:
    report = ctx.compact("ghost")
    assert report.records_before == report.records_after == 0
    assert "ghost" not in ctx.collections()
