"""Records, append: receipts, ids, accepted and refused values, conversions, copies.

Through the public API (docs/api.md, "Records"); helpers in ``records_support``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
from pydantic import BaseModel
from recdata import analogy
from records_support import Note, Paper, assert_nothing_written, log_bytes

import app


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
