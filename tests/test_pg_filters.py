"""The ``where`` language compiled to PostgreSQL (app/backends/postgres/filters.py) against a
REAL PostgreSQL server: every answer (ids and their order) must equal the reference evaluator
of tests/test_filters.py, the library's own ``predicate``, and, for ``order_by``, the SQLite
backend itself.

The server: the ``pg_url`` fixture of tests/backend_servers.py (a fresh database for this
module; ``make test`` starts the server, see that module for running by hand).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_filters import SETTINGS, filters, records, ref_match, scalars

import app
from app.backends.postgres.filters import compile_order_pg, compile_where_pg, numeric_fields
from app.core.filters import compile_where, predicate


@pytest.fixture(scope="module")
def conn(pg_url: str) -> Iterator[Any]:
    """A connection to a database made from this module's fresh one (tests/backend_servers.py)
    whose default collation is ICU ``en-US`` (where ``"a" < "B"``), so that bytewise string
    comparison is really exercised; the module's database itself when ICU is missing."""
    import psycopg  # the ``postgres`` extra
    from psycopg import sql

    base, _, name = pg_url.rpartition("/")
    icu = f"{name}_icu"[:63]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        try:
            admin.execute(
                sql.SQL(
                    "CREATE DATABASE {} LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                    " TEMPLATE template0"
                ).format(sql.Identifier(icu))
            )
            url = f"{base}/{icu}"
        except psycopg.Error:
            icu, url = "", pg_url
        try:
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("CREATE TABLE recs (seq bigint PRIMARY KEY, doc jsonb NOT NULL)")
                yield connection
        finally:
            if icu:
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(icu)))


def load(conn: Any, data: list[dict[str, Any]]) -> None:
    from psycopg.types.json import Jsonb

    conn.execute("TRUNCATE recs")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO recs (seq, doc) VALUES (%s, %s)",
            [(i, Jsonb(r)) for i, r in enumerate(data)],
        )


def select_ids(conn: Any, where: Any, order_by: Any = None) -> list[str]:
    sql, params = compile_where_pg(where)
    order = compile_order_pg(order_by, numbers=numeric_fields(where))  # as PgRecords orders
    rows = conn.execute(
        f"SELECT doc ->> 'id' FROM recs WHERE {sql} ORDER BY {order}", params
    ).fetchall()
    return [r[0] for r in rows]


def count(conn: Any, where: Any) -> int:
    sql, params = compile_where_pg(where)
    return int(conn.execute(f"SELECT count(*) FROM recs WHERE {sql}", params).fetchone()[0])


# --------------------------------------------------------------------------- properties -


@SETTINGS
@given(data=records(), where=filters())
def test_pg_matches_reference_and_predicate(
    conn: Any, data: list[dict[str, Any]], where: dict[str, Any]
) -> None:
    load(conn, data)
    expected = [r["id"] for r in data if ref_match(r, where)]
    assert [r["id"] for r in data if predicate(where)(r)] == expected
    assert select_ids(conn, where) == expected
    assert count(conn, where) == len(expected)


@SETTINGS
@given(data=records(), where=filters(depth=1), desc=st.booleans())
def test_pg_sql_is_never_null(
    conn: Any, data: list[dict[str, Any]], where: dict[str, Any], desc: bool
) -> None:
    """The compiled expression is TRUE or FALSE for every row (so NOT of it is the complement,
    as ``$ne``/``$nin`` need)."""
    load(conn, data)
    sql, params = compile_where_pg(where)
    nulls = conn.execute(f"SELECT count(*) FROM recs WHERE ({sql}) IS NULL", params).fetchone()
    assert nulls[0] == 0
    rest = conn.execute(f"SELECT doc ->> 'id' FROM recs WHERE NOT ({sql}) ORDER BY seq", params)
    assert [r[0] for r in rest] == [r["id"] for r in data if not ref_match(r, where)]


@st.composite
def long_list_filters(draw: st.DrawFn) -> dict[str, Any]:
    """Lists past LARGE_LIST: the array-parameter ``$in`` and the merged ``$and``/``$or``."""
    field = draw(st.sampled_from(["a", "b", "n.a"]))
    vals = draw(st.lists(scalars, min_size=16, max_size=40))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return {field: {"$in": vals}}
    if kind == 1:
        return {field: {"$nin": vals}}
    if kind == 2:
        return {"$or": [{field: v} for v in vals] + [draw(filters(depth=0))]}
    return {"$and": [{field: {"$ne": v}} for v in vals] + [draw(filters(depth=0))]}


