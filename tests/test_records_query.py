"""Records, reading: ``order_by``, ``limit``/``offset``, lazy ``iter``, ``count``, ``collections``,
``get``.

Through the public API (docs/api.md, "Records"); helpers in ``records_support``.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from records_support import numbered_records, record_ids

import app


def test_order_by_asc_desc(ctx: app.Context) -> None:
    recs = numbered_records(ctx)
    assert ctx.query("nums", order_by="n") == sorted(recs, key=lambda r: r["n"])
    assert ctx.query("nums", order_by="-n") == sorted(recs, key=lambda r: -r["n"])
    assert ctx.query("nums", order_by="-w") == sorted(recs, key=lambda r: -r["w"])
    assert ctx.query("nums", order_by=["n"]) == sorted(recs, key=lambda r: r["n"])
    assert list(ctx.iter("nums", order_by="-n")) == sorted(recs, key=lambda r: -r["n"])


def test_order_by_list(ctx: app.Context) -> None:
    recs = numbered_records(ctx)
    got = ctx.query("nums", order_by=["a", "-b"])
    exp = sorted(sorted(recs, key=lambda r: r["b"], reverse=True), key=lambda r: r["a"])
    # (a, b) is not unique: compare the key sequence, then the set per key
    assert [(r["a"], r["b"]) for r in got] == [(r["a"], r["b"]) for r in exp]
    assert sorted(record_ids(got)) == sorted(record_ids(recs))
    got2 = ctx.query("nums", order_by=["-a", "n"])
    assert got2 == sorted(recs, key=lambda r: (-r["a"], r["n"]))


def test_default_order_is_commit_order(ctx: app.Context) -> None:
    recs = numbered_records(ctx)
    assert ctx.query("nums") == recs
    assert list(ctx.iter("nums")) == recs
    assert ctx.query("nums", {"a": 2}) == [r for r in recs if r["a"] == 2]


def test_order_by_with_where_limit_offset(ctx: app.Context) -> None:
    recs = numbered_records(ctx)
    exp = sorted((r for r in recs if r["a"] != 1), key=lambda r: -r["n"])
    assert ctx.query("nums", {"a": {"$ne": 1}}, order_by="-n", limit=7, offset=4) == exp[4:11]


def test_limit_offset(ctx: app.Context) -> None:
    recs = numbered_records(ctx)
    by_n = sorted(recs, key=lambda r: r["n"])
    assert ctx.query("nums", order_by="n", limit=5) == by_n[:5]
    assert ctx.query("nums", order_by="n", limit=5, offset=3) == by_n[3:8]
    assert ctx.query("nums", order_by="n", offset=45) == by_n[45:]
    assert ctx.query("nums", order_by="n", offset=500) == []
    assert ctx.query("nums", limit=0) == []
    assert ctx.query("nums", limit=3) == recs[:3]
    assert ctx.query("nums", limit=1000) == recs
    pages = [ctx.query("nums", order_by="-n", limit=8, offset=o) for o in range(0, 50, 8)]
    assert [r for page in pages for r in page] == sorted(recs, key=lambda r: -r["n"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": -1},
        {"offset": -1},
        {"limit": 1.5},
        {"limit": "3"},
        {"offset": None},
        {"limit": True},
        {"order_by": 5},
        {"order_by": ""},
        {"order_by": "-"},
        {"order_by": "a b"},
        {"order_by": "n; DROP TABLE x"},
        {"order_by": ["n", 3]},
        {"order_by": []},
    ],
    ids=repr,
)
def test_bad_query_arguments(ctx: app.Context, kwargs: dict[str, Any]) -> None:
    numbered_records(ctx)
    with pytest.raises(app.InvalidInput) as ei:
        ctx.query("nums", **kwargs)
    assert len(str(ei.value)) < 500
    assert ctx.count("nums") == 50


# --------------------------------------------------------------------------- iter/count -


def test_iter_is_lazy_iterator(ctx: app.Context) -> None:
    recs = numbered_records(ctx)
    it = ctx.iter("nums")
    assert iter(it) is it
    assert next(it) == recs[0]
    assert list(it) == recs[1:]


def test_iter_memory_stays_flat(ctx: app.Context) -> None:
    n = 40_000
    pad = "x" * 200
    for k in range(0, n, 10_000):
        ctx.append("big", [{"id": f"b{i}", "i": i, "pad": pad} for i in range(k, k + 10_000)])
    assert ctx.count("big") == n

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        total = 0
        for rec in ctx.iter("big"):
            total += rec["i"]
        iter_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        everything = ctx.query("big")
        list_peak = tracemalloc.get_traced_memory()[1] - base
        del everything
    finally:
        tracemalloc.stop()
    assert total == n * (n - 1) // 2
    # streaming holds a bounded window, not the collection
    assert iter_peak * 4 < list_peak, (iter_peak, list_peak)


def test_count(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    assert ctx.count("people") == len(people)
    assert ctx.count("people", {"active": True}) == sum(1 for p in people if p["active"])
    assert ctx.count("nothing") == 0


def test_collections_listing(ctx: app.Context) -> None:
    assert ctx.collections() == []
    ctx.append("zeta", [{"id": "1"}])
    ctx.append("alpha", [{"id": "1"}])
    ctx.define_collection("mid")
    assert ctx.collections() == ["alpha", "mid", "zeta"]
    assert ctx.count("mid") == 0
    ctx.query("never")  # reading does not create
    ctx.count("never2")
    with pytest.raises(app.NotFoundError):
        ctx.get("never3", "x")
    assert ctx.collections() == ["alpha", "mid", "zeta"]


def test_missing_collection_reads_as_empty(ctx: app.Context) -> None:
    assert ctx.query("ghost") == []
    assert ctx.query("ghost", {"a": 1}, order_by="a", limit=5) == []
    assert list(ctx.iter("ghost")) == []
    assert ctx.count("ghost") == 0
    assert ctx.count("ghost", {"a": {"$gt": 1}}) == 0
    assert ctx.history("ghost", "x") == []
    with pytest.raises(app.NotFoundError):
        ctx.get("ghost", "x")
    assert ctx.delete("ghost", ["x"]) == 0
    assert "ghost" not in ctx.collections()


def test_get_missing_record_raises_not_found(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "a"}])
    with pytest.raises(app.NotFoundError) as ei:
        ctx.get("notes", "b")
    assert isinstance(ei.value, KeyError)
    for bad in ("", 5, None, "x" * 257):
        with pytest.raises(app.InvalidInput):
            ctx.get("notes", bad)  # type: ignore[arg-type]
