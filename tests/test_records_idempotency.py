"""Records, batch ids: a repeated ``batch_id`` commits once, across reopen and processes.

Through the public API (docs/api.md, "Records"); helpers in ``records_support``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recdata import analogy
from records_support import assert_nothing_written, log_bytes, run_py

import app


def test_batch_id_idempotency(ctx: app.Context) -> None:
    r1 = ctx.append("analogies", [analogy(i) for i in range(10)], batch_id="batch-1")
    assert r1.batch_id == "batch-1"
    assert r1.duplicate is False
    raw = log_bytes(ctx, "analogies")
    with pytest.raises(app.ConflictError, match="different payload"):  # SPEC 16 (v2)
        ctx.append("analogies", [analogy(i) for i in range(100, 150)], batch_id="batch-1")
    r2 = ctx.append("analogies", [analogy(i) for i in range(10)], batch_id="batch-1")
    assert r2.duplicate is True
    assert (r2.batch_id, r2.count, r2.committed_at, r2.sha256) == (
        r1.batch_id,
        r1.count,
        r1.committed_at,
        r1.sha256,
    )
    assert_nothing_written(ctx, "analogies", 10, raw)
    with pytest.raises(app.NotFoundError):
        ctx.get("analogies", "a100")


def test_batch_id_idempotency_across_reopen_and_process(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        r1 = s.context("c").append("notes", [{"id": "1"}], batch_id="once")
    with app.open_store(store_root) as s:
        with pytest.raises(app.ConflictError):
            s.context("c").append("notes", [{"id": "2"}], batch_id="once")
        r2 = s.context("c").append("notes", [{"id": "1"}], batch_id="once")
        assert r2.duplicate and r2.sha256 == r1.sha256 and r2.count == 1
        assert s.context("c").count("notes") == 1
    code = (
        "import app, sys, json\n"
        "s = app.open_store(sys.argv[1])\n"
        "r = s.context('c').append('notes', [{'id': '1'}], batch_id='once')\n"
        "print(json.dumps([r.duplicate, r.sha256, s.context('c').count('notes')]))\n"
    )
    res = run_py(code, str(store_root))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [True, r1.sha256, 1]


def test_invalid_batch_ids_rejected(ctx: app.Context) -> None:
    for bad in ("", "x" * 257, 5, ["b"]):
        with pytest.raises(app.InvalidInput) as ei:
            ctx.append("notes", [{"id": "1"}], batch_id=bad)  # type: ignore[arg-type]
        assert len(str(ei.value)) < 500
    assert ctx.count("notes") == 0


def test_failed_batch_does_not_consume_batch_id(ctx: app.Context) -> None:
    with pytest.raises(app.InvalidInput):
        ctx.append("notes", [{"id": "x", "v": float("nan")}], batch_id="retry-me")
    r = ctx.append("notes", [{"id": "x", "v": 1}], batch_id="retry-me")
    assert r.duplicate is False and r.count == 1
    assert ctx.get("notes", "x") == {"id": "x", "v": 1}
