"""Records, errors: builtin kinds, short messages for huge batches, the argument named, edge values.

Through the public API (docs/api.md, "Records"); helpers in ``records_support``.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from recdata import analogy
from records_support import assert_nothing_written, log_bytes

import app


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


@pytest.mark.embedded_only("reads the JSONL log file")
def test_stored_json_is_what_is_returned(ctx: app.Context) -> None:
    """The log is plain JSON lines (SPEC: JSONL); the stored record equals the returned one."""
    rec = {"id": "j", "b": [1, 2], "a": {"x": "y"}}
    ctx.append("notes", [rec])
    lines = [orjson.loads(line) for line in log_bytes(ctx, "notes").splitlines()]
    found = [v for line in lines for v in line.values() if isinstance(v, dict) and v == rec]
    assert found == [rec]
