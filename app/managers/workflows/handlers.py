"""Built-in workflow handlers and the ``ChunkWriter`` every handler writes through.

A handler is ``handler(ctx, chunk: list[dict], params: dict) -> None``. The ``ctx`` it gets is a
``ChunkWriter``: it behaves like the workflow's ``Context`` (reads pass straight through) but its
``append`` and ``delete`` commit with batch ids derived from the workflow id, the chunk number and
the call's position in the chunk, so a chunk that runs again after a crash or ``recover`` is a
duplicate batch and writes nothing (exactly once). Ids the handler leaves out derive from that
batch id and the record's position, so the re-run is the same request; a batch id found
committed with another payload raises ``ConflictError`` (the workflow fails, nothing foreign is
counted). ``wf:`` batch ids are reserved for this writer (docs/api.md "Idempotency"): it
writes through the context's internal ``_append``/``_delete``. Before each call it journals
the ids the call writes and which of them existed already, which is what ``rollback`` works
from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel

from app.backends.protocols import WorkflowTracker
from app.core.codec import as_dict, check_id, delete_digest, encode, id_deriver, new_id
from app.core.errors import ConflictError, InvalidInput
from app.core.filters import compile_where
from app.core.rules import CollectionName, ContextName, check, checked
from app.core.schemas import BatchReceipt
from app.managers.context import Context

Handler = Callable[[Any, list[dict[str, Any]], dict[str, Any]], None]

# Built-in types that append their items into a collection (fixed, or params["collection"]).
APPEND_TYPES: dict[str, str | None] = {
    "append": None,
    "analogy_creation": "analogies",
    "frame_expansion": "frames",
    "concept_batch": "concepts",
}
DELETE_TYPE = "delete"
BUILTIN_TYPES = frozenset({*APPEND_TYPES, DELETE_TYPE})


def chunk_batch_id(workflow_id: str, chunk_no: int, call_no: int) -> str:
    """The batch id of a chunk's ``call_no``-th write (':' never occurs in a workflow id)."""
    base = f"wf:{workflow_id}:c{chunk_no}"
    return base if call_no == 0 else f"{base}.{call_no}"


def rollback_prefix(workflow_id: str) -> str:
    return f"wf:{workflow_id}:rb:"


