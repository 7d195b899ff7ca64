"""The ``where`` language compiled to PostgreSQL (app/backends/postgres/filters.py) against a
REAL PostgreSQL server: every answer (ids and their order) must equal the reference evaluator
of tests/test_filters.py, the library's own ``predicate``, and, for ``order_by``, the SQLite
backend itself.

The server: ``CTXSTORE_TEST_PG_URL`` when set (the services helper's ``make test``), else a
throwaway server this module starts (initdb as the ``postgres`` user when running as root,
stopped by its PID at the end); skipped with the reason when no server binaries exist.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_filters import SETTINGS, filters, records, ref_match, scalars

import app
from app.backends.postgres.filters import compile_order_pg, compile_where_pg
from app.core.filters import compile_where, predicate

psycopg = pytest.importorskip("psycopg")
from psycopg.types.json import Jsonb  # noqa: E402

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def _bindir() -> Path | None:
    found = sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")), reverse=True)
    for d in found:
        if (d / "initdb").exists():
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def _throwaway_server() -> Iterator[str]:
    bindir = _bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin); set CTXSTORE_TEST_PG_URL"
            " or run `make test` (it starts one)"
        )
    # not under tmp_path_factory: its 0700 parent is closed to the postgres user
    root = Path(tempfile.mkdtemp(prefix="ctxstore-pgwhere-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for p in (root, data):
            os.chown(p, user.pw_uid, user.pw_gid)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    pid = None
    try:
        subprocess.run(
            _as_postgres(
                [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
                + ["-E", "UTF8", "--locale=C.UTF-8"]
            ),
            check=True,
            capture_output=True,
            env=env,
        )
        subprocess.run(
            _as_postgres(
                [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log")]
                + ["-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"]
                + ["start"]
            ),
            check=True,
            capture_output=True,
            env=env,
        )
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)  # fast shutdown
            for _ in range(200):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    url = os.environ.get("CTXSTORE_TEST_PG_URL")
    with contextlib.ExitStack() as stack:
        if not url:
            url = stack.enter_context(_throwaway_server())
        connection = psycopg.connect(url, autocommit=True)
        stack.callback(connection.close)
        schema = f"pgwhere_{os.getpid()}"
        connection.execute(f'CREATE SCHEMA "{schema}"')
        stack.callback(connection.execute, f'DROP SCHEMA "{schema}" CASCADE')
        connection.execute(f'SET search_path TO "{schema}"')
        connection.execute("CREATE TABLE recs (seq bigint PRIMARY KEY, doc jsonb NOT NULL)")
        yield connection


def load(conn: Any, data: list[dict[str, Any]]) -> None:
    conn.execute("TRUNCATE recs")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO recs (seq, doc) VALUES (%s, %s)",
            [(i, Jsonb(r)) for i, r in enumerate(data)],
        )


def select_ids(conn: Any, where: Any, order_by: Any = None) -> list[str]:
    sql, params = compile_where_pg(where)
    order = compile_order_pg(order_by)
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


def test_long_lists_cost_two_parameters(conn: Any) -> None:
    data = [{"id": f"r{i}", "a": v} for i, v in enumerate([0, 1, True, False, None, "x", 2.5])]
    data.append({"id": "missing"})
    load(conn, data)
    values: list[Any] = [*range(3, 5000), "x", 2.5, None, False]
    where = {"a": {"$in": values}}
    sql, params = compile_where_pg(where)
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
