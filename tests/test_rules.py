"""Argument rules declared once (app/core/rules.py): each accepts its good values and refuses
bad ones with ``InvalidInput`` naming the argument, through ``check`` and through ``@checked``
(which refuses before the body runs, at every contract level)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from app.core.errors import InvalidInput
from app.core.rules import (
    BatchId,
    ChunkSize,
    CollectionName,
    ContextName,
    Count,
    Flag,
    FlushInterval,
    Limit,
    Metadata,
    Metric,
    ModelName,
    Offset,
    OnConflict,
    Record,
    RecordId,
    SaveMode,
    Seconds,
    SetName,
    Status,
    UserBatchId,
    UserPath,
    Version,
    WorkflowId,
    WorkflowType,
    check,
    checked,
    rules_of,
)
from app.core.workflow_types import WorkflowStatus

ROOT = Path(__file__).resolve().parents[1]


class Point(BaseModel):
    x: int = 0


NAMES_OK = ["a", "A-1.b_c", "0x", "x" * 64]
NAMES_BAD = ["", ".", "..", "-a", "_a", "a/b", "a b", "x" * 65, 3, None, b"a"]

CASES: list[tuple[str, Any, list[Any], list[Any]]] = [
    ("ContextName", ContextName, NAMES_OK, NAMES_BAD),
    ("CollectionName", CollectionName, NAMES_OK, NAMES_BAD),
    ("SetName", SetName, NAMES_OK, NAMES_BAD),
    ("ModelName", ModelName, NAMES_OK, NAMES_BAD),
    ("WorkflowId", WorkflowId, NAMES_OK, NAMES_BAD),
    ("WorkflowType", WorkflowType, ["append", "my.type"], ["", "a b", None, 1]),
    ("RecordId", RecordId, ["r1", "é", "x" * 256], ["", "x" * 257, 5, None, "\ud800"]),
    ("BatchId", BatchId, ["b", "wf:1", "x" * 256], ["", "x" * 257, 1, None, "\ud800"]),
    ("UserBatchId", UserBatchId, ["b", "w:f", "x" * 256], ["wf:1", "wf:", "", None]),
    ("OnConflict", OnConflict, ["fail", "overwrite", "merge", "skip"], ["x", "FAIL", None]),
    ("SaveMode", SaveMode, ["overwrite", "append"], ["x", None]),
    ("Metric", Metric, ["cosine", "dot", "l2"], ["L2", "", None]),
    ("Limit", Limit, [0, 1, 2**63 - 1], [-1, 2**63, True, 1.0, None, "1"]),
    ("Offset", Offset, [0, 10], [-1, 2**63, False, 0.0]),
    ("Count", Count, [1, 2**63 - 1], [0, -1, True, 2**63, 1.5]),
    ("Version", Version, [1, 7], [0, True, "1", None]),
    ("ChunkSize", ChunkSize, [1, 1_000_000], [0, 1_000_001, True]),
    ("Seconds", Seconds, [0, 0.5, 60], [-1, -0.1, True, "1", float("nan"), None]),
    ("FlushInterval", FlushInterval, [0.001, 1, 86_400], [0, 86_401, True, float("nan")]),
    ("Flag", Flag, [True, False], [0, 1, None, "true"]),
    ("UserPath", UserPath, ["a", "/x/y", Path("x")], ["", "a\0b", 3, None]),
    (
        "Metadata",
        Metadata,
        [None, {}, {"a": [1, "x", None, {"b": 2.5}]}],
        [[], "x", {"a": float("nan")}, {"a": float("inf")}, {1: 2}, {"a": object()}],
    ),
    ("Status", Status, ["pending", WorkflowStatus.FAILED], ["nope", None, 3]),
    ("Record", Record, [{"a": 1}, {}, Point()], [[1], "x", 3, None]),
]
IDS = [case[0] for case in CASES]


def _guarded(rule: Any) -> tuple[Callable[[Any], None], list[Any]]:
    """A function whose parameter ``value`` is annotated with ``rule``; ``ran`` records calls
    of its body."""
    ran: list[Any] = []

    def fn(value: Any) -> None:
        ran.append(value)

    fn.__annotations__ = {"value": rule, "return": None}
    return checked(fn), ran


@pytest.mark.parametrize(("label", "rule", "good", "bad"), CASES, ids=IDS)
def test_check_accepts_good_values(label: str, rule: Any, good: list[Any], bad: list[Any]) -> None:
    _ = label, bad
    for value in good:
        assert check(rule, value, "arg") is value


@pytest.mark.parametrize(("label", "rule", "good", "bad"), CASES, ids=IDS)
def test_check_refuses_bad_values(label: str, rule: Any, good: list[Any], bad: list[Any]) -> None:
    _ = label, good
    for value in bad:
        with pytest.raises(InvalidInput) as caught:
            check(rule, value, "arg")
        assert caught.value.argument == "arg", value
        assert str(caught.value).startswith("arg: "), str(caught.value)


@pytest.mark.parametrize(("label", "rule", "good", "bad"), CASES, ids=IDS)
def test_checked_applies_the_rule_before_the_body(
    label: str, rule: Any, good: list[Any], bad: list[Any]
) -> None:
    _ = label
    fn, ran = _guarded(rule)
    for value in good:
        fn(value)
    assert ran == good
    for value in bad:
        with pytest.raises(InvalidInput) as caught:
            fn(value)
        assert caught.value.argument == "value"
        assert str(caught.value).startswith("value: ")
    assert ran == good  # the body never ran for a refused value


def test_every_alias_carries_a_rule() -> None:
    for label, rule, _, _ in CASES:
        assert rules_of(rule)[0], label


def test_optional_lets_none_through_and_says_so() -> None:
    @checked
    def fn(batch_id: BatchId | None = None, limit: Limit | None = None) -> str:
        return "ran"

    assert fn() == "ran" and fn("b", 3) == "ran"
    with pytest.raises(InvalidInput, match=r"^batch_id: must be None or 1-256 characters"):
        fn("")
    with pytest.raises(InvalidInput, match=r"^limit: must be None or an int in \[0, 2\*\*63\)"):
        fn(None, -1)
    assert check(ContextName | None, None, "name") is None
    assert check(ContextName, None, "name", optional=True) is None


def test_messages_are_the_managers_messages() -> None:
    with pytest.raises(InvalidInput) as caught:
        check(CollectionName, "../x", "collection")
    assert str(caught.value) == (
        "collection: '../x' is not a valid name (1-64 chars of letters, digits, '_', '.', '-', "
        "starting with a letter or digit)"
    )
    with pytest.raises(InvalidInput, match=r"^batch_id: ids starting with 'wf:' are reserved"):
        check(UserBatchId, "wf:x", "batch_id")
    with pytest.raises(InvalidInput, match=r"^on_conflict: must be one of fail, overwrite"):
        check(OnConflict, "x", "on_conflict")
    with pytest.raises(InvalidInput, match=r"^metadata: must be a mapping with string keys$"):
        check(Metadata, [], "metadata")
    with pytest.raises(InvalidInput, match=r"^metadata: not strict JSON \("):
        check(Metadata, {"a": float("nan")}, "metadata")
    with pytest.raises(InvalidInput, match=r"^status: 'nope' is not one of pending, processing"):
        check(Status, "nope", "status")
    with pytest.raises(InvalidInput, match=r"^item: expected a mapping or a pydantic model, got"):
        check(Record, [1], "item")


def test_arguments_are_checked_in_parameter_order_defaults_included() -> None:
    @checked
    def fn(context: ContextName, collection: CollectionName, *, version: Version = 1) -> None:
        raise AssertionError("the body must not run")

    with pytest.raises(InvalidInput) as caught:
        fn("..", "..", version=0)
    assert caught.value.argument == "context"
    with pytest.raises(InvalidInput) as caught:
        fn("c", "..", version=0)
    assert caught.value.argument == "collection"
    with pytest.raises(InvalidInput) as caught:
        fn("c", "d", version=0)
    assert caught.value.argument == "version"

    @checked
    def bad_default(on_conflict: OnConflict = "nope") -> None:  # type: ignore[assignment]
        raise AssertionError("the body must not run")

    with pytest.raises(InvalidInput, match=r"^on_conflict: "):
        bad_default()


def test_checked_composes_with_other_contracts() -> None:
    from app.core.contracts import ensure

    @checked
    @ensure(lambda result: result >= 0, "never negative")
    def below(collection: CollectionName, limit: Limit = 0) -> int:
        return limit

    @ensure(lambda result: result >= 0, "never negative")
    @checked
    def above(collection: CollectionName, limit: Limit = 0) -> int:
        return limit

    for fn in (below, above):
        assert fn("c", 2) == 2
        with pytest.raises(InvalidInput) as caught:
            fn("..")
        assert caught.value.argument == "collection"
        with pytest.raises(InvalidInput) as caught:
            fn("c", -1)
        assert caught.value.argument == "limit"


class Later:
    """Methods whose other annotations name a class defined after them (string annotations,
    resolved when the decorator runs): those are skipped, the rules still apply."""

    @checked
    def method(self, name: ModelName, other: NotYetDefined | None = None) -> NotYetDefined:
        return NotYetDefined()


class NotYetDefined:
    pass


def test_methods_and_forward_references() -> None:
    assert isinstance(Later().method("m"), NotYetDefined)
    with pytest.raises(InvalidInput) as caught:
        Later().method("a/b")
    assert caught.value.argument == "name"


def test_an_unresolvable_annotation_carrying_a_rule_is_refused_at_decoration() -> None:
    def fn(value: Any) -> None:
        pass

    fn.__annotations__ = {"value": "ContextName | Missing"}
    with pytest.raises(TypeError, match="carries a rule"):
        checked(fn)


def test_check_needs_a_rule() -> None:
    with pytest.raises(TypeError, match="carries no rule"):
        check(str, "x", "arg")


def test_preconditions_stay_on_when_contracts_are_off() -> None:
    code = (
        "from app.core.rules import checked, CollectionName\n"
        "from app.core.errors import InvalidInput\n"
        "@checked\n"
        "def f(collection: CollectionName) -> None: pass\n"
        "try:\n"
        "    f('..')\n"
        "except InvalidInput as exc:\n"
        "    print('refused', exc.argument)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CTXSTORE_CONTRACTS": "off"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "refused collection", done.stderr


def test_the_worked_example_append_buffer(tmp_path: Path) -> None:
    """``AppendBuffer`` declares its rules in its signature: refused before any thread starts."""
    import threading

    import app
    from app.managers.buffer import AppendBuffer

    with app.open_store(tmp_path / "s") as store:
        ctx = store.context("c")
        threads = threading.active_count()
        for kwargs, argument in (
            ({"max_pending": 0}, "max_pending"),
            ({"flush_every": True}, "flush_every"),
            ({"flush_interval": 0}, "flush_interval"),
            ({"flush_interval": 86_401}, "flush_interval"),
        ):
            with pytest.raises(InvalidInput) as caught:
                AppendBuffer(ctx, "t", **kwargs)
            assert caught.value.argument == argument
        with pytest.raises(InvalidInput) as caught:
            AppendBuffer(ctx, "../t")
        assert caught.value.argument == "collection"
        assert threading.active_count() == threads
        with AppendBuffer(ctx, "t") as buf:
            with pytest.raises(InvalidInput) as caught:
                buf.record([1])  # type: ignore[arg-type]
            assert caught.value.argument == "item"
            with pytest.raises(InvalidInput, match=r"^timeout: must be None or a number"):
                buf.record({"id": "a"}, timeout=-1)
            assert buf.record({"id": "a"}, timeout=0.5)
        assert ctx.count("t") == 1
