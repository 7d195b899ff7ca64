"""Argument rules, each declared once: ``Annotated`` types whose metadata is a ``Rule``.

A parameter annotated with one of the types below (``collection: CollectionName``) states its
rule where it is declared; ``@checked`` turns every such annotation of a function into an
always-on icontract precondition raising ``InvalidInput`` (message ``"<argument>: <problem>"``,
``.argument`` = the parameter name) before the body runs. ``X | None`` lets ``None`` through
(the message then reads "must be None or ..."). The CLI and the HTTP service check a value
they re-check with ``check(rule, value, argument)``. See docs/api.md, "Errors".

Example (what a manager method looks like)::

    @checked
    @ensure(lambda result: result >= 0, "a count is never negative")
    def count(self, collection: CollectionName, where: Where = None) -> int: ...

Every test here is O(1) or O(size of the argument) for small arguments (``Metadata``): no
per-record work.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import icontract
from pydantic import BaseModel

from app.core.access_types import SCOPES
from app.core.contracts import is_non_negative_int, is_positive_int
from app.core.errors import InvalidInput
from app.core.filters import is_utf8
from app.core.names import is_valid_name, name_problem
from app.core.similarity import METRICS
from app.core.workflow_types import WorkflowStatus

F = TypeVar("F", bound=Callable[..., Any])
V = TypeVar("V")


@dataclass(frozen=True, eq=False)
class Rule:
    """One argument rule: a cheap ``test`` and what a refused value should have been.

    The message of a refused value is ``"must be <what>"`` (``"must be None or <what>"`` where
    ``None`` is allowed), or ``explain(value)`` when the message depends on the value."""

    test: Callable[[Any], bool]
    what: str
    explain: Callable[[Any], str] | None = None

    def problem(self, value: object, *, optional: bool = False) -> str | None:
        """None when ``value`` keeps the rule, else the message (without the argument)."""
        if (optional and value is None) or self.test(value):
            return None
        if self.explain is not None:
            return self.explain(value)
        return f"must be None or {self.what}" if optional else f"must be {self.what}"


# -- the rules ------------------------------------------------------------------------------

RESERVED_PREFIX = "wf:"
"""Batch ids starting with this are the workflows' own (docs/api.md, "Idempotency keys")."""
ON_CONFLICTS = ("fail", "overwrite", "merge", "skip")
SAVE_MODES = ("overwrite", "append")
MAX_ID_CHARS = 256
MAX_CHUNK_SIZE = 1_000_000
MAX_FLUSH_INTERVAL = 86_400.0

OnConflictValue = Literal["fail", "overwrite", "merge", "skip"]
MetricValue = Literal["cosine", "dot", "l2"]
SaveModeValue = Literal["overwrite", "append"]


