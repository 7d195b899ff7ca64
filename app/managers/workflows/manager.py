"""``WorkflowManager`` (``store.workflows``): durable, resumable, exactly-once batch workflows.

- ``submit`` stages the items in a fsync'd file, then commits the ``pending`` row.
- ``process`` claims the workflow (atomic ``pending -> processing`` in one ``BEGIN IMMEDIATE``
  transaction, with a random owner token), then runs it chunk by chunk. Each chunk's writes go
  through a ``ChunkWriter`` whose batch ids are derived from the workflow id and chunk number, so
  a chunk run again after a crash is an idempotent duplicate; progress, the heartbeat and the
  cancel flag are checked at every chunk boundary, and every update is conditional on still
  owning the workflow.
- ``recover`` returns workflows whose heartbeat went stale to ``pending``.
- Priorities and retries (``retry``): claims take the highest priority first, then the oldest;
  a chunk whose handler raises is retried ``max_retries`` times after backoff delays, the
  workflow waiting ``pending`` (no claim held) until its ``not_before`` time.
- ``rollback`` undoes the writes from the journal and the records' history.

The SQL lives in ``app.formats.tracker``; the built-in handlers in ``handlers``; the
chunk loop and heartbeat in ``runner``; the rollback logic in ``rollback``.
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import icontract

from app.backends.protocols import Row, WorkflowTracker
from app.core import clock
from app.core.codec import encode
from app.core.contracts import ensure, invariant, require
from app.core.errors import ConflictError, InvalidInput, environmental
from app.core.rules import (
    ChunkSize,
    ContextName,
    Limit,
    Offset,
    Seconds,
    Status,
    WorkflowId,
    WorkflowType,
    check,
    checked,
)
from app.core.workflow_types import (
    FINISHED,
    BatchWorkflow,
    WorkflowStatus,
    check_transition,
    parse_status,
)
from app.formats.tracker import TrackerDB
from app.managers.workflows.handlers import (
    BUILTIN_HANDLERS,
    BUILTIN_TYPES,
    DELETE_TYPE,
    Handler,
    check_params,
    prepare_item,
    stage_encode,
)
from app.managers.workflows.host import WorkflowHost
from app.managers.workflows.retry import MaxRetries, Priority, RetryPolicy
from app.managers.workflows.rollback import apply_rollback, listed, plan_rollback
from app.managers.workflows.runner import ChunkRunner, Progress, to_model

ORPHAN_AGE_S = 3600.0


@invariant(
    lambda self: all(callable(h) for h in self._handlers.values()),
    "every registered workflow type has a callable handler",
)
class WorkflowManager(icontract.DBC):
    """The store's batch workflow tracker (docs/api.md "Batch workflows")."""

    def __init__(
        self,
        root: Path,
        store: WorkflowHost,
        *,
        heartbeat_interval: float = 5.0,
        tracker: WorkflowTracker | None = None,
    ) -> None:
        """The workflows of ``store``; ``tracker`` is the backend's (default: the embedded
        ``TrackerDB`` in the folder ``root``)."""
        self.root = root
        self._store = store
        self._tracker: WorkflowTracker = tracker if tracker is not None else TrackerDB(root)
        self._handlers: dict[str, Handler] = dict(BUILTIN_HANDLERS)
        self.heartbeat_interval = heartbeat_interval
        self._runner = ChunkRunner(self._tracker, store, heartbeat_interval)
        self._worker = f"{socket.gethostname()}:{os.getpid()}"

    def __repr__(self) -> str:
        return f"WorkflowManager({str(self.root)!r})"

    @property
    def retry_policy(self) -> RetryPolicy:
        """The backoff between attempts of a failing chunk this process uses (settable)."""
        return self._runner.retry

    @retry_policy.setter
    def retry_policy(self, policy: RetryPolicy) -> None:
        if not isinstance(policy, RetryPolicy):
            raise InvalidInput("retry_policy: must be a RetryPolicy")
        self._runner.retry = policy

    def _model(self, row: Row) -> BatchWorkflow:
        return to_model(row, self._tracker.batch_ids(row["workflow_id"]))

    # -- submitting ---------------------------------------------------------------------

    @checked
    @require(
        lambda params: params is None or isinstance(params, Mapping),
        "params",
        "must be None or a mapping",
    )
    @require(
        lambda items: items is None or not isinstance(items, Mapping | str | bytes),
        "items",
        "must be None or an iterable of records",
    )
    @ensure(lambda result: result.status == WorkflowStatus.PENDING, "a new workflow is pending")
    @ensure(
        lambda priority, max_retries, result: (
            result.priority == priority and result.max_retries == max_retries
        ),
        "the workflow keeps its priority and retries",
    )
    def submit(
        self,
        workflow_type: WorkflowType,
        *,
        context: ContextName,
        items: Iterable[Any] | None = None,
        params: Mapping[str, Any] | None = None,
        workflow_id: WorkflowId | None = None,
        chunk_size: ChunkSize = 1000,
        priority: Priority = 0,
        max_retries: MaxRetries = 0,
    ) -> BatchWorkflow:
        """Stage ``items`` durably and return a ``pending`` workflow; nothing is written to the
        context before ``process``. Higher ``priority`` is claimed first; a chunk whose handler
        raises is retried up to ``max_retries`` times (docs/api.md, "Batch workflows")."""
        if workflow_type not in self._handlers:
            known = ", ".join(sorted(self._handlers))
            raise InvalidInput(f"workflow_type: {workflow_type!r} is unknown (known: {known})")
        params_dict = dict(params or {})
        params_json = encode(params_dict, "params").decode()
        if workflow_type in BUILTIN_TYPES:
            check_params(workflow_type, params_dict, items is not None)
        wid = workflow_id if workflow_id is not None else f"wf-{os.urandom(8).hex()}"
        if workflow_id is not None and self._tracker.exists(wid):  # rechecked at the insert
            raise ConflictError(f"workflow_id: {wid!r} already exists")
        lines = (
            stage_encode(prepare_item(workflow_type, item, i), f"items[{i}]")
            for i, item in enumerate(items or ())
        )
        staged = self._tracker.stage_items(wid, lines, chunk_size)
        row: Row = {
            "workflow_id": wid,
            "workflow_type": workflow_type,
            "context": context,
            "status": WorkflowStatus.PENDING.value,
            "created_at": clock.wall(),
            "items_total": staged.count,
            "chunk_size": chunk_size,
            "chunks_total": len(staged.index),
            "params": params_json,
            "planned": 0 if workflow_type == DELETE_TYPE and items is None else 1,
            "items_file": staged.name,
            "items_sha256": staged.sha256,
            "priority": priority,
            "max_retries": max_retries,
        }
        try:
            self._tracker.insert(row, staged.index)
        except BaseException:
            self._tracker.discard_items(staged.name)
            raise
        return self._model(self._tracker.get(wid))

    # ``register`` overrides ``ABCMeta.register`` (icontract.DBC is an ABC), which has no
    # preconditions to weaken, so its input checks are in the body; the postcondition holds.
    @ensure(
        lambda self, workflow_type, handler: self._handlers.get(workflow_type) is handler,
        "the handler is registered",
    )
    def register(self, workflow_type: str, handler: Callable[..., None]) -> None:
        """Register ``handler(ctx, chunk, params)`` for a custom workflow type (this process)."""
        check(WorkflowType, workflow_type, "workflow_type")
        if not callable(handler):
            raise InvalidInput("handler: must be callable")
        if workflow_type in BUILTIN_TYPES:
            raise ConflictError(f"workflow_type: {workflow_type!r} is built in")
        self._handlers[workflow_type] = handler

    # -- processing ---------------------------------------------------------------------

    @checked
    @ensure(lambda workflow_id, result: result.workflow_id == workflow_id, "the workflow asked for")
    def process(
        self,
        workflow_id: WorkflowId,
        *,
        stop: threading.Event | None = None,
        on_progress: Progress | None = None,
    ) -> BatchWorkflow:
        """Claim a pending workflow and run it to its end (``ConflictError`` if not pending),
        waiting out the backoff delays of its retries without holding its claim.

        With ``stop`` set, the workflow is handed back as ``pending`` at the next chunk boundary.
        """
        self._store.check_open()  # never claim (and fail) a workflow for a closed store
        row = self._tracker.get(workflow_id)
        if row["workflow_type"] not in self._handlers:
            raise InvalidInput(
                f"workflow_type: {row['workflow_type']!r} has no handler in this process "
                "(register it first, or run a worker started with --import of a module that "
                "registers it)"
            )
        handler = self._handlers[row["workflow_type"]]
        owner = os.urandom(8).hex()
        claimed = self._tracker.claim(workflow_id, owner, self._worker, clock.now())
        assert claimed is not None
        wf = self._runner.run(claimed, owner, handler, stop, on_progress)
        while wf.status == WorkflowStatus.PENDING and wf.not_before is not None:
            # handed back for a retry: wait (holding no claim), then take it again
            wait = (wf.not_before - dt.datetime.now(dt.UTC)).total_seconds()
            wait = min(max(wait, 0.0), self._runner.retry.cap_s)
            if stop is not None and stop.wait(wait):
                break
            if stop is None:
                time.sleep(wait)
            owner = os.urandom(8).hex()
            try:
                claimed = self._tracker.claim(workflow_id, owner, self._worker, clock.now())
            except ConflictError:  # another worker took it, or it was cancelled meanwhile
                return self.get(workflow_id)
            assert claimed is not None
            wf = self._runner.run(claimed, owner, handler, stop, on_progress)
        return wf

    @checked
    @ensure(
        lambda limit, result: limit is None or len(result) <= limit,
        "never more workflows than the limit",
    )
    def process_pending(
        self,
        *,
        limit: Limit | None = None,
        stop: threading.Event | None = None,
        on_progress: Progress | None = None,
    ) -> list[BatchWorkflow]:
        """Claim and run pending workflows (highest priority first, then oldest; a workflow
        waiting for a retry only once its time has come) until none is left, ``limit`` were
        run, or ``stop`` is set; returns them as they ended (a workflow handed back for a
        retry is ``pending``). Types without a handler here are left alone. Safe from many
        processes."""
        self._store.check_open()
        done: list[BatchWorkflow] = []
        while (limit is None or len(done) < limit) and not (stop is not None and stop.is_set()):
            owner = os.urandom(8).hex()
            claimed = self._tracker.claim(
                None, owner, self._worker, clock.now(), types=sorted(self._handlers)
            )
            if claimed is None:
                break
            handler = self._handlers[claimed["workflow_type"]]
            done.append(self._runner.run(claimed, owner, handler, stop, on_progress))
        return done

    # -- reading ------------------------------------------------------------------------

    @checked
    @ensure(lambda workflow_id, result: result.workflow_id == workflow_id, "the workflow asked for")
    def get(self, workflow_id: WorkflowId) -> BatchWorkflow:
        """The workflow's current state; ``NotFoundError`` if unknown."""
        return self._model(self._tracker.get(workflow_id))

    @checked
    @require(
        lambda workflow_type: workflow_type is None or isinstance(workflow_type, str),
        "workflow_type",
        "must be None or a string",
    )
    @ensure(lambda limit, result: len(result) <= limit, "never more than the limit")
    def list(
        self,
        *,
        status: Status | None = None,
        workflow_type: str | None = None,
        context: ContextName | None = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> builtins.list[BatchWorkflow]:
        """Workflows matching the filters, newest first (without their batch ids)."""
        rows = self._tracker.list_rows(
            status=None if status is None else parse_status(status).value,
            workflow_type=workflow_type,
            context=context,
            limit=limit,
            offset=offset,
        )
        return [to_model(r, []) for r in rows]

    # -- changing -----------------------------------------------------------------------

    @checked
    @ensure(
        lambda result: (
            result.status == WorkflowStatus.CANCELLED
            or (result.status == WorkflowStatus.PROCESSING and result.cancel_requested)
        ),
        "cancelled, or a processing one asked to stop at its next chunk",
    )
    def cancel(self, workflow_id: WorkflowId) -> BatchWorkflow:
        """Cancel a pending workflow; a processing one stops at its next chunk boundary."""
        return self._model(self._tracker.cancel(workflow_id, clock.wall()))

    @checked
    @ensure(lambda result: result.status == WorkflowStatus.ROLLED_BACK, "rolled back")
    def rollback(self, workflow_id: WorkflowId) -> BatchWorkflow:
        """Undo the workflow's writes (see ``rollback``); ``ConflictError`` if it is
        not finished or earlier versions it needs were compacted away."""
        row = self._tracker.get(workflow_id)
        check_transition(row["status"], WorkflowStatus.ROLLED_BACK)
        journal = list(self._tracker.journal(workflow_id))
        finished = {s for s in FINISHED if s != WorkflowStatus.ROLLED_BACK}
        if not journal:
            moved = self._tracker.move(
                workflow_id, WorkflowStatus.ROLLED_BACK, expect=finished, finished_at=clock.wall()
            )
            assert moved is not None
            return self._model(moved)
        ctx = self._store.context(row["context"], create=False)
        with ctx.writer_lock.hold():
            row = self._tracker.get(workflow_id)
            check_transition(row["status"], WorkflowStatus.ROLLED_BACK)
            plan = plan_rollback(ctx, workflow_id, journal)
            with ctx.backend.atomic():  # a server backend: the writes and the move, or nothing
                apply_rollback(ctx, workflow_id, plan)
                errors, extra = listed(plan.left)
                moved = self._tracker.move(
                    workflow_id,
                    WorkflowStatus.ROLLED_BACK,
                    expect=finished,
                    errors=errors,
                    extra_errors=extra,
                    finished_at=clock.wall(),
                )
        assert moved is not None
        return self._model(moved)

    @checked
    @ensure(
        lambda result: all(
            w.status in (WorkflowStatus.PENDING, WorkflowStatus.CANCELLED) for w in result
        ),
        "recovered workflows are pending (or cancelled, if asked)",
    )
    def recover(self, *, stale_after: Seconds = 60.0) -> builtins.list[BatchWorkflow]:
        """Hand processing workflows whose heartbeat is older than ``stale_after`` seconds back
        to ``pending`` (``cancelled`` if a cancel was asked for); returns them."""
        ids = self._tracker.recover_stale(stale_after, clock.now())
        return [self._model(self._tracker.get(wid)) for wid in ids]

    @require(
        lambda older_than: isinstance(older_than, dt.timedelta) and older_than >= dt.timedelta(0),
        "older_than",
        "must be a non-negative datetime.timedelta",
    )
    @ensure(lambda result: result >= 0, "a count is never negative")
    def purge(self, *, older_than: dt.timedelta) -> int:
        """Delete finished workflows that finished more than ``older_than`` ago (with their
        staged items and journal); never touches the records they wrote."""
        now = clock.wall()  # calendar age: wall time on purpose
        files = self._tracker.purge(FINISHED, now - older_than.total_seconds())
        for name in files:
            self._tracker.discard_items(name)
        for path in self._tracker.orphans(now - max(ORPHAN_AGE_S, older_than.total_seconds())):
            self._tracker.discard_items(path.name)
        return len(files)

    @ensure(
        lambda result: set(result["by_status"]) == {s.value for s in WorkflowStatus},
        "every status is counted",
    )
    def metrics(self) -> dict[str, Any]:
        """Counts by status and type, items processed, chunk attempts, workflows waiting for a
        retry, mean duration and items/s of the completed workflows."""
        agg = self._tracker.aggregates()
        by_status = {s.value: int(agg["by_status"].get(s.value, 0)) for s in WorkflowStatus}
        seconds, completed = agg["completed_seconds"], agg["completed"]
        return {
            "by_status": by_status,
            "by_type": dict(sorted(agg["by_type"].items())),
            "total": sum(by_status.values()),
            "items_processed": agg["items_processed"],
            "attempts": agg["attempts"],
            "waiting_retry": agg["waiting_retry"],
            "completed_items": agg["completed_items"],
            "mean_duration_s": seconds / completed if completed else None,
            "items_per_s": agg["completed_items"] / seconds if seconds > 0 else None,
        }

    @ensure(
        lambda self, result: not set(result) & set(self._handlers) and all(result.values()),
        "only types without a handler here, each with its pending count",
    )
    def missing_handlers(self) -> dict[str, int]:
        """Workflow types that have pending workflows but no handler in this process, with
        how many are pending (a worker leaves them for one that has the handler)."""
        pending = self._tracker.pending_types()
        return {t: n for t, n in sorted(pending.items()) if t not in self._handlers}

    @ensure(lambda result: set(result) >= BUILTIN_TYPES, "the built-in types are always there")
    def handlers(self) -> builtins.list[str]:
        """Workflow types this process can run, sorted."""
        return sorted(self._handlers)

    # -- maintenance --------------------------------------------------------------------

    @ensure(
        lambda self, result: all(
            str(self.root) in p or str(self._tracker.path) in p for p in result
        ),
        "problems name the tracker's files (or its URL on a server backend)",
    )
    def verify(self) -> builtins.list[str]:
        """Problems in the tracker database and staged items, naming files; never raises for
        damage (an I/O, permission or EMFILE error is raised: it is not damage)."""
        try:
            return self._tracker.check()
        except Exception as exc:
            raise_instead = environmental(exc)
            if raise_instead is not None:
                raise raise_instead from exc
            return [f"{self._tracker.path}: {exc}"]

    @ensure(lambda self: self._runner.heartbeat.stopped, "no heartbeat thread is left")
    def close(self) -> None:
        """Stop the heartbeat thread and close the tracker's connections."""
        self._runner.heartbeat.stop()
        self._tracker.close()
