"""Running a claimed workflow: the chunk loop, its heartbeat, and tracker rows as models.

The loop, for chunk ``n`` from the first one not yet done:

1. at the chunk boundary: all done -> ``completed``; cancel asked -> ``cancelled``; ``stop``
   set -> handed back as ``pending``;
2. read the staged chunk (CRC-checked) and call the handler with a ``ChunkWriter``, whose
   writes carry batch ids derived from the workflow id and ``n`` (a re-run is a duplicate);
3. record the chunk as done (progress, heartbeat) - only while still the owner: a workflow
   recovered or taken over meanwhile is left to its new owner.

Steps 2 and 3 are one unit of work (``Backend.atomic()``): on a server backend the chunk's
journal notes, record writes and completion commit in one transaction, so a chunk commits
exactly once without relying on batch-id idempotency alone, and a chunk whose workflow was
taken over meanwhile (or whose handler raised) leaves nothing behind; on the embedded backend
each write commits on its own and the journal plus derived batch ids give the same result. The
writer lock of the context a chunk writes is held from its first write until after the commit
(``ChunkWriter(hold=...)``), so another writer never slips in between the chunk's writes; a
handler that writes several contexts takes all their locks first, in name order
(``ChunkWriter.lock``).

A handler exception (not ``InvalidInput``) of a workflow with retries left hands the workflow
back: ``pending``, unowned, not claimed again before a backoff delay (``retry.RetryPolicy``),
the attempt counted and its error listed; the chunk's unit of work was undone (server backend)
or its committed calls are duplicates when it runs again (embedded: derived batch ids), so a
retried chunk never commits twice. Otherwise it fails the workflow (status ``failed``, every
attempt's error listed); chunks committed before it stay until ``rollback``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import orjson

from app.backends.protocols import Row, WorkflowTracker
from app.core import clock
from app.core.codec import encode
from app.core.errors import StorageError
from app.core.workflow_types import BatchWorkflow, WorkflowStatus
from app.managers.context import Context
from app.managers.workflows.handlers import ChunkWriter, Handler, plan_delete
from app.managers.workflows.host import WorkflowHost
from app.managers.workflows.retry import RetryPolicy, retryable

MAX_ERROR_TEXT = 300
Progress = Callable[[BatchWorkflow], None]


def _ts(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


def error_text(chunk_no: int, exc: BaseException, attempt: int | None = None) -> str:
    text = " ".join(str(exc).split())
    if len(text) > MAX_ERROR_TEXT:
        text = text[: MAX_ERROR_TEXT - 3] + "..."
    where = f"chunk {chunk_no}" if attempt is None else f"chunk {chunk_no}, attempt {attempt}"
    return f"{where}: {type(exc).__name__}: {text}"


def to_model(row: Row, batch_ids: list[str]) -> BatchWorkflow:
    return BatchWorkflow(
        workflow_id=row["workflow_id"],
        workflow_type=row["workflow_type"],
        context=row["context"],
        status=WorkflowStatus(row["status"]),
        created_at=dt.datetime.fromtimestamp(row["created_at"], dt.UTC),
        started_at=_ts(row["started_at"]),
        finished_at=_ts(row["finished_at"]),
        heartbeat_at=_ts(row["heartbeat_at"]),
        items_total=row["items_total"],
        items_processed=row["items_processed"],
        chunk_size=row["chunk_size"],
        chunks_total=row["chunks_total"],
        chunks_done=row["chunks_done"],
        error_count=row["error_count"],
        errors=orjson.loads(row["errors"]),
        params=orjson.loads(row["params"]),
        batch_ids=batch_ids,
        cancel_requested=bool(row["cancel_requested"]),
        worker=row["worker"],
        priority=row["priority"],
        max_retries=row["max_retries"],
        attempts=row["attempts"],
        not_before=_ts(row["not_before"]),
    )


class _HandlerFailed(Exception):
    """A handler raised ``error`` inside a chunk (the chunk's unit of work was undone)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Lost(Exception):
    """The workflow is no longer ours at the chunk's commit: undo the chunk's unit of work."""


class Heartbeat:
    """One thread per manager refreshing the heartbeat of the workflows it is processing."""

    def __init__(self, tracker: WorkflowTracker, interval: float) -> None:
        self._tracker = tracker
        self.interval = interval
        self._active: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, workflow_id: str, owner: str) -> None:
        with self._lock:
            self._active[workflow_id] = owner
            if self._thread is None or not self._thread.is_alive():
                self._wake.clear()
                self._thread = threading.Thread(
                    target=self._run, name="ctxstore-heartbeat", daemon=True
                )
                self._thread.start()

    def remove(self, workflow_id: str) -> None:
        with self._lock:
            self._active.pop(workflow_id, None)

    def _run(self) -> None:
        while not self._wake.wait(self.interval):
            with self._lock:
                active = list(self._active.items())
            for wid, owner in active:
                # busy or closing: the next beat (or the chunk update) refreshes it
                with contextlib.suppress(StorageError):
                    self._tracker.heartbeat(wid, owner, clock.now())

    @property
    def stopped(self) -> bool:
        return self._thread is None

    def stop(self) -> None:
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None


