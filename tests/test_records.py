"""SPEC section 4 (record collections), sentence by sentence, through the public API.

The only file internals used are those SPEC names in its layout: a collection's log is
``contexts/<context>/<collection>.jsonl`` and the index ``contexts/<context>/<context>.sqlite``
(used to check that a failed call wrote nothing, and that ``define_collection`` indexes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel
from recdata import analogy

import app

# --------------------------------------------------------------------------- helpers ----


def log_path(ctx: app.Context, collection: str) -> Path:
    return Path(ctx.path) / f"{collection}.jsonl"


def log_bytes(ctx: app.Context, collection: str) -> bytes:
    p = log_path(ctx, collection)
    return p.read_bytes() if p.exists() else b""


def canonical(record: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, compact, UTF-8) computed independently of the library."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def run_py(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(Path(__file__).resolve().parent.parent),
    )


def assert_nothing_written(ctx: app.Context, collection: str, count: int, raw: bytes) -> None:
    assert ctx.count(collection) == count
    assert log_bytes(ctx, collection) == raw


class Paper(BaseModel):
    """A user schema for ``define_collection`` (module level: importable by id)."""

    title: str
    year: int


class Note(BaseModel):
    id: str
    text: str
    tags: list[str] = []


# --------------------------------------------------------------------------- append -----


def test_append_receipt_fields(ctx: app.Context) -> None:
    before = dt.datetime.now(dt.UTC)
    r = ctx.append("analogies", [analogy(i) for i in range(5)])
    after = dt.datetime.now(dt.UTC)
    assert isinstance(r, app.BatchReceipt)
    assert isinstance(r.batch_id, str) and r.batch_id
    assert r.count == 5
    assert r.duplicate is False
    assert isinstance(r.sha256, str) and len(r.sha256) == 64
    int(r.sha256, 16)
    at = dt.datetime.fromisoformat(r.committed_at)
    assert at.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= at <= after + dt.timedelta(seconds=1)


def test_receipts_differ_per_batch(ctx: app.Context) -> None:
    r1 = ctx.append("notes", [{"id": "a", "v": 1}])
    r2 = ctx.append("notes", [{"id": "b", "v": 2}])
    assert r1.batch_id != r2.batch_id
    assert r1.sha256 != r2.sha256
    assert r2.committed_at >= r1.committed_at


def test_empty_batch(ctx: app.Context) -> None:
    r = ctx.append("notes", [])
    assert r.count == 0
    assert ctx.count("notes") == 0


def test_generated_ids_are_unique_nonempty_strings(ctx: app.Context) -> None:
    ctx.append("notes", [{"text": f"t{i}"} for i in range(200)])
    got = ctx.query("notes")
    assert len(got) == 200
    ids = [r["id"] for r in got]
    assert all(isinstance(i, str) and 0 < len(i) <= 256 for i in ids)
    assert len(set(ids)) == 200
    # the generated id is what get() finds, and the rest is what was given
    for r in got[:20]:
        assert ctx.get("notes", r["id"]) == r
    assert sorted(r["text"] for r in got) == sorted(f"t{i}" for i in range(200))


def test_generated_ids_unique_across_batches(ctx: app.Context) -> None:
    for _ in range(5):
        ctx.append("notes", [{"k": 1} for _ in range(20)])
    assert len({r["id"] for r in ctx.query("notes")}) == 100


def test_given_ids_are_kept(ctx: app.Context) -> None:
    recs = [{"id": f"my-id-{i}", "n": i} for i in range(10)]
    recs.append({"id": "ünïcødé/ and spaces", "n": 99})
    recs.append({"id": "x" * 256, "n": 100})
    ctx.append("notes", recs)
    for rec in recs:
        assert ctx.get("notes", rec["id"]) == rec


@pytest.mark.parametrize("bad_id", [5, 1.5, None, True, "", "x" * 257, ["a"], {"a": 1}, b"id"])
def test_invalid_ids_rejected_nothing_written(ctx: app.Context, bad_id: object) -> None:
    ctx.append("notes", [{"id": "ok"}])
    raw = log_bytes(ctx, "notes")
    with pytest.raises(app.InvalidInput):
        ctx.append("notes", [{"id": "fine"}, {"id": bad_id, "v": 1}])
    assert_nothing_written(ctx, "notes", 1, raw)
    with pytest.raises(app.NotFoundError):
        ctx.get("notes", "fine")


@pytest.mark.parametrize(
    "bad_value",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        {"nested": [1, float("nan")]},
        [[[float("inf")]]],
        {1, 2},
        b"bytes",
        object(),
        1 + 2j,
        decimal.Decimal("1.5"),
        dt.date(2024, 1, 1),
        dt.time(12, 0),
        10**5000 - 1,
        -(10**5000),
        2**64,
        {1: "int key"},
        {("t",): "tuple key"},
    ],
    ids=lambda v: type(v).__name__,
)
def test_non_json_values_rejected_nothing_written(ctx: app.Context, bad_value: object) -> None:
    ctx.append("notes", [{"id": "ok", "v": 0}])
    raw = log_bytes(ctx, "notes")
    with pytest.raises(app.InvalidInput) as ei:
        ctx.append("notes", [{"id": "good", "v": 1}, {"id": "bad", "v": bad_value}])
    assert len(str(ei.value)) < 500
    assert_nothing_written(ctx, "notes", 1, raw)
    for rid in ("good", "bad"):
        with pytest.raises(app.NotFoundError):
            ctx.get("notes", rid)


@dataclasses.dataclass
class _DC:
    x: int


@pytest.mark.parametrize("bad_value", [uuid.uuid4(), _DC(1)], ids=lambda v: type(v).__name__)
def test_other_python_types_rejected(ctx: app.Context, bad_value: object) -> None:
    """SPEC 4: strict JSON plus datetimes; "anything else raises InvalidInput" (no silent
    conversion of UUIDs or dataclasses)."""
    ctx.append("notes", [{"id": "ok", "v": 0}])
    raw = log_bytes(ctx, "notes")
    with pytest.raises(app.InvalidInput):
        ctx.append("notes", [{"id": "bad", "v": bad_value}])
    assert_nothing_written(ctx, "notes", 1, raw)


def test_deep_nesting_rejected(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "ok"}])
    raw = log_bytes(ctx, "notes")
    for depth in (1000, 100_000):
        deep: Any = "leaf"
        for _ in range(depth):
            deep = {"d": deep}
        with pytest.raises(app.InvalidInput):
            ctx.append("notes", [{"id": "deep", "v": deep}])
        deep_list: Any = 0
        for _ in range(depth):
            deep_list = [deep_list]
        with pytest.raises(app.InvalidInput):
            ctx.append("notes", [{"id": "deepl", "v": deep_list}])
    assert_nothing_written(ctx, "notes", 1, raw)


def test_moderate_nesting_accepted(ctx: app.Context) -> None:
    nested: Any = "leaf"
    for _ in range(20):
        nested = {"d": nested}
    ctx.append("notes", [{"id": "n", "v": nested}])
    assert ctx.get("notes", "n")["v"] == nested


def test_records_must_be_mappings(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "ok"}])
    raw = log_bytes(ctx, "notes")
    for bad in ([["id", "x"]], ["string"], [42], [None], "not-an-iterable-of-records", 7):
        with pytest.raises(app.InvalidInput):
            ctx.append("notes", bad)  # type: ignore[arg-type]
    with pytest.raises(app.InvalidInput):
        ctx.append("notes", {"id": "a mapping, not a list of them"})  # type: ignore[arg-type]
    assert_nothing_written(ctx, "notes", 1, raw)


def test_generator_of_records_accepted(ctx: app.Context) -> None:
    r = ctx.append("notes", ({"id": str(i), "i": i} for i in range(50)))
    assert r.count == 50
    assert [x["i"] for x in ctx.query("notes")] == list(range(50))


def test_json_values_roundtrip(ctx: app.Context) -> None:
    rec = {
        "id": "all",
        "s": 'text with "quotes", \\ and \n newline \u2603 \U0001f600',
        "i": -(2**62),
        "big": 2**63 - 1,
        "f": 0.1,
        "neg": -1.5e-7,
        "t": True,
        "fa": False,
        "n": None,
        "l": [1, "two", None, [3.5], {"k": "v"}],
        "o": {"nested": {"deeper": [True, False]}},
        "empty_l": [],
        "empty_o": {},
    }
    ctx.append("notes", [rec])
    assert ctx.get("notes", "all") == rec
    assert ctx.query("notes") == [rec]


def test_tuples_stored_as_lists(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "t", "v": (1, 2, (3,))}])
    assert ctx.get("notes", "t")["v"] == [1, 2, [3]]


def test_datetimes_stored_as_iso_utc_strings(ctx: app.Context) -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    minus5 = dt.timezone(dt.timedelta(hours=-5, minutes=-30))
    values = {
        "utc": dt.datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC),
        "plus2": dt.datetime(2024, 3, 1, 0, 15, tzinfo=plus2),
        "minus5": dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=minus5),
    }
    rec: dict[str, Any] = {"id": "d", **values, "inlist": [values["plus2"]]}
    rec["nested"] = {"when": values["minus5"]}
    ctx.append("notes", [rec])
    got = ctx.get("notes", "d")
    for key, original in values.items():
        assert isinstance(got[key], str)
        parsed = dt.datetime.fromisoformat(got[key])
        assert parsed == original  # same instant
        assert parsed.utcoffset() == dt.timedelta(0)  # expressed in UTC
    assert dt.datetime.fromisoformat(got["inlist"][0]) == values["plus2"]
    assert dt.datetime.fromisoformat(got["inlist"][0]).utcoffset() == dt.timedelta(0)
    assert dt.datetime.fromisoformat(got["nested"]["when"]) == values["minus5"]
    assert dt.datetime.fromisoformat(got["nested"]["when"]).utcoffset() == dt.timedelta(0)


def test_iso_dates_compare_as_strings(ctx: app.Context) -> None:
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    times = [base + dt.timedelta(days=d, hours=d) for d in range(30)]
    ctx.append("events", [{"id": str(i), "at": t} for i, t in enumerate(times)])
    stored = {r["id"]: r["at"] for r in ctx.query("events")}
    pivot = stored["10"]
    got = {r["id"] for r in ctx.query("events", {"at": {"$gte": pivot}})}
    assert got == {i for i, s in stored.items() if s >= pivot}
    assert got == {str(i) for i, t in enumerate(times) if t >= times[10]}
    ordered = [r["id"] for r in ctx.query("events", order_by="-at")]
    assert ordered == [str(i) for i in reversed(range(30))]


def test_pydantic_models_accepted(ctx: app.Context) -> None:
    notes = [Note(id=f"n{i}", text=f"text {i}", tags=["a", str(i)]) for i in range(3)]
    r = ctx.append("notes", notes)
    assert r.count == 3
    for n in notes:
        got = ctx.get("notes", n.id)
        assert type(got) is dict
        assert got == n.model_dump()
    # pydantic model without id gets one generated; models and dicts can be mixed
    ctx.append("papers", [Paper(title="t", year=2020), {"title": "u", "year": 2021}])
    got = ctx.query("papers", order_by="year")
    assert [(p["title"], p["year"]) for p in got] == [("t", 2020), ("u", 2021)]
    assert all(isinstance(p["id"], str) and p["id"] for p in got)


def test_builtin_schema_applies_to_pydantic_model_input(ctx: app.Context) -> None:
    class Loose(BaseModel):
        source_domain: str
        target_domain: str
        quality_score: float

    with pytest.raises(app.InvalidInput):
        ctx.append("analogies", [Loose(source_domain="a", target_domain="b", quality_score=2.0)])
    assert ctx.count("analogies") == 0
    ctx.append("analogies", [Loose(source_domain="a", target_domain="b", quality_score=0.25)])
    assert ctx.count("analogies") == 1


def test_caller_mutation_after_append_changes_nothing(ctx: app.Context) -> None:
    rec = {"id": "m", "list": [1, 2], "obj": {"k": "v"}}
    ctx.append("notes", [rec])
    rec["list"].append(3)
    rec["obj"]["k"] = "changed"
    rec["new"] = True
    assert ctx.get("notes", "m") == {"id": "m", "list": [1, 2], "obj": {"k": "v"}}


def test_append_does_not_modify_input(ctx: app.Context) -> None:
    rec: dict[str, Any] = {"text": "no id"}
    ctx.append("notes", [rec])
    assert rec == {"text": "no id"}


# --------------------------------------------------------------------------- idempotency


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


# --------------------------------------------------------------------------- upsert -----


def test_upsert_and_history(ctx: app.Context) -> None:
    v1 = {"id": "r", "text": "one", "n": 1}
    v2 = {"id": "r", "text": "two", "n": 2}
    v3 = {"id": "r", "text": "three", "extra": [1]}
    receipts = [
        ctx.append("notes", [v1, {"id": "other", "n": 0}]),
        ctx.append("notes", [v2]),
        ctx.append("notes", [v3]),
    ]
    assert ctx.get("notes", "r") == v3
    assert ctx.count("notes") == 2
    assert [r["id"] for r in ctx.query("notes")].count("r") == 1
    assert ctx.query("notes", {"id": "r"}) == [v3]
    hist = ctx.history("notes", "r")
    assert len(hist) == 3
    for version, data, receipt in zip(hist, [v1, v2, v3], receipts, strict=True):
        assert isinstance(version, app.RecordVersion)
        assert version.id == "r"
        assert version.data == data
        assert version.deleted is False
        assert version.batch_id == receipt.batch_id
        assert version.committed_at == receipt.committed_at
        assert version.sha256 == hashlib.sha256(canonical(data)).hexdigest()
    assert len({v.sha256 for v in hist}) == 3


def test_history_content_hash_depends_on_content_only(ctx: app.Context) -> None:
    rec = {"id": "same", "b": 2, "a": [1, {"z": None, "y": "x"}]}
    ctx.append("notes", [rec])
    ctx.append("notes", [{"a": [1, {"y": "x", "z": None}], "b": 2, "id": "same"}])  # key order
    h = ctx.history("notes", "same")
    assert len(h) == 2
    assert h[0].sha256 == h[1].sha256 == hashlib.sha256(canonical(rec)).hexdigest()
    assert h[0].batch_id != h[1].batch_id


def test_upsert_within_one_batch_last_wins(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "d", "v": 1}, {"id": "d", "v": 2}])
    assert ctx.get("notes", "d") == {"id": "d", "v": 2}
    assert ctx.count("notes") == 1
    assert [v.data for v in ctx.history("notes", "d")] == [{"id": "d", "v": 1}, {"id": "d", "v": 2}]


def test_history_of_unknown_record_is_empty(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "a"}])
    assert ctx.history("notes", "zzz") == []
    assert ctx.history("never_created", "a") == []


def test_upsert_changes_commit_order_position(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "a"}, {"id": "b"}, {"id": "c"}])
    ctx.append("notes", [{"id": "a", "v": 2}])
    # "commit order" of the latest versions: a's latest version was committed last
    assert [r["id"] for r in ctx.query("notes")] == ["b", "c", "a"]


# --------------------------------------------------------------------------- copies -----


def test_returned_dicts_are_plain_copies(ctx: app.Context) -> None:
    rec = {"id": "c", "list": [1, {"k": "v"}], "obj": {"inner": [1]}}
    ctx.append("notes", [rec])
    for got in (
        ctx.get("notes", "c"),
        ctx.query("notes")[0],
        next(ctx.iter("notes")),
        ctx.history("notes", "c")[0].data,
    ):
        assert type(got) is dict
        assert got == rec
        got["list"].append(2)
        got["list"][1]["k"] = "mutated"
        got["obj"]["inner"].clear()
        got["new"] = 1
        del got["id"]
    assert ctx.get("notes", "c") == rec
    assert ctx.query("notes") == [rec]
    assert list(ctx.iter("notes")) == [rec]
    assert ctx.history("notes", "c")[0].data == rec


def test_repeated_reads_are_distinct_objects(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "c", "l": [1]}])
    a, b = ctx.get("notes", "c"), ctx.get("notes", "c")
    assert a == b and a is not b and a["l"] is not b["l"]


# --------------------------------------------------------------------------- where ------


def _people() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cities = ["Paris", "Oslo", "Lima", None]
    for i in range(60):
        rec: dict[str, Any] = {
            "id": f"p{i:02d}",
            "age": i % 23,
            "score": (i * 37 % 100) / 10,
            "name": f"name{i % 13}",
            "active": i % 3 == 0,
            "meta": {"source": f"src{i % 4}", "rank": i % 5},
        }
        if cities[i % 4] is not None:
            rec["city"] = cities[i % 4]
        if i % 7 == 0:
            rec["nullable"] = None
        elif i % 7 == 1:
            rec["nullable"] = i
        out.append(rec)
    return out


def _field(rec: dict[str, Any], path: str) -> Any:
    cur: Any = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return "<missing>"
        cur = cur[part]
    return cur


@pytest.fixture
def people(ctx: app.Context) -> list[dict[str, Any]]:
    data = _people()
    ctx.append("people", data[:30])
    ctx.append("people", data[30:])
    return data


def _ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records]


def _check(ctx: app.Context, where: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    got = ctx.query("people", where)
    assert _ids(got) == _ids(expected), where
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


# --------------------------------------------------------------------------- order ------


def _numbers(ctx: app.Context) -> list[dict[str, Any]]:
    # unique (a, b) pairs and unique n, inserted in scrambled order over several batches
    recs = [
        {"id": f"r{i}", "n": (i * 17) % 50, "a": i % 5, "b": f"s{(i * 7) % 10}", "w": i * 0.5}
        for i in range(50)
    ]
    for k in range(0, 50, 10):
        ctx.append("nums", recs[k : k + 10])
    return recs


def test_order_by_asc_desc(ctx: app.Context) -> None:
    recs = _numbers(ctx)
    assert ctx.query("nums", order_by="n") == sorted(recs, key=lambda r: r["n"])
    assert ctx.query("nums", order_by="-n") == sorted(recs, key=lambda r: -r["n"])
    assert ctx.query("nums", order_by="-w") == sorted(recs, key=lambda r: -r["w"])
    assert ctx.query("nums", order_by=["n"]) == sorted(recs, key=lambda r: r["n"])
    assert list(ctx.iter("nums", order_by="-n")) == sorted(recs, key=lambda r: -r["n"])


def test_order_by_list(ctx: app.Context) -> None:
    recs = _numbers(ctx)
    got = ctx.query("nums", order_by=["a", "-b"])
    exp = sorted(sorted(recs, key=lambda r: r["b"], reverse=True), key=lambda r: r["a"])
    # (a, b) is not unique: compare the key sequence, then the set per key
    assert [(r["a"], r["b"]) for r in got] == [(r["a"], r["b"]) for r in exp]
    assert sorted(_ids(got)) == sorted(_ids(recs))
    got2 = ctx.query("nums", order_by=["-a", "n"])
    assert got2 == sorted(recs, key=lambda r: (-r["a"], r["n"]))


def test_default_order_is_commit_order(ctx: app.Context) -> None:
    recs = _numbers(ctx)
    assert ctx.query("nums") == recs
    assert list(ctx.iter("nums")) == recs
    assert ctx.query("nums", {"a": 2}) == [r for r in recs if r["a"] == 2]


def test_order_by_with_where_limit_offset(ctx: app.Context) -> None:
    recs = _numbers(ctx)
    exp = sorted((r for r in recs if r["a"] != 1), key=lambda r: -r["n"])
    assert ctx.query("nums", {"a": {"$ne": 1}}, order_by="-n", limit=7, offset=4) == exp[4:11]


def test_limit_offset(ctx: app.Context) -> None:
    recs = _numbers(ctx)
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
    _numbers(ctx)
    with pytest.raises(app.InvalidInput) as ei:
        ctx.query("nums", **kwargs)
    assert len(str(ei.value)) < 500
    assert ctx.count("nums") == 50


# --------------------------------------------------------------------------- iter/count -


def test_iter_is_lazy_iterator(ctx: app.Context) -> None:
    recs = _numbers(ctx)
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


# --------------------------------------------------------------------------- delete -----


def test_delete_by_ids(ctx: app.Context) -> None:
    recs = [{"id": f"d{i}", "i": i} for i in range(10)]
    ctx.append("notes", recs)
    raw_before = log_bytes(ctx, "notes")
    n = ctx.delete("notes", ["d1", "d3", "missing", "d3"])
    assert n == 2
    assert ctx.count("notes") == 8
    for rid in ("d1", "d3"):
        with pytest.raises(app.NotFoundError):
            ctx.get("notes", rid)
    assert _ids(ctx.query("notes")) == [r["id"] for r in recs if r["id"] not in ("d1", "d3")]
    # soft delete: the log only grew (tombstones appended), earlier bytes untouched
    raw_after = log_bytes(ctx, "notes")
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


# --------------------------------------------------------------------------- compact ----


def test_compact_report_and_history(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": f"k{i}", "v": 0} for i in range(20)])
    ctx.append("notes", [{"id": f"k{i}", "v": 1} for i in range(10)])  # 10 superseded
    ctx.append("notes", [{"id": f"k{i}", "v": 2} for i in range(5)])  # 5 more superseded
    ctx.delete("notes", ["k19", "k18", "k0"])  # 3 tombstones
    entries_before = 20 + 10 + 5 + 3
    survivors = ctx.query("notes")
    assert len(survivors) == 17
    bytes_before = log_path(ctx, "notes").stat().st_size
    report = ctx.compact("notes")
    assert isinstance(report, app.CompactionReport)
    assert report.records_before == entries_before
    assert report.records_after == len(survivors)
    assert report.bytes_before == bytes_before
    assert report.bytes_after == log_path(ctx, "notes").stat().st_size
    assert report.bytes_after < report.bytes_before
    assert ctx.query("notes") == survivors
    assert ctx.count("notes") == 17
    for rec in survivors:
        hist = ctx.history("notes", rec["id"])
        assert len(hist) == 1
        assert hist[0].data == rec and not hist[0].deleted
        assert hist[0].sha256 == hashlib.sha256(canonical(rec)).hexdigest()
    h1 = ctx.history("notes", "k1")
    assert h1[0].data == {"id": "k1", "v": 2}
    assert ctx.history("notes", "k0") == []
    with pytest.raises(app.NotFoundError):
        ctx.get("notes", "k0")
    # compacting again changes nothing but keeps working
    again = ctx.compact("notes")
    assert again.records_before == again.records_after == 17
    assert ctx.query("notes") == survivors


def test_compact_keeps_batch_metadata_and_idempotency(ctx: app.Context) -> None:
    r1 = ctx.append("notes", [{"id": "a", "v": 1}, {"id": "b"}], batch_id="first")
    ctx.append("notes", [{"id": "a", "v": 2}], batch_id="second")
    hist_b = ctx.history("notes", "b")
    ctx.compact("notes")
    assert ctx.history("notes", "b") == hist_b or (
        [(h.batch_id, h.committed_at, h.sha256, h.data) for h in ctx.history("notes", "b")]
        == [(h.batch_id, h.committed_at, h.sha256, h.data) for h in hist_b]
    )
    with pytest.raises(app.ConflictError):  # the request digest survives compaction
        ctx.append("notes", [{"id": "zzz"}], batch_id="first")
    again = ctx.append("notes", [{"id": "a", "v": 1}, {"id": "b"}], batch_id="first")
    assert again.duplicate
    assert (again.count, again.sha256, again.committed_at) == (
        r1.count,
        r1.sha256,
        r1.committed_at,
    )
    with pytest.raises(app.NotFoundError):
        ctx.get("notes", "zzz")


def test_compact_then_append_and_reopen(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        c = s.context("c")
        c.append("notes", [{"id": str(i), "v": i} for i in range(30)])
        c.delete("notes", [str(i) for i in range(0, 30, 2)])
        c.compact("notes")
        c.append("notes", [{"id": "new", "v": -1}])
        expected = c.query("notes")
    with app.open_store(store_root) as s:
        c = s.context("c")
        assert c.query("notes") == expected
        assert c.verify().ok


def test_compact_missing_collection(ctx: app.Context) -> None:
    report = ctx.compact("ghost")
    assert report.records_before == report.records_after == 0
    assert "ghost" not in ctx.collections()


# --------------------------------------------------------------------------- schemas ----


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


# --------------------------------------------------------------------------- processes --


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


# --------------------------------------------------------------------------- errors -----


def test_error_classes_behave_as_builtin_kinds(ctx: app.Context) -> None:
    with pytest.raises(ValueError):
        ctx.append("notes", [{"v": float("nan")}])
    with pytest.raises(KeyError):
        ctx.get("notes", "missing")
    try:
        ctx.query("notes", {"a": {"$bad": 1}})
    except ValueError as exc:
        assert isinstance(exc, app.InvalidInput) and isinstance(exc, app.StorageError)
    else:  # pragma: no cover - the query must raise
        pytest.fail("bad operator accepted")


def test_messages_are_short_for_huge_bad_batches(ctx: app.Context) -> None:
    big = [{"id": f"r{i}", "v": i, "text": "y" * 20} for i in range(100_000)]
    big[-1] = {"id": "r-last", "v": float("nan")}
    with pytest.raises(app.InvalidInput) as ei:
        ctx.append("notes", big)
    assert len(str(ei.value)) < 500
    big[-1] = {"id": 5}
    with pytest.raises(app.InvalidInput) as ei:
        ctx.append("notes", big)
    assert len(str(ei.value)) < 500
    with pytest.raises(app.InvalidInput) as ei:
        ctx.append("../bad", big)
    assert len(str(ei.value)) < 500
    with pytest.raises(app.InvalidInput) as ei:
        ctx.append("notes", big[:-1], batch_id="b" * 100_000)
    assert len(str(ei.value)) < 500
    bad_analogies = [analogy(i) for i in range(100_000)]
    bad_analogies[50_000] = {"id": "broken", "source_domain": "x"}
    with pytest.raises(app.InvalidInput) as ei:
        ctx.append("analogies", bad_analogies)
    assert len(str(ei.value)) < 500
    with pytest.raises(app.InvalidInput) as ei:
        ctx.query("notes", {"v": {"$in": [*range(100_000), object()]}})
    assert len(str(ei.value)) < 500
    with pytest.raises(app.InvalidInput) as ei:
        ctx.delete("notes", [*(str(i) for i in range(100_000)), 7])  # type: ignore[list-item]
    assert len(str(ei.value)) < 500
    with pytest.raises(app.InvalidInput) as ei:
        ctx.get("notes", "k" * 100_000)
    assert len(str(ei.value)) < 500
    assert ctx.count("notes") == 0
    assert ctx.count("analogies") == 0


def test_invalid_input_message_names_argument(ctx: app.Context) -> None:
    cases: list[tuple[Any, str]] = [
        (lambda: ctx.append("../x", []), "collection"),
        (lambda: ctx.append("notes", [{"id": 3}]), "records"),
        (lambda: ctx.query("notes", {"a": {"$bad": 1}}), "where"),
        (lambda: ctx.query("notes", limit=-1), "limit"),
        (lambda: ctx.query("notes", offset=-1), "offset"),
        (lambda: ctx.query("notes", order_by="a b"), "order_by"),
        (lambda: ctx.append("notes", [], batch_id=""), "batch_id"),
        (lambda: ctx.get("notes", ""), "record_id"),
    ]
    for call, argument in cases:
        with pytest.raises(app.InvalidInput) as ei:
            call()
        assert argument in str(ei.value), (argument, str(ei.value))


def test_nan_float_subclass_and_numpy_like_rejected(ctx: app.Context) -> None:
    class F(float):
        pass

    with pytest.raises(app.InvalidInput):
        ctx.append("notes", [{"v": F("nan")}])
    assert ctx.count("notes") == 0
    assert math.isnan(float("nan"))  # sanity of the environment


def test_large_ints_at_the_edges(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "max", "v": 2**63 - 1}, {"id": "min", "v": -(2**63)}])
    assert ctx.get("notes", "max")["v"] == 2**63 - 1
    assert ctx.get("notes", "min")["v"] == -(2**63)
    raw = log_bytes(ctx, "notes")
    with pytest.raises(app.InvalidInput):
        ctx.append("notes", [{"id": "huge", "v": 7 * (10**5000 - 1) // 9}])
    assert_nothing_written(ctx, "notes", 2, raw)


def test_stored_json_is_what_is_returned(ctx: app.Context) -> None:
    """The log is plain JSON lines (SPEC: JSONL); the stored record equals the returned one."""
    rec = {"id": "j", "b": [1, 2], "a": {"x": "y"}}
    ctx.append("notes", [rec])
    lines = [orjson.loads(line) for line in log_bytes(ctx, "notes").splitlines()]
    found = [v for line in lines for v in line.values() if isinstance(v, dict) and v == rec]
    assert found == [rec]
