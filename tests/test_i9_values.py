"""Legal input never crashes nor raises a false alarm (issue 9 items 5 and 6, SPEC 22):
``$in``/``$nin``/``$or`` lists of any length, integers outside int64 and strings with NUL
refused at append and in filters, v1 data holding such values still read."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from pydantic import BaseModel
from test_filters import SETTINGS, filters, records, ref_match

import app
from app.core import filters as filters_module
from app.formats.batchlog import commit_line, put_line

BIG = 100_000


# -- item 5: long lists ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[app.Context, list[dict[str, Any]]]]:
    with tempfile.TemporaryDirectory() as tmp, app.open_store(Path(tmp) / "s") as store:
        ctx = store.context("big", create=True)
        data = [
            {"id": f"r{i}", "n": i, "s": f"v{i}", "f": i + 0.5, "b": i % 3 == 0}
            if i % 7
            else {"id": f"r{i}", "n": None, "s": [i]}
            for i in range(3000)
        ]
        ctx.append("items", data)
        ctx.define_collection("indexed", indexes=["n", "s"])
        ctx.append("indexed", data)
        yield ctx, data


def _check(ctx: app.Context, coll: str, data: list[dict[str, Any]], where: Any) -> None:
    expected = [r for r in data if ref_match(r, where)]
    assert ctx.query(coll, where) == expected
    assert ctx.count(coll, where) == len(expected)
    assert list(ctx.iter(coll, where)) == expected
    assert (
        ctx.query(coll, where, order_by="-n", limit=5, offset=1)
        == ctx.query(coll, where, order_by="-n")[1:6]
    )


def _num(r: dict[str, Any]) -> Any:
    n = r.get("n")
    return n if type(n) is int else None


@pytest.mark.parametrize("coll", ["items", "indexed"])
@pytest.mark.parametrize("size", [5_000, pytest.param(BIG, marks=pytest.mark.slow)])
def test_long_in_nin_and_or_lists_answer_like_the_reference(
    big: tuple[app.Context, list[dict[str, Any]]], coll: str, size: int
) -> None:
    """Long lists against hand-written expectations (the reference evaluator is quadratic
    here; ``test_long_list_path_matches_reference`` checks it on every shape)."""
    ctx, data = big
    evens = list(range(0, 2 * size, 2))
    third = {f"r{i}" for i in range(0, size, 3)}
    cases: list[tuple[Any, Any]] = [
        ({"id": {"$in": sorted(third)}}, lambda r: r["id"] in third),
        ({"n": {"$in": evens}}, lambda r: _num(r) is not None and _num(r) % 2 == 0),
        ({"n": {"$nin": evens}}, lambda r: _num(r) is None or _num(r) % 2 == 1),
        (
            {"n": {"$in": [*evens, None, True, "v3", 0.5]}},
            lambda r: r["n"] is None or r["n"] % 2 == 0,
        ),
        (
            {"s": {"$in": [f"v{i}" for i in range(size)] + ["[1]", "{}"]}},
            lambda r: isinstance(r["s"], str),
        ),
        ({"s": {"$nin": [f"v{i}" for i in range(size)]}}, lambda r: not isinstance(r["s"], str)),
        (
            {"f": {"$in": [i + 0.5 for i in range(0, size, 5)]}},
            lambda r: "f" in r and r["n"] % 5 == 0,
        ),
        ({"b": {"$in": [True] * 2000}}, lambda r: r.get("b") is True),
        ({"$or": [{"n": i} for i in range(size)]}, lambda r: _num(r) is not None),
        (
            {"$or": [{"id": f"r{i}"} for i in range(0, size, 2)] + [{"id": {"$in": ["r1"]}}]},
            lambda r: int(r["id"][1:]) % 2 == 0 or r["id"] == "r1",
        ),
        (
            {"$or": [{"n": {"$gte": i, "$lt": i + 1}} for i in range(0, 4000, 3)]},
            lambda r: _num(r) is not None and _num(r) % 3 == 0,
        ),
        (
            {"$and": [{"n": {"$ne": i}} for i in range(1000, size)] + [{"n": {"$gte": 10}}]},
            lambda r: _num(r) is not None and 10 <= _num(r) < 1000,
        ),
        (
            {"$or": [{"$or": [{"n": i}, {"s": f"v{i + 1}"}]} for i in range(3000)]},
            lambda r: _num(r) is not None or isinstance(r["s"], str),
        ),
    ]
    for where, expect in cases:
        expected = [r for r in data if expect(r)]
        assert expected, where
        assert ctx.query(coll, where) == expected
        assert ctx.count(coll, where) == len(expected)
        assert list(ctx.iter(coll, where)) == expected
        by_n = ctx.query(coll, where, order_by="-n")
        assert ctx.query(coll, where, order_by="-n", limit=5, offset=1) == by_n[1:6]


def test_long_lists_delete_where(tmp_path: Path) -> None:
    with app.open_store(tmp_path / "s") as store:
        ctx = store.context("d", create=True)
        ctx.append("items", [{"id": f"r{i}", "n": i} for i in range(2000)])
        assert ctx.delete("items", where={"n": {"$in": list(range(0, BIG, 2))}}) == 1000
        assert ctx.delete("items", where={"$or": [{"n": i} for i in range(1, BIG, 4)]}) == 500
        assert ctx.delete("items", [f"r{i}" for i in range(BIG)], where={"n": {"$nin": [3]}}) == 499
        assert [r["id"] for r in ctx.query("items")] == ["r3"]


def test_a_filter_too_large_to_bind_is_invalid_input(
    big: tuple[app.Context, list[dict[str, Any]]],
) -> None:
    ctx, _ = big
    where = {"$or": [{"n": {"$gt": i}, "s": f"v{i}"} for i in range(20_000)]}
    for call in (
        lambda: ctx.query("items", where),
        lambda: ctx.count("items", where),
        lambda: list(ctx.iter("items", where)),
        lambda: ctx.delete("items", where=where),
    ):
        with pytest.raises(app.InvalidInput, match="where: the filter needs"):
            call()


@pytest.fixture
def small_lists(monkeypatch: pytest.MonkeyPatch) -> Iterator[app.Context]:
    """Every list takes the long-list path (json_each, merged ``$or``)."""
    monkeypatch.setattr(filters_module, "LARGE_LIST", 1)
    with tempfile.TemporaryDirectory() as tmp, app.open_store(Path(tmp) / "s") as store:
        yield store.context("lists", create=True)


@SETTINGS
@given(data=records(), where=filters())
def test_long_list_path_matches_reference(
    small_lists: app.Context, data: list[dict[str, Any]], where: dict[str, Any]
) -> None:
    ctx = small_lists
    ctx._plans.clear()
    coll = f"c{len(ctx.collections())}"
    ctx.define_collection(coll, indexes=["a", ("n.a", "b")])
    ctx.append(coll, data)
    expected = [r for r in data if ref_match(r, where)]
    assert ctx.query(coll, where) == expected
    assert ctx.count(coll, where) == len(expected)
    assert list(ctx.iter(coll, where)) == expected


# -- item 6: integers outside int64, NUL -----------------------------------------------------


class Holder(BaseModel):
    value: Any


@pytest.mark.parametrize(
    "record",
    [
        {"n": 2**63},
        {"n": 2**64 - 1},
        {"n": -(2**63) - 1},
        {"n": 10**40},
        {"deep": {"a": [1, {"b": [2**63]}]}},
        {"model": Holder(value=2**63)},
        {"s": "a\x00b"},
        {"deep": [{"x": ["\x00"]}]},
        {"k\x00": 1},
        {"deep": {"a": {"\x00": None}}},
        {"model": Holder(value={"x\x00": 1})},
    ],
)
def test_out_of_range_integers_and_nul_are_refused_at_append(
    ctx: app.Context, record: dict[str, Any]
) -> None:
    ctx.append("notes", [{"id": "ok"}])
    with pytest.raises(app.InvalidInput, match=r"records\[1\]"):
        ctx.append("notes", [{"id": "fine"}, record])
    assert ctx.count("notes") == 1
    with pytest.raises(app.InvalidInput):
        ctx.append(
            "analogies",
            [{"source_domain": "a", "target_domain": "b", "quality_score": 1.0, **record}],
        )


def test_values_at_the_limits_are_kept(ctx: app.Context) -> None:
    rec = {"id": "edge", "hi": 2**63 - 1, "lo": -(2**63), "s": "\\u0000 is not NUL", "u": "\u0001"}
    ctx.append("notes", [rec])
    assert ctx.get("notes", "edge") == rec
    assert ctx.query("notes", {"hi": 2**63 - 1}) == [rec]
    assert ctx.count("notes", {"lo": {"$lte": -(2**63)}}) == 1


@pytest.mark.parametrize(
    "where",
    [
        {"n": 2**63},
        {"n": {"$gt": -(2**63) - 1}},
        {"n": {"$in": [1, 2**64]}},
        {"n": {"$nin": [2**63] * 20}},
        {"$or": [{"n": 2**70}, {"n": 1}]},
        {"$or": [{"n": i} for i in range(20)] + [{"n": 2**63}]},
    ],
)
def test_out_of_range_filters_are_invalid_input(ctx: app.Context, where: Any) -> None:
    ctx.append("notes", [{"id": "a", "n": 1}])
    for call in (
        lambda: ctx.query("notes", where),
        lambda: ctx.count("notes", where),
        lambda: list(ctx.iter("notes", where)),
        lambda: ctx.delete("notes", where=where),
    ):
        with pytest.raises(app.InvalidInput, match="where"):
            call()


def test_offset_and_limit_at_2_63_are_invalid_input(ctx: app.Context, store: app.Store) -> None:
    ctx.append("notes", [{"id": "a"}])
    with pytest.raises(app.InvalidInput, match="offset"):
        ctx.query("notes", offset=2**63)
    with pytest.raises(app.InvalidInput, match="limit"):
        ctx.query("notes", limit=2**63)
    assert ctx.query("notes", offset=2**63 - 1) == []
    with pytest.raises(app.InvalidInput, match="limit"):
        store.workflows.list(limit=2**63)


def test_http_answers_422_for_out_of_range_values(store: app.Store) -> None:
    from fastapi.testclient import TestClient

    from app.service import create_app

    store.context("default", create=True).append("notes", [{"id": "a", "n": 1}])
    with TestClient(
        create_app(store, auth=False),
        raise_server_exceptions=False,
        base_url="http://localhost",
        client=("127.0.0.1", 50000),
    ) as client:
        url = "/contexts/default/collections/notes"
        checks = [
            client.get(f"{url}/records", params={"offset": 2**63}),
            client.get(f"{url}/records", params={"where": '{"n": 9223372036854775808}'}),
            client.post(f"{url}/query", json={"where": {"n": {"$in": [2**64]}}}),
            client.post(f"{url}/query", json={"where": {"n": 1}, "offset": 2**63}),
            client.post(f"{url}/records", json={"records": [{"n": 2**63}]}),
            client.post(f"{url}/records", json={"records": [{"s": "\x00"}]}),
        ]
        for r in checks:
            assert r.status_code == 422, r.text
        big = {"where": {"id": {"$in": [f"x{i}" for i in range(5000)] + ["a"]}}}
        r = client.post(f"{url}/query", json=big)
        assert r.status_code == 200 and r.json()["count"] == 1


def test_v1_values_read_back_and_filters_agree_with_counts(ctx: app.Context) -> None:
    """A v1 log may hold integers beyond int64 and NUL strings: they read back, and a float
    filter near them never makes query raise a false IntegrityError while count answers."""
    ctx.define_collection("old")
    lines = [
        put_line(b'{"id":"u64","n":18446744073709551615}'),
        put_line(b'{"id":"top","n":9223372036854775807}'),
        put_line(b'{"id":"over","n":9223372036854775808}'),
        put_line(b'{"id":"neg","n":-9223372036854775809}'),
        put_line(b'{"id":"nul","s":"a\\u0000b","k\\u0000":1}'),
    ]
    commit, _ = commit_line(lines, "v1-batch", "append", "2025-01-01T00:00:00+00:00")
    with open(ctx.path / "old.jsonl", "ab") as fh:
        fh.write(b"".join(lines) + commit)
    ctx.rebuild_index()
    assert ctx.get("old", "u64")["n"] == 2**64 - 1
    assert ctx.get("old", "over")["n"] == 2**63
    assert ctx.get("old", "nul") == {"id": "nul", "s": "a\x00b", "k\x00": 1}
    near = [2.0**63, 2.0**64, -(2.0**63), 9.223372036854775e18, 1.8446744073709552e19]
    for value in near:
        for where in (
            {"n": value},
            {"n": {"$gte": value}},
            {"n": {"$lt": value}},
            {"n": {"$ne": value}},
            {"n": {"$in": [value, 1.5] * 10}},
            {"n": {"$nin": [value]}},
        ):
            found = ctx.query("old", where)
            assert len(found) == ctx.count("old", where), where
            assert list(ctx.iter("old", where)) == found
    assert {r["id"] for r in ctx.query("old", {"n": 2.0**64})} == {"u64"}
    report = ctx.verify()  # SPEC 22: verify lists them
    listed = sorted(p for p in report.problems if "written before v2" in p)
    assert len(listed) == 4 and len(report.problems) == 4, report.problems
    for rid in ("u64", "over", "neg", "nul"):
        assert any(f"record {rid!r}" in p for p in listed)
    assert "NUL" in next(p for p in listed if "'nul'" in p)
    ctx.delete("old", ["u64", "over", "neg", "nul"])
    ctx.compact("old")
    assert ctx.verify().ok


def test_verify_does_not_flag_long_digit_strings_or_int64_bounds(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "1" * 30, "s": "9" * 40, "n": 2**63 - 1, "m": -(2**63)}])
    assert ctx.verify().ok


def test_lone_surrogates_are_invalid_input_everywhere(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "a", "s": "x"}])
    bad = "\ud800"
    for call in (
        lambda: ctx.append("notes", [{"id": "b", "s": bad}]),
        lambda: ctx.append("notes", [{"id": bad}]),
        lambda: ctx.query("notes", {"s": bad}),
        lambda: ctx.count("notes", {"s": {"$in": [bad] * 20}}),
        lambda: ctx.query("notes", {"s": {"$gt": bad}}),
        lambda: ctx.get("notes", bad),
        lambda: ctx.delete("notes", [bad]),
        lambda: ctx.existing("notes", ["a", bad]),
    ):
        with pytest.raises(app.InvalidInput):
            call()
    assert ctx.count("notes") == 1
