"""Property tests of the ``where`` language (SPEC 4) against an independent reference evaluator.

The reference below is written from the semantics stated in ``app/core/filters.py``'s module
docstring (it does not import the library's own evaluator):

- ``{"f": v}`` / ``{"f": {"$eq": v}}``: ``None`` matches a missing or null field; a bool matches
  that bool; a number matches an equal number (never a bool); a string an equal string.
- ``$ne`` is the negation of ``$eq`` (so it matches a missing field).
- ``$gt/$gte/$lt/$lte`` take a number or a string and match only fields of the same kind.
- ``$in`` matches when ``$eq`` matches one of the listed scalars; ``$nin`` is its negation.
- ``$and`` / ``$or`` take non-empty lists of filters; several keys in one dict are ANDed.
- Field names are dotted paths into nested objects.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app

# --------------------------------------------------------------------------- reference --

MISSING = object()


def ref_get(record: dict[str, Any], path: str) -> Any:
    cur: Any = record
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return MISSING
        cur = cur[part]
    return cur


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def ref_eq(actual: Any, value: Any) -> bool:
    if value is None:
        return actual is MISSING or actual is None
    if isinstance(value, bool):
        return isinstance(actual, bool) and actual == value
    if isinstance(value, str):
        return isinstance(actual, str) and actual == value
    return is_number(actual) and actual == value


def ref_cmp(actual: Any, op: str, value: Any) -> bool:
    if isinstance(value, str):
        if not isinstance(actual, str):
            return False
    elif not is_number(actual):
        return False
    return {
        "$gt": actual > value,
        "$gte": actual >= value,
        "$lt": actual < value,
        "$lte": actual <= value,
    }[op]


def ref_field(actual: Any, cond: Any) -> bool:
    if not isinstance(cond, dict):
        return ref_eq(actual, cond)
    results = []
    for op, value in cond.items():
        if op == "$eq":
            results.append(ref_eq(actual, value))
        elif op == "$ne":
            results.append(not ref_eq(actual, value))
        elif op == "$in":
            results.append(any(ref_eq(actual, v) for v in value))
        elif op == "$nin":
            results.append(not any(ref_eq(actual, v) for v in value))
        else:
            results.append(ref_cmp(actual, op, value))
    return all(results)


def ref_match(record: dict[str, Any], where: dict[str, Any]) -> bool:
    results = []
    for key, cond in where.items():
        if key == "$and":
            results.append(all(ref_match(record, c) for c in cond))
        elif key == "$or":
            results.append(any(ref_match(record, c) for c in cond))
        else:
            results.append(ref_field(ref_get(record, key), cond))
    return all(results)


# --------------------------------------------------------------------------- strategies -

ALPHABET = ["a", "b", "B", "z", "0", "1", " ", "é", "ß", "中", "😀", "[", "{", '"', "\\", "'"]
SPECIAL_STRINGS = ["", "1", "0", "true", "false", "null", "[1]", '{"a":1}', "[]", "{}", "a", "b"]

# small domains (so that filters and records meet often) plus occasional wide values
strings = st.one_of(
    st.sampled_from(SPECIAL_STRINGS),
    st.sampled_from(SPECIAL_STRINGS),
    st.text(alphabet=st.sampled_from(ALPHABET), max_size=4),
)
ints = st.one_of(st.integers(-2, 2), st.integers(-2, 2), st.integers(-(2**40), 2**40))
floats = st.one_of(
    st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.5, 2.0, 1e-9, 1e15]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, strings)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), scalars, max_size=2),
)
FIELDS = ["a", "b", "n.a", "n.b", "n.n.a"]


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 25))
    out = []
    for i in range(n):
        rec: dict[str, Any] = {"id": f"r{i}"}
        for key in ("a", "b"):
            if draw(st.booleans()):
                rec[key] = draw(values)
        shape = draw(st.integers(0, 3))
        if shape == 1:
            rec["n"] = draw(values)  # sometimes not an object at all
        elif shape >= 2:
            inner: dict[str, Any] = {}
            for key in ("a", "b"):
                if draw(st.booleans()):
                    inner[key] = draw(values)
            if shape == 3:
                inner["n"] = {"a": draw(values)} if draw(st.booleans()) else draw(scalars)
            rec["n"] = inner
        out.append(rec)
    return out


range_value = st.one_of(ints, floats, strings)


@st.composite
def conditions(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(scalars)  # plain equality
    ops = draw(
        st.lists(
            st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"]),
            min_size=1,
            max_size=2,
            unique=True,
        )
    )
    cond: dict[str, Any] = {}
    for op in ops:
        if op in ("$eq", "$ne"):
            cond[op] = draw(scalars)
        elif op in ("$in", "$nin"):
            cond[op] = draw(st.lists(scalars, max_size=4))
        else:
            cond[op] = draw(range_value)
    return cond


def filters(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    field_filter = st.dictionaries(st.sampled_from(FIELDS), conditions(), min_size=1, max_size=2)
    if depth == 0:
        return field_filter
    sub = st.lists(filters(depth - 1), min_size=1, max_size=3)
    logical = st.one_of(
        st.builds(lambda subs: {"$and": subs}, sub),
        st.builds(lambda subs: {"$or": subs}, sub),
        st.builds(lambda f, subs: {**f, "$or": subs}, field_filter, sub),
    )
    return st.one_of(field_filter, logical)


# --------------------------------------------------------------------------- tests ------


@pytest.fixture(scope="module")
def fctx() -> Iterator[app.Context]:
    with tempfile.TemporaryDirectory() as tmp, app.open_store(Path(tmp) / "store") as store:
        yield store.context("filters")


_names = (f"c{i}" for i in itertools.count())

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(data=records(), where=filters(), indexed=st.booleans(), split=st.integers(0, 25))
def test_query_and_count_match_reference(
    fctx: app.Context, data: list[dict[str, Any]], where: dict[str, Any], indexed: bool, split: int
) -> None:
    coll = next(_names)
    if indexed:  # expression indexes must not change any answer
        fctx.define_collection(coll, indexes=["a", ("n.a", "b"), "n.n.a"])
    if data:
        fctx.append(coll, data[:split])
        fctx.append(coll, data[split:])
    expected = [r for r in data if ref_match(r, where)]
    assert fctx.query(coll, where) == expected
    assert fctx.count(coll, where) == len(expected)
    assert list(fctx.iter(coll, where)) == expected


@SETTINGS
@given(data=records(), where=filters(depth=1))
def test_delete_where_removes_exactly_the_matches(
    fctx: app.Context, data: list[dict[str, Any]], where: dict[str, Any]
) -> None:
    coll = next(_names)
    fctx.append(coll, data)
    doomed = [r for r in data if ref_match(r, where)]
    assert fctx.delete(coll, where=where) == len(doomed)
    assert fctx.query(coll) == [r for r in data if not ref_match(r, where)]


@SETTINGS
@given(data=records(), where=filters(depth=1), limit=st.integers(0, 30), offset=st.integers(0, 30))
def test_limit_offset_slice_the_matches(
    fctx: app.Context, data: list[dict[str, Any]], where: dict[str, Any], limit: int, offset: int
) -> None:
    coll = next(_names)
    fctx.append(coll, data)
    expected = [r for r in data if ref_match(r, where)]
    assert fctx.query(coll, where, limit=limit, offset=offset) == expected[offset:][:limit]


@SETTINGS
@given(
    data=records(),
    where=filters(depth=1),
    field=st.sampled_from(["a", "b", "n.a"]),
    desc=st.booleans(),
)
def test_order_by_numbers_matches_sorted_reference(
    fctx: app.Context, data: list[dict[str, Any]], where: dict[str, Any], field: str, desc: bool
) -> None:
    """Ordering over records whose sort field is a number (the well-defined case)."""
    coll = next(_names)
    numeric = [r for r in data if is_number(ref_get(r, field))]
    fctx.append(coll, numeric)
    expected = [r for r in numeric if ref_match(r, where)]
    got = fctx.query(coll, where, order_by=("-" if desc else "") + field)
    assert sorted(got, key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"])
    keys = [ref_get(r, field) for r in got]
    assert keys == sorted(keys, reverse=desc)


@SETTINGS
@given(
    op=st.text(alphabet=st.sampled_from(list("$abcdegilmnoqrtxz")), min_size=1, max_size=6),
    value=scalars,
)
def test_unknown_operators_are_invalid_input(fctx: app.Context, op: str, value: Any) -> None:
    known = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"}
    if op in known:
        return
    with pytest.raises(app.InvalidInput):
        fctx.query("anything", {"a": {op: value}})
    if op.startswith("$") and op not in ("$and", "$or"):
        with pytest.raises(app.InvalidInput):
            fctx.query("anything", {op: value})
