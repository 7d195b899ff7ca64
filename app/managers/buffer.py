"""``AppendBuffer``: non-blocking, thread-safe appends for telemetry-style writers
(docs/api.md, "Append buffer").

``record(item)`` only takes a lock, appends to a list and counts: it never waits for I/O and
returns ``False`` when ``max_pending`` items are waiting (backpressure); ``record(item,
timeout=t)`` instead waits up to ``t`` seconds for room (the flusher signals each batch it
writes). A daemon thread commits batches through ``Context.append`` every ``flush_every`` items
or ``flush_interval`` seconds. It takes the whole queue under the lock and encodes and commits
outside it, so producers never wait for I/O and the flusher never waits for producers; a refused
``record`` yields the interpreter once, so threads spinning on a full buffer do not starve it.

What is durable when (docs/api.md, "Concurrency and durability"): an item is durable once the
batch holding it is committed (``written`` counts them). ``flush()``, ``close()``,
``Store.close()`` (every buffer of the store) and a normal interpreter exit (an ``atexit`` hook
closes every live buffer: the end of the script, ``sys.exit``, an uncaught exception) write
everything accepted. A process that is killed (SIGKILL, the OOM killer, ``os._exit``, a power
cut) or dies on a signal Python does not handle loses the items still pending: at most
``max_pending`` items, and at most ``flush_interval`` seconds of records at a low rate. Writers
that cannot lose any record call ``flush()`` at their own commit points, or use
``Context.append`` directly.

Accounting, exact at every instant under the lock: ``accepted == written + failed + pending``.
A batch that ``append`` rejects as invalid is split in halves until the offending items are
isolated; those are counted in ``failed`` (with ``last_error``), never silently dropped. Any
other error (disk full, lock timeout) puts the batch back at the front of the queue; the
background thread retries it later and ``flush``/``close`` raise it.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import icontract

from app.core.contracts import ensure, ensure_full, invariant
from app.core.errors import ConflictError, InvalidInput
from app.core.memtrim import release_free_memory
from app.core.rules import (
    RECORD,
    SECONDS,
    CollectionName,
    Count,
    FlushInterval,
    Record,
    Seconds,
    check,
    checked,
)


class BufferTarget(Protocol):
    """What a buffer writes to (a ``Context``): typed here so buffer and context do not import
    each other."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> Path: ...

    def append(self, collection: str, records: Any) -> object: ...


MAX_BATCH = 10_000  # most items one flush commits at once (bounds the memory of a flush)
RETRY_PAUSE_S = 0.5

_LIVE: weakref.WeakSet[AppendBuffer] = weakref.WeakSet()  # buffers not closed yet
_LIVE_GUARD = threading.Lock()


def _live() -> list[AppendBuffer]:
    with _LIVE_GUARD:
        return list(_LIVE)


def close_buffers(root: Path) -> None:
    """Close (flush) every open buffer of the store at ``root`` (``Store.close`` calls this).

    Each is tried; the first error is raised after all were tried."""
    first: BaseException | None = None
    for buf in _live():
        if root in buf.context_path.parents:
            try:
                buf.close()
            except Exception as exc:
                first = first or exc
    if first is not None:
        raise first


def _forget_parent_buffers() -> None:
    """In a forked child: the parent's buffers (and their pending items) stay the parent's; the
    child's exit must not write them a second time."""
    global _LIVE_GUARD
    _LIVE_GUARD = threading.Lock()
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_buffers)