class ChunkRunner:
    """Runs claimed workflows of one store; shared by all threads of a manager."""

    def __init__(
        self, tracker: WorkflowTracker, store: WorkflowHost, heartbeat_interval: float
    ) -> None:
        self._tracker = tracker
        self._store = store
        self.heartbeat = Heartbeat(tracker, heartbeat_interval)
        self.retry = RetryPolicy()

    def model(self, row: Row) -> BatchWorkflow:
        return to_model(row, self._tracker.batch_ids(row["workflow_id"]))

    def run(
        self,
        row: Row,
        owner: str,
        handler: Handler,
        stop: threading.Event | None,
        on_progress: Progress | None,
    ) -> BatchWorkflow:
        """Run a claimed workflow from its first undone chunk to an end (or a hand-back)."""
        wid = row["workflow_id"]
        self.heartbeat.add(wid, owner)
        try:
            return self._chunks(row, owner, handler, stop, on_progress)
        finally:
            self.heartbeat.remove(wid)

    def _chunks(
        self,
        row: Row,
        owner: str,
        handler: Handler,
        stop: threading.Event | None,
        on_progress: Progress | None,
    ) -> BatchWorkflow:
        wid = row["workflow_id"]
        params: dict[str, Any] = orjson.loads(row["params"])
        chunk_no = row["chunks_done"]
        try:
            ctx = self._store.context(row["context"], create=True)
            # made ready (a server backend's tables created) before any chunk's unit of work,
            # so nothing a rolled-back chunk did is remembered as done
            ctx.collections()
            if not row["planned"]:
                targets = (encode(item) for item in plan_delete(ctx, params))
                staged = self._tracker.stage_items(wid, targets, row["chunk_size"])
                if not self._tracker.plan(wid, owner, staged, row["chunk_size"], clock.now()):
                    self._tracker.discard_items(staged.name)
                    return self.model(self._tracker.get(wid))
                row = self._tracker.get(wid)
            index = self._tracker.chunk_index(wid)
        except Exception as exc:
            return self._fail(wid, owner, chunk_no, exc)
        while True:
            if chunk_no >= len(index):
                return self._end(wid, owner, WorkflowStatus.COMPLETED)
            if row["cancel_requested"]:
                return self._end(wid, owner, WorkflowStatus.CANCELLED)
            if stop is not None and stop.is_set():
                return self._end(wid, owner, WorkflowStatus.PENDING)
            try:
                items = [
                    orjson.loads(line)
                    for line in self._tracker.read_chunk(row["items_file"], index, chunk_no)
                ]
            except Exception as exc:
                return self._fail(wid, owner, chunk_no, exc)
            try:
                updated = self._chunk(ctx, wid, owner, chunk_no, handler, items, params)
            except _HandlerFailed as failed:
                return self._attempt_failed(row, owner, chunk_no, failed.error)
            if updated is None:  # recovered or taken over meanwhile: no longer ours
                return self.model(self._tracker.get(wid))
            row = updated
            chunk_no += 1
            if on_progress is not None:
                on_progress(to_model(row, []))

    def _chunk(
        self,
        ctx: Context,
        wid: str,
        owner: str,
        chunk_no: int,
        handler: Handler,
        items: list[Any],
        params: dict[str, Any],
    ) -> Row | None:
        """Run one chunk as one unit of work: its journal notes, the handler's writes and
        ``chunk_done`` commit together (``Backend.atomic()``; embedded: each on its own).
        The writer lock of the context is held from the chunk's first write until after the
        commit. Returns the updated row, or None (no longer ours: on a server backend the
        chunk's writes are then rolled back). ``_HandlerFailed`` wraps a handler's error."""
        with contextlib.ExitStack() as locks:
            try:
                with ctx.backend.atomic():
                    writer = ChunkWriter(
                        ctx,
                        self._tracker,
                        wid,
                        chunk_no,
                        hold=locks,
                        open_context=self._store.context,
                    )
                    try:
                        handler(writer, items, params)
                    except Exception as exc:
                        raise _HandlerFailed(exc) from exc
                    updated = self._tracker.chunk_done(
                        wid, owner, chunk_no, len(items), clock.now()
                    )
                    if updated is None:
                        raise _Lost
                    return updated
            except _Lost:
                return None

    def _end(self, wid: str, owner: str, status: WorkflowStatus) -> BatchWorkflow:
        fields: dict[str, Any] = {}
        if status != WorkflowStatus.PENDING:
            fields["finished_at"] = clock.wall()
        else:
            fields["owner"] = None
        row = self._tracker.move(wid, status, if_owner=owner, **fields)
        return self.model(row if row is not None else self._tracker.get(wid))

    def _attempt_failed(self, row: Row, owner: str, chunk_no: int, exc: Exception) -> BatchWorkflow:
        """A handler raised in chunk ``chunk_no``: hand the workflow back for a retry after a
        backoff delay while it has retries left (and the error is retryable), else fail it."""
        failures = int(row["chunk_failures"]) + 1
        retry = retryable(exc) and failures <= int(row["max_retries"])
        found = self._tracker.attempt_failed(
            row["workflow_id"],
            owner,
            error_text(chunk_no, exc, failures if row["max_retries"] else None),
            self.retry.delay(failures) if retry else None,
            clock.wall(),
        )
        return self.model(found if found is not None else self._tracker.get(row["workflow_id"]))

    def _fail(self, wid: str, owner: str, chunk_no: int, exc: BaseException) -> BatchWorkflow:
        row = self._tracker.move(
            wid,
            WorkflowStatus.FAILED,
            if_owner=owner,
            errors=[error_text(chunk_no, exc)],
            finished_at=clock.wall(),
        )
        return self.model(row if row is not None else self._tracker.get(wid))
