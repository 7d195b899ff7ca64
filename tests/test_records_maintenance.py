"""Records, maintenance: another process sees committed records; ``verify`` and ``rebuild_index``.

Through the public API (docs/api.md, "Records"); helpers in ``records_support``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from recdata import analogy
from records_support import run_py

import app


def test_visible_to_another_process(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        ctx = s.context("shared")
        recs = [analogy(i) for i in range(25)]
        ctx.append("analogies", recs)
        code = (
            "import app, sys, json\n"
            "s = app.open_store(sys.argv[1])\n"
            "c = s.context('shared', create=False)\n"
            "print(json.dumps([c.count('analogies'), c.get('analogies', 'a7'),"
            " c.query('analogies', {'source_domain': 'd3'})]))\n"
        )
        res = run_py(code, str(store_root))
        assert res.returncode == 0, res.stderr
        count, a7, d3 = json.loads(res.stdout)
        assert count == 25
        assert a7 == recs[7]
        assert d3 == [r for r in recs if r["source_domain"] == "d3"]

        # and the other way round: the child appends; this (already open) context sees it
        code2 = (
            "import app, sys\n"
            "s = app.open_store(sys.argv[1])\n"
            "c = s.context('shared')\n"
            "c.append('analogies', [{'id': 'child', 'source_domain': 'x',"
            " 'target_domain': 'y', 'quality_score': 0.5}])\n"
            "c.delete('analogies', ['a0'])\n"
        )
        res = run_py(code2, str(store_root))
        assert res.returncode == 0, res.stderr
        assert ctx.count("analogies") == 25
        assert ctx.get("analogies", "child")["source_domain"] == "x"
        with pytest.raises(app.NotFoundError):
            ctx.get("analogies", "a0")
        ctx.append("analogies", [analogy(100)])
        assert ctx.count("analogies") == 26


# --------------------------------------------------------------------------- maintenance


def test_verify_ok_on_healthy_data(ctx: app.Context) -> None:
    report = ctx.verify()
    assert isinstance(report, app.IntegrityReport)
    assert report.ok and report.problems == []
    ctx.append("analogies", [analogy(i) for i in range(100)])
    ctx.append("notes", [{"id": "x"}])
    ctx.append("analogies", [analogy(i, quality_score=0.9) for i in range(50)])
    ctx.delete("analogies", ["a1", "a2"])
    ctx.define_collection("empty")
    r = ctx.verify()
    assert r.ok, r.problems
    assert r.problems == []
    ctx.compact("analogies")
    r = ctx.verify()
    assert r.ok, r.problems


def test_rebuild_index_gives_identical_results(ctx: app.Context, people: list) -> None:
    ctx.append("analogies", [analogy(i) for i in range(200)])
    ctx.append("analogies", [analogy(i, quality_score=0.33) for i in range(0, 200, 3)])
    ctx.delete("analogies", where={"target_domain": "t2", "quality_score": {"$lt": 0.5}})
    ctx.delete("people", ["p01", "p02"])
    ctx.define_collection("papers", indexes=["year"])
    ctx.append("papers", [{"id": str(i), "year": 1990 + i % 30} for i in range(90)])
    queries: list[tuple[str, dict[str, Any] | None, Any]] = [
        ("analogies", None, None),
        ("analogies", {"source_domain": "d2"}, "-quality_score"),
        ("analogies", {"quality_score": {"$gte": 0.3, "$lt": 0.8}}, ["target_domain", "-id"]),
        ("people", {"$or": [{"city": "Oslo"}, {"age": {"$lt": 3}}]}, "age"),
        ("people", None, None),
        ("papers", {"year": {"$in": [1991, 2005]}}, "-year"),
        ("papers", None, None),
    ]

    def snapshot() -> Any:
        return (
            [ctx.query(c, w, order_by=o) for c, w, o in queries],
            [ctx.count(c, w) for c, w, _ in queries],
            ctx.collections(),
            ctx.get("analogies", "a3"),
            [h.model_dump() for h in ctx.history("analogies", "a0")],
        )

    before = snapshot()
    dup = ctx.append("papers", [{"id": "z", "year": 1}], batch_id="keep-me")
    before = snapshot()
    ctx.rebuild_index()
    assert snapshot() == before
    assert ctx.append("papers", [{"id": "z", "year": 1}], batch_id="keep-me").sha256 == dup.sha256
    assert ctx.verify().ok
    ctx.append("papers", [{"id": "after", "year": 3000}])
    assert ctx.get("papers", "after")["year"] == 3000