@atexit.register
def _close_all_at_exit() -> None:
    """Normal interpreter exit: write what every live buffer still holds (docs/api.md,
    "Concurrency and durability")."""
    for buf in _live():
        try:
            buf.close()
        except Exception as exc:  # nobody to raise to: say what was lost
            print(
                f"ctxstore: buffer {buf.collection!r} could not flush at exit, "
                f"{buf.pending} records lost: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )


def _balanced(counts: Mapping[str, Any]) -> bool:
    """The accounting promise: every accepted item is written, failed or still pending."""
    return bool(
        counts["accepted"] == counts["written"] + counts["failed"] + counts["pending"]
        and counts["pending"] >= 0
    )


@invariant(
    lambda self: 0 <= self._pending <= self.max_pending,
    "pending items stay within the buffer's bound",
    full=True,
)
class AppendBuffer(icontract.DBC):
    """A bounded queue of records flushed to one collection by a background thread."""

    @checked
    def __init__(
        self,
        ctx: BufferTarget,
        collection: CollectionName,
        *,
        max_pending: Count = 100_000,
        flush_every: Count = 1000,
        flush_interval: FlushInterval = 1.0,
    ) -> None:
        self._ctx = ctx
        self.collection = collection
        self.max_pending = max_pending
        self.flush_every = flush_every
        self.flush_interval = flush_interval
        self._lock = threading.Lock()  # guards the queue and the counters
        self._room = threading.Condition(self._lock)  # notified when pending goes down
        self._taken = 0  # items taken from the queue for writing, ever (minus those put back)
        self._urgent = False  # a producer waits for room: flush now, whatever the size
        self._flush_lock = threading.Lock()  # one flusher at a time, batches in order
        self._queue: list[Any] = []
        self._pending = 0
        self.accepted = 0
        self.rejected = 0  # record() calls answered False (buffer full)
        self.written = 0
        self.failed = 0  # items append refused as invalid
        self.last_error: str | None = None
        self._closed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"ctxstore-buffer-{collection}", daemon=True
        )
        self._thread.start()
        with _LIVE_GUARD:
            _LIVE.add(self)

    @property
    def context_path(self) -> Path:
        """The folder of the context this buffer writes to."""
        return self._ctx.path

    def __repr__(self) -> str:
        return (
            f"AppendBuffer({self._ctx.name!r}, {self.collection!r}, pending={self._pending}, "
            f"written={self.written}, failed={self.failed})"
        )

    # -- producers ----------------------------------------------------------------------

    @ensure_full(lambda self: _balanced(self.stats()), "accepted = written + failed + pending")
    def record(self, item: Record, *, timeout: Seconds | None = None) -> bool:
        """Queue one record; ``False`` when the buffer is full.

        Without ``timeout`` it never waits: a full buffer answers ``False`` at once. With
        ``timeout`` (seconds) it waits up to that long for the flusher to make room and answers
        ``False`` only if the buffer is still full then. ``item`` is a mapping or a pydantic
        model; a mapping is copied (shallowly) so later changes by the caller do not leak into
        the store.
        """
        # the per-item hot path: the rules of the annotations are applied inline here (an
        # always-on precondition, ``@checked``, would cost more than the rest of the call)
        if type(item) is dict:
            item = item.copy()
        else:
            check(RECORD, item, "item")
        if timeout is not None:
            check(SECONDS, timeout, "timeout", optional=True)
        with self._lock:
            if self._closed:
                raise ConflictError(f"buffer for {self.collection!r} is closed")
            if self._pending >= self.max_pending and timeout:
                self._wait_for_room(timeout)
            if self._pending >= self.max_pending:
                self.rejected += 1
                full = True
            else:
                full = False
                self._queue.append(item)
                self._pending += 1
                self.accepted += 1
                if len(self._queue) == self.flush_every:
                    self._wake.set()
        if full:
            time.sleep(0)  # let the flusher run: callers often retry at once
            return False
        return True

    def _wait_for_room(self, timeout: float) -> None:
        """Wait (lock held, released while waiting) until there is room, the buffer closes or
        ``timeout`` passes; a waiting producer asks the flusher to write now."""
        deadline = time.monotonic() + timeout
        while self._pending >= self.max_pending and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._urgent = True
            self._wake.set()
            self._room.wait(min(left, self.flush_interval))
        if self._closed:
            raise ConflictError(f"buffer for {self.collection!r} is closed")

    @property
    def pending(self) -> int:
        """Items accepted and not yet written or failed (including a batch being written)."""
        return self._pending

    @ensure(lambda result: _balanced(result), "accepted = written + failed + pending")
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "accepted": self.accepted,
                "rejected": self.rejected,
                "written": self.written,
                "failed": self.failed,
                "pending": self._pending,
                "last_error": self.last_error,
            }

    # -- flushing -----------------------------------------------------------------------

    def _take(self, limit: int) -> list[Any]:
        """Take up to ``limit`` items from the front of the queue (a swap, not a copy)."""
        with self._lock:
            if len(self._queue) <= limit:
                batch, self._queue = self._queue, []
            else:
                batch, self._queue = self._queue[:limit], self._queue[limit:]
            self._taken += len(batch)
            return batch

    def _write(self, batch: list[Any]) -> int:
        """Commit ``batch`` (isolating invalid items); returns how many were written."""
        try:
            self._ctx.append(self.collection, batch)
        except InvalidInput as exc:
            if len(batch) == 1:
                with self._lock:
                    self.failed += 1
                    self._pending -= 1
                    self.last_error = str(exc)[:500]
                    self._room.notify_all()
                return 0
            mid = len(batch) // 2
            return self._write(batch[:mid]) + self._write(batch[mid:])
        with self._lock:
            self.written += len(batch)
            self._pending -= len(batch)
            self._room.notify_all()
        return len(batch)

    def _flush_once(self, limit: int) -> int:
        """Write one batch from the front of the queue (caller holds the flush lock)."""
        batch = self._take(limit)
        if not batch:
            return 0
        try:
            return self._write(batch)
        except BaseException as exc:
            with self._lock:  # keep the items, in order, for a later attempt
                self._queue[:0] = batch
                self._taken -= len(batch)
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            raise

    @ensure(lambda self: _balanced(self.stats()), "accepted = written + failed + pending")
    def flush(self) -> int:
        """Write everything queued now, synchronously; returns how many records were written.

        When it returns, every item recorded before the call was written or counted as failed
        (items recorded meanwhile by other threads may wait for the next flush).
        """
        total = 0
        with self._flush_lock:
            with self._lock:
                target = self._taken + len(self._queue)
            while True:
                with self._lock:
                    if self._taken >= target or not self._queue:
                        return total
                    limit = min(MAX_BATCH, target - self._taken)
                total += self._flush_once(limit)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()  # before looking: a wake-up from now on is not lost
            with self._lock:
                size, urgent, self._urgent = len(self._queue), self._urgent, False
            waited = time.monotonic() - last
            if size and (urgent or size >= self.flush_every or waited >= self.flush_interval):
                try:
                    with self._flush_lock:
                        self._flush_once(MAX_BATCH)
                    last = time.monotonic()
                    continue
                except Exception as exc:  # kept in the queue; flush/close raise it
                    with self._lock:
                        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    self._stop.wait(RETRY_PAUSE_S)
                    last = time.monotonic()
                    continue
            if not size:
                last = time.monotonic()
            self._wake.wait(max(0.001, self.flush_interval - (time.monotonic() - last)))

    # -- lifetime -----------------------------------------------------------------------

    @ensure(lambda self: self._pending == 0 and _balanced(self.stats()), "all written or failed")
    def close(self) -> None:
        """Stop the background thread and write everything still queued (idempotent).

        Producers waiting in ``record(..., timeout=)`` get ``ConflictError``. Once everything
        is written the buffer keeps no reference to any item (nor to its context's data)."""
        with self._lock:
            self._closed = True
            self._room.notify_all()
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self.flush()
        with self._lock:
            self._queue = []
        with _LIVE_GUARD:
            _LIVE.discard(self)
        release_free_memory()  # the items are freed: give their pages back

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> AppendBuffer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