class ChunkWriter:
    """The context as one chunk of one workflow sees it (see the module docstring)."""

    def __init__(
        self,
        ctx: Context,
        tracker: WorkflowTracker,
        workflow_id: str,
        chunk_no: int,
        *,
        hold: contextlib.ExitStack | None = None,
        open_context: Callable[[str], Context] | None = None,
    ) -> None:
        """``hold``: where writer locks are entered (the context's at the first write, or
        those ``lock`` asks for) and kept until the runner closes it, after the chunk's unit
        of work committed; ``open_context`` opens another context of the store (``lock``)."""
        self._ctx = ctx
        self._tracker = tracker
        self._workflow_id = workflow_id
        self._chunk_no = chunk_no
        self._hold = hold
        self._open_context = open_context
        self._locked = False
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    @property
    def name(self) -> str:
        return self._ctx.name

    @property
    def context(self) -> Context:
        """The underlying context (writes made through it directly are not exactly-once)."""
        return self._ctx

    def lock(self, *contexts: str) -> None:
        """Hold the writer locks of this chunk's context and of ``contexts``, taken in name
        order, until the chunk ends (docs/api.md, "Batch workflows"). A handler that also
        writes other contexts (through the store; on a PostgreSQL store those writes commit
        with the chunk) calls it before its first write, so chunks of different workflows
        never wait for each other in a cycle. ``ConflictError`` once the chunk wrote (locks
        taken then would not be in order) or when called twice."""
        names = sorted({self._ctx.name, *(check(ContextName, c, "contexts") for c in contexts)})
        if self.calls or self._locked:
            raise ConflictError("lock: call it once, before the chunk's first write")
        self._locked = True
        if self._hold is None:
            return  # not run by a workflow runner: nothing to hold
        for name in names:
            if name == self._ctx.name or self._open_context is None:
                target = self._ctx
            else:
                target = self._open_context(name)
            self._hold.enter_context(target.writer_lock.hold())

    def _next_batch_id(self) -> tuple[int, str]:
        if self.calls == 0 and self._hold is not None and not self._locked:
            self._hold.enter_context(self._ctx.writer_lock.hold())
        call = self.calls
        self.calls += 1
        return call, chunk_batch_id(self._workflow_id, self._chunk_no, call)

    @checked
    def append(
        self, collection: CollectionName, records: Iterable[Any], *, batch_id: str | None = None
    ) -> BatchReceipt:
        """``Context.append`` with the derived batch id (a given ``batch_id`` is ignored)."""
        if isinstance(records, Mapping | str | bytes):
            raise InvalidInput("records: expected an iterable of records")
        call, bid = self._next_batch_id()
        derive = id_deriver(bid)
        batch: list[dict[str, Any]] = []
        ids: list[str] = []
        for i, record in enumerate(records):
            rec = as_dict(record, f"records[{i}]")
            rid = rec["id"] if "id" in rec else derive(i)  # what Context._append derives
            ids.append(check_id(rid, f"records[{i}]"))
            batch.append(rec)
        existed = self._ctx.existing(collection, ids)
        self._tracker.journal_add(
            self._workflow_id, self._chunk_no, call, "append", collection, bid, ids, existed
        )
        return self._ctx._append(collection, batch, batch_id=bid)

    @checked
    def delete(
        self,
        collection: CollectionName,
        ids: Iterable[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        batch_id: str | None = None,
    ) -> int:
        """``Context.delete`` with the derived batch id (targets are resolved first)."""
        if ids is None and where is None:
            raise InvalidInput("ids: give ids, where, or both")
        if isinstance(ids, str):
            raise InvalidInput("ids: expected an iterable of ids, not a single string")
        compile_where(where)
        given = None if ids is None else list(ids)
        digest = delete_digest(collection, given, where)  # the request, not its targets
        if given is None:
            targets = [r["id"] for r in self._ctx.iter(collection, where)]
        else:
            targets = list(dict.fromkeys(given))
        call, bid = self._next_batch_id()
        existed = self._ctx.existing(collection, targets)
        self._tracker.journal_add(
            self._workflow_id, self._chunk_no, call, "delete", collection, bid, targets, existed
        )
        return self._ctx._delete(collection, targets, where=where, batch_id=bid, digest=digest)


# -- built-in handlers -----------------------------------------------------------------------


def target_collection(workflow_type: str, params: Mapping[str, Any]) -> str:
    fixed = APPEND_TYPES.get(workflow_type)
    if fixed is not None:
        return fixed
    return str(params["collection"])


def _append_into(workflow_type: str) -> Handler:
    def handler(ctx: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        ctx.append(target_collection(workflow_type, params), chunk)

    handler.__name__ = f"{workflow_type}_handler"
    return handler


def delete_handler(ctx: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
    ids = [item["id"] for item in chunk]
    ctx.delete(params["collection"], ids, where=params.get("where"))


BUILTIN_HANDLERS: dict[str, Handler] = {
    **{t: _append_into(t) for t in APPEND_TYPES},
    DELETE_TYPE: delete_handler,
}


def plan_delete(ctx: Context, params: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """The items of a delete-by-criteria workflow: the ids matching ``where`` right now.

    Resolved once, at the first processing, and staged, so chunk numbers (and therefore batch
    ids) stay stable if the workflow is resumed.
    """
    where = params.get("where")
    return ({"id": r["id"]} for r in ctx.iter(str(params["collection"]), where))


def check_params(workflow_type: str, params: Mapping[str, Any], has_items: bool) -> None:
    """Validate a built-in type's params at submit; ``InvalidInput`` names the problem."""
    if workflow_type == "append" or workflow_type == DELETE_TYPE:
        if "collection" not in params:
            raise InvalidInput(f"params: {workflow_type!r} workflows need params['collection']")
        check(CollectionName, params["collection"], "params['collection']")
    elif workflow_type in APPEND_TYPES and "collection" in params:
        fixed = APPEND_TYPES[workflow_type]
        if params["collection"] != fixed:
            raise InvalidInput(
                f"params: {workflow_type!r} always writes into {fixed!r}, "
                f"not {str(params['collection'])[:64]!r}"
            )
    if workflow_type == DELETE_TYPE:
        where = params.get("where")
        if where is None and not has_items:
            raise InvalidInput("params: 'delete' workflows need params['where'] or items")
        if where is not None and not isinstance(where, Mapping):
            raise InvalidInput("params['where']: must be a filter object")
        compile_where(where)


def _stage_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump()
    raise TypeError(f"values of type {type(value).__name__} are not JSON")


def stage_encode(item: dict[str, Any], where: str) -> bytes:
    """JSON bytes of an item to stage. orjson writes NaN/Infinity as ``null``, so output holding
    ``null`` goes through the strict record codec (which rejects them) instead; the record
    store validates everything again when the chunk is processed."""
    try:
        data = orjson.dumps(item, default=_stage_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
    except orjson.JSONEncodeError as exc:
        raise InvalidInput(f"{where}: {exc.__cause__ or exc}", argument=where) from None
    return data if b"null" not in data else encode(item, where)


def prepare_item(workflow_type: str, item: object, position: int) -> dict[str, Any]:
    """An item as it will be staged: a plain dict; append types get their ``id`` fixed now
    (so a resumed chunk writes the very same records) and delete items must carry one."""
    rec = as_dict(item, f"items[{position}]")
    if workflow_type in APPEND_TYPES:
        if "id" not in rec:
            rec = {**rec, "id": new_id()}
        check_id(rec["id"], f"items[{position}]")
    elif workflow_type == DELETE_TYPE:
        check_id(rec.get("id"), f"items[{position}]")
    return rec
