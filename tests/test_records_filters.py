"""Records, ``where`` filters: equality, operators, dotted paths, ``$and``/``$or``, strict types,
and malformed filters refused as ``InvalidInput``.

Through the public API (docs/api.md, "Records"); helpers in ``records_support``.
"""

from __future__ import annotations

from typing import Any

import pytest
from records_support import assert_nothing_written, log_bytes, record_ids

import app


def _field(rec: dict[str, Any], path: str) -> Any:
    cur: Any = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return "<missing>"
        cur = cur[part]
    return cur


def _check(ctx: app.Context, where: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    got = ctx.query("people", where)
    assert record_ids(got) == record_ids(expected), where
    assert got == expected
    assert ctx.count("people", where) == len(expected)
    assert list(ctx.iter("people", where)) == expected


def test_where_equality(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    _check(ctx, {"name": "name3"}, [p for p in people if p["name"] == "name3"])
    _check(ctx, {"age": 5}, [p for p in people if p["age"] == 5])
    _check(ctx, {"active": True}, [p for p in people if p["active"] is True])
    _check(ctx, {"active": False}, [p for p in people if p["active"] is False])
    _check(ctx, {"city": "Oslo"}, [p for p in people if p.get("city") == "Oslo"])
    _check(ctx, {"name": "nobody"}, [])
    _check(ctx, {"id": "p07"}, [p for p in people if p["id"] == "p07"])


def test_where_eq_operator(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    _check(ctx, {"age": {"$eq": 4}}, [p for p in people if p["age"] == 4])
    _check(ctx, {"score": {"$eq": 3.7}}, [p for p in people if p["score"] == 3.7])


def test_where_null_matches_missing_and_null(ctx: app.Context, people: list) -> None:
    _check(ctx, {"nullable": None}, [p for p in people if p.get("nullable") is None])
    _check(ctx, {"city": None}, [p for p in people if "city" not in p])
    _check(ctx, {"city": {"$ne": None}}, [p for p in people if "city" in p])


def test_where_ne(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    # $ne also matches records without the field
    _check(ctx, {"city": {"$ne": "Paris"}}, [p for p in people if p.get("city") != "Paris"])
    _check(ctx, {"age": {"$ne": 3}}, [p for p in people if p["age"] != 3])


@pytest.mark.parametrize(
    ("op", "fn"),
    [
        ("$gt", lambda a, b: a > b),
        ("$gte", lambda a, b: a >= b),
        ("$lt", lambda a, b: a < b),
        ("$lte", lambda a, b: a <= b),
    ],
)
def test_where_comparisons(ctx: app.Context, people: list, op: str, fn: Any) -> None:
    for pivot in (0, 7, 7.5, 22, 100, -1):
        _check(ctx, {"age": {op: pivot}}, [p for p in people if fn(p["age"], pivot)])
    for pivot in (2.2, 5.0):
        _check(ctx, {"score": {op: pivot}}, [p for p in people if fn(p["score"], pivot)])
    for spivot in ("Lima", "M", "name5", ""):
        _check(
            ctx,
            {"city": {op: spivot}},
            [p for p in people if "city" in p and fn(p["city"], spivot)],
        )


def test_where_range_combined(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    _check(
        ctx,
        {"age": {"$gte": 5, "$lt": 12}},
        [p for p in people if 5 <= p["age"] < 12],
    )
    _check(
        ctx,
        {"score": {"$gt": 1.0, "$lte": 6.3}, "active": True},
        [p for p in people if 1.0 < p["score"] <= 6.3 and p["active"]],
    )


def test_where_in_nin(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    _check(ctx, {"age": {"$in": [1, 3, 5]}}, [p for p in people if p["age"] in (1, 3, 5)])
    _check(
        ctx,
        {"city": {"$in": ["Oslo", "Lima"]}},
        [p for p in people if p.get("city") in ("Oslo", "Lima")],
    )
    _check(
        ctx,
        {"city": {"$nin": ["Oslo", "Lima"]}},
        [p for p in people if p.get("city") not in ("Oslo", "Lima")],
    )
    _check(ctx, {"age": {"$in": []}}, [])
    _check(ctx, {"age": {"$nin": []}}, people)
    _check(
        ctx,
        {"city": {"$in": [None, "Paris"]}},
        [p for p in people if p.get("city") in (None, "Paris")],
    )


def test_where_dotted_paths(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    _check(ctx, {"meta.source": "src2"}, [p for p in people if p["meta"]["source"] == "src2"])
    _check(
        ctx,
        {"meta.rank": {"$gte": 3}, "meta.source": {"$in": ["src1", "src3"]}},
        [p for p in people if p["meta"]["rank"] >= 3 and p["meta"]["source"] in ("src1", "src3")],
    )
    _check(ctx, {"meta.nothing": None}, people)
    _check(ctx, {"meta.source.deeper": "x"}, [])


def test_where_and_or(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    _check(
        ctx,
        {"$or": [{"age": 1}, {"city": "Lima"}]},
        [p for p in people if p["age"] == 1 or p.get("city") == "Lima"],
    )
    _check(
        ctx,
        {"$and": [{"age": {"$gt": 3}}, {"age": {"$lt": 9}}]},
        [p for p in people if 3 < p["age"] < 9],
    )
    _check(
        ctx,
        {
            "$or": [
                {"$and": [{"active": True}, {"meta.rank": 0}]},
                {"name": {"$in": ["name1", "name2"]}},
            ],
            "age": {"$lt": 15},
        },
        [
            p
            for p in people
            if ((p["active"] and p["meta"]["rank"] == 0) or p["name"] in ("name1", "name2"))
            and p["age"] < 15
        ],
    )


def test_where_multi_key_is_and(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    _check(
        ctx,
        {"active": True, "city": "Paris", "age": {"$lt": 20}},
        [p for p in people if p["active"] and p.get("city") == "Paris" and p["age"] < 20],
    )


def test_where_empty_filter_matches_all(ctx: app.Context, people: list[dict[str, Any]]) -> None:
    _check(ctx, {}, people)
    assert ctx.query("people", None) == people


def test_where_type_strictness(ctx: app.Context) -> None:
    ctx.append(
        "mixed",
        [
            {"id": "int1", "v": 1},
            {"id": "float1", "v": 1.0},
            {"id": "true", "v": True},
            {"id": "str1", "v": "1"},
            {"id": "list", "v": [1]},
            {"id": "obj", "v": {"a": 1}},
            {"id": "null", "v": None},
            {"id": "zero", "v": 0},
            {"id": "false", "v": False},
        ],
    )

    def ids(where: dict[str, Any]) -> set[str]:
        return {r["id"] for r in ctx.query("mixed", where)}

    assert ids({"v": 1}) == {"int1", "float1"}
    assert ids({"v": True}) == {"true"}
    assert ids({"v": "1"}) == {"str1"}
    assert ids({"v": 0}) == {"zero"}
    assert ids({"v": False}) == {"false"}
    assert ids({"v": None}) == {"null"}
    assert ids({"v": {"$gte": 0}}) == {"int1", "float1", "zero"}
    assert ids({"v": {"$gte": ""}}) == {"str1"}
    assert ids({"v": '{"a":1}'}) == set()
    assert ids({"v": "[1]"}) == set()


def test_filter_values_never_spliced_into_sql(ctx: app.Context, people: list) -> None:
    for evil in ("x' OR '1'='1", "'; DROP TABLE people; --", '" OR 1=1 --', "%", "_"):
        _check(ctx, {"name": evil}, [])
        _check(ctx, {"name": {"$in": [evil]}}, [])
        _check(ctx, {"name": {"$ne": evil}}, people)
    assert ctx.count("people") == len(people)


@pytest.mark.parametrize(
    "bad",
    [
        {"age": {"$regex": "x"}},
        {"age": {"$exists": True}},
        {"$not": {"age": 1}},
        {"$nor": [{"age": 1}]},
        {"$where": "1"},
        {"age": {"$in": 5}},
        {"age": {"$nin": "abc"}},
        {"age": {"$gt": None}},
        {"age": {"$gt": True}},
        {"age": {"$gt": [1]}},
        {"age": {"$gt": {"x": 1}}},
        {"age": {}},
        {"age": {"nested": 1}},
        {"age": [1, 2]},
        {"age": {"$eq": [1]}},
        {"age": float("nan")},
        {"age": {"$lt": float("inf")}},
        {"$and": []},
        {"$or": []},
        {"$and": {"age": 1}},
        {"$or": "age"},
        {"$and": [1]},
        {"$or": [["age", 1]]},
        {"": 1},
        {"a..b": 1},
        {".a": 1},
        {"a.": 1},
        {"a b": 1},
        {"a') OR 1=1 --": 1},
        {'a"]': 1},
        {"a'": 1},
        {5: 1},
        {"age": object()},
    ],
    ids=repr,
)
def test_malformed_filters_raise_invalid_input(ctx: app.Context, people: list, bad: Any) -> None:
    for call in (
        lambda: ctx.query("people", bad),
        lambda: ctx.count("people", bad),
        lambda: list(ctx.iter("people", bad)),
    ):
        with pytest.raises(app.InvalidInput) as ei:
            call()
        assert len(str(ei.value)) < 500
    raw = log_bytes(ctx, "people")
    with pytest.raises(app.InvalidInput):
        ctx.delete("people", where=bad)
    assert_nothing_written(ctx, "people", len(people), raw)


@pytest.mark.parametrize("bad", [[{"age": 1}], "age=1", 5, ("age", 1)], ids=repr)
def test_non_mapping_filters_raise_invalid_input(ctx: app.Context, people: list, bad: Any) -> None:
    with pytest.raises(app.InvalidInput):
        ctx.query("people", bad)
    with pytest.raises(app.InvalidInput):
        ctx.count("people", bad)


def test_deeply_nested_filter_is_invalid_input_not_crash(ctx: app.Context, people: list) -> None:
    where: dict[str, Any] = {"age": 1}
    for _ in range(5000):
        where = {"$and": [where]}
    with pytest.raises(app.InvalidInput) as ei:
        ctx.query("people", where)
    assert len(str(ei.value)) < 500
