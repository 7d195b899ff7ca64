"""``AppendBuffer``: non-blocking, thread-safe appends for telemetry-style writers (SPEC 11).

``record(item)`` only takes a lock, appends to a list and counts: it never waits for I/O and
returns ``False`` when ``max_pending`` items are waiting (backpressure). A daemon thread commits
batches through ``Context.append`` every ``flush_every`` items or ``flush_interval`` seconds.

Accounting, exact at every instant under the lock: ``accepted == written + failed + pending``.
A batch that ``append`` rejects as invalid is split in halves until the offending items are
isolated; those are counted in ``failed`` (with ``last_error``), never silently dropped. Any
other error (disk full, lock timeout) puts the batch back at the front of the queue; the
background thread retries it later and ``flush``/``close`` raise it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import icontract
from pydantic import BaseModel

from app.core.contracts import EXPENSIVE, ensure
from app.core.errors import ConflictError, InvalidInput

if TYPE_CHECKING:
    from app.managers.context import Context

MAX_BATCH = 50_000  # most items one background flush commits at once
RETRY_PAUSE_S = 0.5


@icontract.invariant(
    lambda self: self._pending >= 0, "pending is never negative", enabled=EXPENSIVE
)
class AppendBuffer(icontract.DBC):
    """A bounded queue of records flushed to one collection by a background thread."""

    def __init__(
        self,
        ctx: Context,
        collection: str,
        *,
        max_pending: int = 100_000,
        flush_every: int = 1000,
        flush_interval: float = 1.0,
    ) -> None:
        self._ctx = ctx
        self.collection = collection
        self.max_pending = max_pending
        self.flush_every = flush_every
        self.flush_interval = flush_interval
        self._lock = threading.Lock()  # guards the queue and the counters
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

    def __repr__(self) -> str:
        return (
            f"AppendBuffer({self._ctx.name!r}, {self.collection!r}, pending={self._pending}, "
            f"written={self.written}, failed={self.failed})"
        )

    # -- producers ----------------------------------------------------------------------

    def record(self, item: Any) -> bool:
        """Queue one record without blocking; ``False`` when the buffer is full.

        ``item`` is a mapping or a pydantic model; a mapping is copied (shallowly) so later
        changes to it by the caller do not leak into the store.
        """
        if type(item) is dict:
            item = item.copy()
        elif not isinstance(item, Mapping | BaseModel):
            raise InvalidInput(
                f"item: expected a mapping or a pydantic model, got {type(item).__name__}"
            )
        with self._lock:
            if self._closed:
                raise ConflictError(f"buffer for {self.collection!r} is closed")
            if self._pending >= self.max_pending:
                self.rejected += 1
                return False
            self._queue.append(item)
            self._pending += 1
            self.accepted += 1
            if len(self._queue) == self.flush_every:
                self._wake.set()
        return True

    @property
    def pending(self) -> int:
        """Items accepted and not yet written or failed (including a batch being written)."""
        return self._pending

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

    def _take(self, limit: int | None) -> list[Any]:
        with self._lock:
            if limit is None or len(self._queue) <= limit:
                batch, self._queue = self._queue, []
            else:
                batch, self._queue = self._queue[:limit], self._queue[limit:]
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
                return 0
            mid = len(batch) // 2
            return self._write(batch[:mid]) + self._write(batch[mid:])
        with self._lock:
            self.written += len(batch)
            self._pending -= len(batch)
        return len(batch)

    def _flush_once(self, limit: int | None) -> int:
        """Write one batch from the front of the queue (caller holds the flush lock)."""
        batch = self._take(limit)
        if not batch:
            return 0
        try:
            return self._write(batch)
        except BaseException as exc:
            with self._lock:  # keep the items, in order, for a later attempt
                self._queue[:0] = batch
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            raise

    @ensure(lambda result: result >= 0, "a written count is never negative")
    def flush(self) -> int:
        """Write everything queued now, synchronously; returns how many records were written.

        When it returns, every item recorded before the call was written or counted as failed.
        """
        total = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    if not self._queue:
                        return total
                total += self._flush_once(MAX_BATCH)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                size = len(self._queue)
            waited = time.monotonic() - last
            if size and (size >= self.flush_every or waited >= self.flush_interval):
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
            self._wake.clear()

    # -- lifetime -----------------------------------------------------------------------

    @ensure(lambda self: self._pending == 0, "nothing is left pending after close")
    def close(self) -> None:
        """Stop the background thread and write everything still queued (idempotent)."""
        with self._lock:
            self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self.flush()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> AppendBuffer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