@SETTINGS
@given(data=records(), where=long_list_filters())
def test_pg_long_lists_match_reference(
    conn: Any, data: list[dict[str, Any]], where: dict[str, Any]
) -> None:
    load(conn, data)
    assert select_ids(conn, where) == [r["id"] for r in data if ref_match(r, where)]


_sqlite_names = (f"o{i}" for i in itertools.count())


@pytest.fixture(scope="module")
def sqlite_ctx() -> Iterator[app.Context]:
    with tempfile.TemporaryDirectory() as tmp, app.open_store(Path(tmp) / "store") as store:
        yield store.context("pgorder")


ORDER_FIELDS = ["a", "b", "n.a"]


@st.composite
def scalar_records(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Records whose sort fields are scalars, missing, or (n) not an object."""
    out = []
    for i in range(draw(st.integers(0, 25))):
        rec: dict[str, Any] = {"id": f"r{i}"}
        for key in ("a", "b"):
            if draw(st.booleans()):
                rec[key] = draw(scalars)
        if draw(st.booleans()):
            rec["n"] = {"a": draw(scalars)} if draw(st.booleans()) else draw(scalars)
        out.append(rec)
    return out


@SETTINGS
@given(
    data=scalar_records(),
    where=filters(depth=1),
    keys=st.lists(st.sampled_from(ORDER_FIELDS), min_size=1, max_size=2, unique=True),
    desc=st.lists(st.booleans(), min_size=2, max_size=2),
)
def test_pg_order_equals_sqlite_backend(
    conn: Any,
    sqlite_ctx: app.Context,
    data: list[dict[str, Any]],
    where: dict[str, Any],
    keys: list[str],
    desc: list[bool],
) -> None:
    """Mixed kinds (missing, null, booleans, numbers, strings) sort exactly as SQLite sorts
    them, ties in commit order."""
    order = [("-" if d else "") + k for k, d in zip(keys, desc, strict=False)]
    coll = next(_sqlite_names)
    sqlite_ctx.append(coll, data)
    expected = [r["id"] for r in sqlite_ctx.query(coll, where, order_by=order)]
    load(conn, data)
    assert select_ids(conn, where, order) == expected


# --------------------------------------------------------------------------- examples ---


def test_numeric_fields_are_those_a_range_keeps_to_numbers() -> None:
    assert numeric_fields({"q": {"$gte": 1, "$lt": 2.5}, "d": "x"}) == {"q"}
    assert numeric_fields({"$and": [{"q": {"$gt": 0}}, {"r": {"$lte": 3}}]}) == {"q", "r"}
    assert numeric_fields({"$or": [{"q": {"$gt": 0}}, {"q": {"$lt": -5}}]}) == frozenset()
    assert numeric_fields({"q": {"$gt": "a"}, "r": {"$ne": 1}, "s": 3}) == frozenset()
    assert numeric_fields({"q": {"$gt": True}}) == frozenset()
    assert numeric_fields(None) == frozenset()


def test_an_indexed_equality_range_and_order_use_the_index(conn: Any) -> None:
    """The compiled forms are indexable: with an expression index on (domain, quality), a
    domain + quality range + order by quality plan is an index scan, not a full sort."""
    conn.execute(
        "CREATE INDEX IF NOT EXISTS recs_dq ON recs"
        " ((doc -> 'domain'::text), (doc -> 'quality'::text))"
    )
    load(conn, [{"id": f"r{i}", "domain": f"d{i % 10}", "quality": i % 97} for i in range(5000)])
    conn.execute("ANALYZE recs")
    where = {"domain": "d3", "quality": {"$gte": 10, "$lte": 60}}
    sql, params = compile_where_pg(where)
    order = compile_order_pg("-quality", numbers=numeric_fields(where))
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            f"EXPLAIN SELECT doc FROM recs WHERE {sql} ORDER BY {order} LIMIT 100", params
        ).fetchall()
    )
    assert "recs_dq" in plan, plan
    expected = sorted(
        (r for r in range(5000) if r % 10 == 3 and 10 <= r % 97 <= 60),
        key=lambda i: (-(i % 97), -i),
    )[:100]
    assert select_ids(conn, where, "-quality")[:100] == [f"r{i}" for i in expected]


def test_long_lists_cost_two_parameters(conn: Any) -> None:
    data = [{"id": f"r{i}", "a": v} for i, v in enumerate([0, 1, True, False, None, "x", 2.5])]
    data.append({"id": "missing"})
    load(conn, data)
    values: list[Any] = [*range(3, 5000), "x", 2.5, None, False]
    where = {"a": {"$in": values}}
    _sql, params = compile_where_pg(where)
    assert len(params) == 2  # strings and numbers as one array each (null/false spliced)
    assert select_ids(conn, where) == ["r3", "r4", "r5", "r6", "missing"]
    assert select_ids(conn, {"a": {"$nin": values}}) == ["r0", "r1", "r2"]
    ors = {"$or": [{"a": v} for v in values]}
    assert select_ids(conn, ors) == ["r3", "r4", "r5", "r6", "missing"]
    ands = {"$and": [{"a": {"$ne": v}} for v in values]}
    assert select_ids(conn, ands) == ["r0", "r1", "r2"]


def test_integers_beyond_float_precision_compare_exactly(conn: Any) -> None:
    big = 2**62  # float(big) == float(big + 1): a float comparison could not tell them apart
    load(conn, [{"id": "big", "a": big + 1}, {"id": "base", "a": big}, {"id": "f", "a": 0.5}])
    assert select_ids(conn, {"a": big + 1}) == ["big"]
    assert select_ids(conn, {"a": big}) == ["base"]
    assert select_ids(conn, {"a": {"$gt": big}}) == ["big"]
    assert select_ids(conn, {"a": {"$lt": big + 1, "$gt": 1}}) == ["base"]
    assert select_ids(conn, {"a": {"$in": [big + 1, *range(20)]}}) == ["big"]
    assert select_ids(conn, {"a": {"$nin": [big + 1, *range(20)]}}) == ["base", "f"]
    assert select_ids(conn, {}, "-a") == ["big", "base", "f"]


def test_strings_compare_bytewise(conn: Any) -> None:
    (a_before_b,) = conn.execute("SELECT 'a' < 'B'").fetchone()
    print("database collation puts 'a' before 'B':", a_before_b)  # True with ICU en-US
    words = ["b", "B", "a", "é", "z", "中", "😀", "ß", ""]
    load(conn, [{"id": w, "s": w} for w in words])
    assert select_ids(conn, {}, "s") == sorted(words)  # code point order = UTF-8 byte order
    assert select_ids(conn, {"s": {"$gt": "z"}}) == [w for w in words if w > "z"]


def test_numbers_never_equal_booleans_and_paths_never_index_arrays(conn: Any) -> None:
    load(
        conn,
        [
            {"id": "t", "a": True},
            {"id": "one", "a": 1},
            {"id": "arr", "a": [7], "n": [{"a": 1}]},
            {"id": "obj", "n": {"0": 7, "a": 1.0}},
        ],
    )
    assert select_ids(conn, {"a": 1}) == ["one"]
    assert select_ids(conn, {"a": True}) == ["t"]
    assert select_ids(conn, {"a": {"$gte": 0}}) == ["one"]
    assert select_ids(conn, {"a.0": 7}) == []
    assert select_ids(conn, {"n.0": 7}) == ["obj"]
    assert select_ids(conn, {"n.a": 1}) == ["obj"]


def test_values_are_bound_never_spliced(conn: Any) -> None:
    evil = "x'); DROP TABLE recs; --"
    load(conn, [{"id": "e", "a": evil}, {"id": "p", "a": "100%s"}])
    sql, params = compile_where_pg({"a": {"$in": [evil, "100%s"]}})
    assert evil not in sql and params == [evil, "100%s"]
    assert select_ids(conn, {"a": {"$in": [evil, "100%s"]}}) == ["e", "p"]
    assert select_ids(conn, {"a": {"$gte": evil}}) == ["e"]


@pytest.mark.parametrize(
    "where",
    [
        {"a": {"$exists": True}},  # not part of the language (SQLite refuses it too)
        {"a": {"$regex": "x"}},
        {"$nor": [{"a": 1}]},
        {"a": {}},
        {"a": {"$in": 3}},
        {"a": {"$gt": None}},
        {"a": 2**63},
        {"a": float("nan")},
        {"bad path!": 1},
        {"$or": []},
    ],
)
def test_malformed_filters_are_invalid_input_like_sqlite(where: dict[str, Any]) -> None:
    with pytest.raises(app.InvalidInput):
        compile_where_pg(where)
    with pytest.raises(app.InvalidInput):
        compile_where(where)


def test_column_names_are_validated() -> None:
    with pytest.raises(app.InvalidInput):
        compile_where_pg({"a": 1}, column='doc"; --')
    with pytest.raises(app.InvalidInput):
        compile_order_pg("a", seq="seq desc")