def _short_str(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and is_utf8(value)


def _not_reserved(value: object) -> bool:
    return not (isinstance(value, str) and value.startswith(RESERVED_PREFIX))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _path(value: object) -> bool:
    try:
        text = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return isinstance(text, str) and "\0" not in text and text != ""


_STATUSES = frozenset(s.value for s in WorkflowStatus)


def _status(value: object) -> bool:
    return isinstance(value, str) and value in _STATUSES


def _status_problem(value: object) -> str:
    names = ", ".join(s.value for s in WorkflowStatus)
    return f"{str(value)[:40]!r} is not one of {names}"


def _json_problem(value: object) -> str | None:
    """Why ``value`` is not a mapping of plain, strict JSON (None when it is)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        return "must be a mapping with string keys"
    try:
        json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"not strict JSON ({str(exc)[:120]})"
    return None


def _plain_json(value: object) -> bool:
    return value is None or _json_problem(value) is None


NAME = Rule(is_valid_name, "a valid name", name_problem)
"""Names of contexts, collections, embedding sets, models and workflows (docs/api.md)."""
WORKFLOW_TYPE = Rule(is_valid_name, "a valid name")
RECORD_ID = Rule(_short_str, "a non-empty string of at most 256 characters")
BATCH_ID = Rule(_short_str, "1-256 characters of valid Unicode")
NOT_RESERVED = Rule(
    _not_reserved,
    f"an id not starting with {RESERVED_PREFIX!r}",
    lambda _: f"ids starting with {RESERVED_PREFIX!r} are reserved for workflows",
)
ON_CONFLICT = Rule(lambda v: v in ON_CONFLICTS, "one of " + ", ".join(ON_CONFLICTS))
SAVE_MODE = Rule(lambda v: v in SAVE_MODES, "'overwrite' or 'append'")
METRIC = Rule(lambda v: v in METRICS, "'cosine', 'dot' or 'l2'")
NON_NEGATIVE = Rule(is_non_negative_int, "an int in [0, 2**63)")
POSITIVE = Rule(is_positive_int, "an int >= 1")
CHUNK_SIZE = Rule(
    lambda v: is_positive_int(v) and v <= MAX_CHUNK_SIZE, f"an int in 1..{MAX_CHUNK_SIZE}"
)
SECONDS = Rule(lambda v: _number(v) and v >= 0, "a number of seconds >= 0")
FLUSH_INTERVAL = Rule(
    lambda v: _number(v) and 0 < v <= MAX_FLUSH_INTERVAL,
    f"a number of seconds in (0, {MAX_FLUSH_INTERVAL:g}]",
)
FLAG = Rule(lambda v: isinstance(v, bool), "a bool")
PATH = Rule(_path, "a non-empty path without NUL")
METADATA = Rule(_plain_json, "a JSON object", lambda v: _json_problem(v) or "")
STATUS = Rule(_status, "a workflow status", _status_problem)
RECORD = Rule(
    lambda v: isinstance(v, Mapping | BaseModel),
    "a mapping or a pydantic model",
    lambda v: f"expected a mapping or a pydantic model, got {type(v).__name__}",
)

ContextName = Annotated[str, NAME]
CollectionName = Annotated[str, NAME]
SetName = Annotated[str, NAME]
"""The name of an embedding set."""
ModelName = Annotated[str, NAME]
WorkflowId = Annotated[str, NAME]
WorkflowType = Annotated[str, WORKFLOW_TYPE]
RecordId = Annotated[str, RECORD_ID]
BatchId = Annotated[str, BATCH_ID]
"""Any batch id, the workflows' own (``wf:...``) included."""
UserBatchId = Annotated[str, BATCH_ID, NOT_RESERVED]
"""A batch id a user gives: ``wf:`` is reserved for workflows."""
OnConflict = Annotated[OnConflictValue, ON_CONFLICT]
SaveMode = Annotated[SaveModeValue, SAVE_MODE]
Metric = Annotated[MetricValue, METRIC]
Limit = Annotated[int, NON_NEGATIVE]
Offset = Annotated[int, NON_NEGATIVE]
Count = Annotated[int, POSITIVE]
"""A count of at least one: ``k`` of a search, a buffer's bounds."""
Version = Annotated[int, POSITIVE]
ChunkSize = Annotated[int, CHUNK_SIZE]
Seconds = Annotated[float, SECONDS]
FlushInterval = Annotated[float, FLUSH_INTERVAL]
Flag = Annotated[bool, FLAG]
UserPath = Annotated[str | os.PathLike[str], PATH]
Metadata = Annotated[Mapping[str, Any], METADATA]
"""``None`` or a mapping with string keys holding strict JSON (no NaN/Infinity)."""
Status = Annotated[WorkflowStatus | str, STATUS]
Record = Annotated[Mapping[str, Any] | BaseModel, RECORD]


def _context_list(value: object) -> bool:
    return (
        isinstance(value, list | tuple) and len(value) > 0 and all(is_valid_name(v) for v in value)
    )


def _context_list_problem(value: object) -> str:
    if not isinstance(value, list | tuple):
        return f"must be None or a non-empty list of context names, got {type(value).__name__}"
    if not value:
        return "must be None (every context) or a non-empty list of context names"
    bad = next(v for v in value if not is_valid_name(v))
    return name_problem(bad)


SCOPE = Rule(lambda v: v in SCOPES, "'read', 'write' or 'admin'")
CONTEXT_LIST = Rule(_context_list, "a non-empty list of context names", _context_list_problem)
TokenName = Annotated[str, NAME]
"""The name of a service token (names follow the rule of context names)."""
TokenScope = Annotated[str, SCOPE]
ContextList = Annotated[Sequence[str], CONTEXT_LIST]
"""``None`` (every context) or a non-empty list of valid context names."""


# -- checking -------------------------------------------------------------------------------


def rules_of(annotation: object) -> tuple[tuple[Rule, ...], bool]:
    """The rules an annotation carries and whether it allows ``None`` (``X | None``)."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(annotation)
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            return (), optional
        annotation = rest[0]
    if typing.get_origin(annotation) is not Annotated:
        return (), optional
    found = tuple(m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, Rule))
    return found, optional


def check(rule: object, value: V, argument: str, *, optional: bool = False) -> V:
    """``value`` if it keeps ``rule`` (a ``Rule`` or one of the types above, whose ``| None``
    allows None), else ``InvalidInput("<argument>: <problem>", argument=argument)``."""
    if isinstance(rule, Rule):
        rules: tuple[Rule, ...] = (rule,)
    else:
        rules, allows_none = rules_of(rule)
        optional = optional or allows_none
        if not rules:
            raise TypeError(f"{rule!r} carries no rule")
    for one in rules:
        problem = one.problem(value, optional=optional)
        if problem is not None:
            raise InvalidInput(f"{argument}: {problem}", argument=argument)
    return value


def _precondition(rule: Rule, argument: str, optional: bool) -> Callable[[F], F]:
    """An always-on icontract precondition applying ``rule`` to the parameter ``argument``."""
    signature = inspect.Signature([inspect.Parameter(argument, inspect.Parameter.KEYWORD_ONLY)])

    def condition(**kwargs: Any) -> bool:
        value = kwargs[argument]
        return (optional and value is None) or rule.test(value)

    def error(**kwargs: Any) -> InvalidInput:
        problem = rule.problem(kwargs[argument], optional=optional) or rule.what
        return InvalidInput(f"{argument}: {problem}", argument=argument)

    condition.__signature__ = signature  # type: ignore[attr-defined]
    error.__signature__ = signature  # type: ignore[attr-defined]
    decorator: Callable[[F], F] = icontract.require(
        condition, f"{argument}: must be {rule.what}", error=error
    )
    return decorator


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _resolve(annotation: object, fn: Callable[..., Any]) -> object:
    """A parameter's annotation as an object (``from __future__ import annotations`` keeps
    strings). One naming a class not defined yet is skipped, unless it names a rule too."""
    if not isinstance(annotation, str):
        return annotation
    namespace = getattr(inspect.unwrap(fn), "__globals__", {})  # under other decorators too
    try:
        # the module's own annotation text, evaluated as typing.get_type_hints would
        return eval(annotation, namespace)
    except (NameError, AttributeError, TypeError):
        for name in _IDENT.findall(annotation):
            if rules_of(namespace.get(name))[0]:
                raise TypeError(
                    f"{fn.__qualname__}: cannot resolve the annotation {annotation!r}, which "
                    "carries a rule; import every name it uses at module level"
                ) from None
        return None


def checked(fn: F) -> F:
    """Turn the rules in ``fn``'s parameter annotations into always-on preconditions, checked
    in parameter order before the body runs (see the module docstring)."""
    found = [
        (param.name, *rules_of(_resolve(param.annotation, fn)))
        for param in inspect.signature(fn).parameters.values()
    ]  # resolved before wrapping: a wrapper's globals are icontract's
    for argument, rules, optional in found:
        for rule in rules:
            fn = _precondition(rule, argument, optional)(fn)
    return fn


__all__ = [
    "BATCH_ID",
    "CHUNK_SIZE",
    "CONTEXT_LIST",
    "FLAG",
    "FLUSH_INTERVAL",
    "MAX_CHUNK_SIZE",
    "MAX_FLUSH_INTERVAL",
    "MAX_ID_CHARS",
    "METADATA",
    "METRIC",
    "NAME",
    "NON_NEGATIVE",
    "NOT_RESERVED",
    "ON_CONFLICT",
    "ON_CONFLICTS",
    "PATH",
    "POSITIVE",
    "RECORD",
    "RECORD_ID",
    "RESERVED_PREFIX",
    "SAVE_MODE",
    "SAVE_MODES",
    "SCOPE",
    "SECONDS",
    "STATUS",
    "WORKFLOW_TYPE",
    "BatchId",
    "ChunkSize",
    "CollectionName",
    "ContextList",
    "ContextName",
    "Count",
    "Flag",
    "FlushInterval",
    "Limit",
    "Metadata",
    "Metric",
    "MetricValue",
    "ModelName",
    "Offset",
    "OnConflict",
    "OnConflictValue",
    "Record",
    "RecordId",
    "Rule",
    "SaveMode",
    "SaveModeValue",
    "Seconds",
    "SetName",
    "Status",
    "TokenName",
    "TokenScope",
    "UserBatchId",
    "UserPath",
    "Version",
    "WorkflowId",
    "WorkflowType",
    "check",
    "checked",
    "rules_of",
]
