"""Records, ``delete`` by ids and/or ``where``; batch ids; re-append after delete.

Through the public API (docs/api.md, "Records"); helpers in ``records_support``.
"""

from __future__ import annotations

from typing import Any

import pytest
from records_support import log_bytes, record_ids

import app


def test_delete_by_ids(ctx: app.Context, backend_kind: str) -> None:
    recs = [{"id": f"d{i}", "i": i} for i in range(10)]
    ctx.append("notes", recs)
    raw_before = log_bytes(ctx, "notes")
    n = ctx.delete("notes", ["d1", "d3", "missing", "d3"])
    assert n == 2
    assert ctx.count("notes") == 8
    for rid in ("d1", "d3"):
        with pytest.raises(app.NotFoundError):
            ctx.get("notes", rid)
    assert record_ids(ctx.query("notes")) == [r["id"] for r in recs if r["id"] not in ("d1", "d3")]
    # soft delete: the log only grew (tombstones appended), earlier bytes untouched
    raw_after = log_bytes(ctx, "notes")
    if backend_kind == "embedded":  # the JSONL log file
        assert raw_after.startswith(raw_before) and len(raw_after) > len(raw_before)
    hist = ctx.history("notes", "d1")
    assert [h.deleted for h in hist] == [False, True]
    assert hist[0].data == recs[1]
    assert hist[1].data is None
    assert isinstance(hist[1].batch_id, str) and hist[1].batch_id != hist[0].batch_id
    assert hist[1].committed_at >= hist[0].committed_at
    # deleting again finds nothing
    assert ctx.delete("notes", ["d1"]) == 0


def test_delete_by_where(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    where = {"age": {"$lt": 5}, "active": True}
    doomed = [p for p in people if p["age"] < 5 and p["active"]]
    assert doomed
    assert ctx.delete("people", where=where) == len(doomed)
    assert ctx.count("people") == len(people) - len(doomed)
    assert ctx.count("people", where) == 0
    for p in doomed:
        with pytest.raises(app.NotFoundError):
            ctx.get("people", p["id"])
        assert ctx.history("people", p["id"])[-1].deleted
    assert ctx.query("people") == [p for p in people if p not in doomed]


def test_delete_by_ids_and_where(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    ids = [p["id"] for p in people[:20]]
    n = ctx.delete("people", ids, where={"active": True})
    expected = [p for p in people[:20] if p["active"]]
    assert n == len(expected)
    assert ctx.count("people") == len(people) - n
    assert {p["id"] for p in ctx.query("people")} == {p["id"] for p in people} - {
        p["id"] for p in expected
    }


def test_delete_requires_ids_or_where(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "a"}])
    with pytest.raises(app.InvalidInput):
        ctx.delete("notes")
    with pytest.raises(app.InvalidInput):
        ctx.delete("notes", "a")  # a bare string is not a list of ids
    with pytest.raises(app.InvalidInput):
        ctx.delete("notes", [5])  # type: ignore[list-item]
    assert ctx.count("notes") == 1


def test_delete_batch_id_idempotent(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": str(i)} for i in range(5)])
    assert ctx.delete("notes", ["0", "1"], batch_id="del-1") == 2
    ctx.append("notes", [{"id": "0", "back": True}])
    raw = log_bytes(ctx, "notes")
    with pytest.raises(app.ConflictError):  # SPEC 16 (v2): another payload is a conflict
        ctx.delete("notes", ["0", "2"], batch_id="del-1")
    assert ctx.delete("notes", ["0", "1"], batch_id="del-1") == 2  # original answer
    assert log_bytes(ctx, "notes") == raw
    assert ctx.get("notes", "0") == {"id": "0", "back": True}
    assert ctx.get("notes", "2") == {"id": "2"}


def test_reappend_after_delete(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "x", "v": 1}])
    ctx.delete("notes", ["x"])
    ctx.append("notes", [{"id": "x", "v": 2}])
    assert ctx.get("notes", "x") == {"id": "x", "v": 2}
    assert [(h.deleted, h.data) for h in ctx.history("notes", "x")] == [
        (False, {"id": "x", "v": 1}),
        (True, None),
        (False, {"id": "x", "v": 2}),
    ]
