"""Records, ``define_collection`` (user schemas, indexes) and the built-in schemas.

Through the public API (docs/api.md, "Records"); helpers in ``records_support``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from recdata import analogy
from records_support import Paper, assert_nothing_written, log_bytes

import app


@pytest.mark.embedded_only("reads the SQLite index's CREATE INDEX statements")
def test_define_collection_with_schema_and_indexes(ctx: app.Context) -> None:
    ctx.define_collection("papers", schema=Paper, indexes=["year", ("title", "year")])
    assert "papers" in ctx.collections()
    ctx.append("papers", [{"id": "p1", "title": "A", "year": 2001, "extra": "kept"}])
    assert ctx.get("papers", "p1") == {"id": "p1", "title": "A", "year": 2001, "extra": "kept"}
    raw = log_bytes(ctx, "papers")
    for bad in (
        {"id": "p2", "title": "B"},  # year missing
        {"id": "p2", "title": "B", "year": "2001"},  # wrong type
        {"id": "p2", "title": None, "year": 2001},
    ):
        with pytest.raises(app.InvalidInput) as ei:
            ctx.append("papers", [{"id": "ok", "title": "C", "year": 1}, bad])
        assert "[1]" in str(ei.value) or "p2" in str(ei.value)
        assert_nothing_written(ctx, "papers", 1, raw)
    idx = Path(ctx.path) / f"{ctx.name}.sqlite"
    conn = sqlite3.connect(f"file:{idx}?mode=ro", uri=True)
    try:
        sqls = [
            s
            for (s,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
            )
        ]
    finally:
        conn.close()
    assert any("year" in s and "title" not in s for s in sqls), sqls
    assert any("year" in s and "title" in s for s in sqls), sqls
    # indexed queries give the right answers
    ctx.append(
        "papers", [{"id": f"q{i}", "title": f"T{i % 3}", "year": 2000 + i} for i in range(9)]
    )
    got = ctx.query("papers", {"year": {"$gte": 2004}}, order_by="year")
    assert [r["year"] for r in got] == sorted(
        r["year"] for r in ctx.query("papers") if r["year"] >= 2004
    )


def test_define_collection_persists_across_reopen(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        s.context("c").define_collection("papers", schema=Paper, indexes=["year"])
    with app.open_store(store_root) as s:
        c = s.context("c")
        assert c.collections() == ["papers"]
        with pytest.raises(app.InvalidInput):
            c.append("papers", [{"title": "no year"}])
        c.append("papers", [{"title": "ok", "year": 1}])
        assert c.count("papers") == 1


def test_define_collection_on_existing_data_then_query(ctx: app.Context) -> None:
    ctx.append("things", [{"id": str(i), "k": i % 4} for i in range(40)])
    ctx.define_collection("things", indexes=["k"])
    assert ctx.count("things", {"k": 2}) == 10
    assert ctx.count("things") == 40


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schema": dict},
        {"schema": Paper(title="x", year=1)},
        {"schema": "Paper"},
        {"indexes": "year"},
        {"indexes": ["a b"]},
        {"indexes": ["x'); DROP TABLE y; --"]},
        {"indexes": [""]},
        {"indexes": [()]},
        {"indexes": [5]},
    ],
    ids=repr,
)
def test_define_collection_bad_arguments(ctx: app.Context, kwargs: dict[str, Any]) -> None:
    with pytest.raises(app.InvalidInput):
        ctx.define_collection("things", **kwargs)
    assert "things" not in ctx.collections()


def test_analogies_schema(ctx: app.Context) -> None:
    good = [analogy(i) for i in range(5)]
    good.append({**analogy(5), "notes": "extra fields allowed", "meta": {"x": 1}})
    ctx.append("analogies", good)
    assert ctx.get("analogies", "a5")["notes"] == "extra fields allowed"
    assert ctx.get("analogies", "a5")["meta"] == {"x": 1}
    boundary = [analogy(10, quality_score=0.0), analogy(11, quality_score=1.0)]
    ctx.append("analogies", boundary)
    raw = log_bytes(ctx, "analogies")
    n = ctx.count("analogies")
    base = analogy(99)
    bad_records = [
        {k: v for k, v in base.items() if k != "source_domain"},
        {k: v for k, v in base.items() if k != "target_domain"},
        {k: v for k, v in base.items() if k != "quality_score"},
        {**base, "quality_score": 1.5},
        {**base, "quality_score": -0.01},
        {**base, "quality_score": float("nan")},
        {**base, "quality_score": None},
        {**base, "quality_score": "high"},
        {**base, "source_domain": 5},
        {**base, "target_domain": None},
    ]
    for bad in bad_records:
        batch = [analogy(200), analogy(201), analogy(202), bad]
        with pytest.raises(app.InvalidInput) as ei:
            ctx.append("analogies", batch)
        msg = str(ei.value)
        assert "[3]" in msg or "a99" in msg, msg  # names the failing record
        assert len(msg) < 500
        assert_nothing_written(ctx, "analogies", n, raw)


@pytest.mark.parametrize("collection", ["frames", "concepts"])
def test_frames_and_concepts_need_name(ctx: app.Context, collection: str) -> None:
    ctx.append(collection, [{"id": "f1", "name": "N", "slots": ["a"]}])
    assert ctx.get(collection, "f1") == {"id": "f1", "name": "N", "slots": ["a"]}
    raw = log_bytes(ctx, collection)
    for bad in ({"id": "f2"}, {"id": "f2", "name": None}, {"id": "f2", "name": 3}):
        with pytest.raises(app.InvalidInput) as ei:
            ctx.append(collection, [{"id": "f3", "name": "ok"}, bad])
        assert "[1]" in str(ei.value) or "f2" in str(ei.value)
        assert_nothing_written(ctx, collection, 1, raw)


def test_other_collections_have_no_schema(ctx: app.Context) -> None:
    ctx.append("free", [{"id": "1"}, {"id": "2", "quality_score": 7, "name": 3}])
    assert ctx.count("free") == 2
