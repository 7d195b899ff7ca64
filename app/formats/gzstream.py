"""Reading a gzip file on a worker thread: ``Inflater`` is a readable stream of the
decompressed bytes, inflated ahead in large blocks while the reader works on earlier ones
(zlib releases the GIL while it inflates).

It accepts what ``gzip.GzipFile`` accepts: members one after another, zero padding between
them (no member at all: empty); each member's CRC-32 and length are checked by zlib
(``zlib.error`` on a mismatch); a stream that ends inside a member raises ``EOFError``.
After every inflated block ``check(compressed, decompressed)`` is called on the worker (byte
counts so far): it raises to stop a decompression bomb before more is inflated; anything
raised on the worker is raised again by the next ``read``. At most ``depth`` blocks of
``block`` bytes are held ahead. This module knows gzip and nothing of archives or contexts.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading
import zlib
from collections.abc import Callable
from typing import IO

BLOCK = 1 << 20
DEPTH = 8
_GZIP = 16 + zlib.MAX_WBITS
_POLL = 0.05


class _Stopped(Exception):
    """The reader went away: the worker ends quietly."""


class Inflater(io.RawIOBase):
    """The decompressed content of the gzip stream ``raw``, inflated on a worker thread.
    Close it (or use it as a context manager) to end the worker."""

    def __init__(
        self,
        raw: IO[bytes],
        check: Callable[[int, int], None],
        *,
        block: int = BLOCK,
        depth: int = DEPTH,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._check = check
        self._block = block
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._current = b""
        self._pos = 0
        self._done = False
        self._thread = threading.Thread(target=self._run, name="ctxstore-inflate", daemon=True)
        self._thread.start()

    # -- worker ---------------------------------------------------------------------------

    def _put(self, item: bytes | BaseException | None) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            self._inflate()
            self._put(None)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the reader, raised there
            try:
                self._put(exc)
            except _Stopped:
                return

    def _inflate(self) -> None:
        compressed = decompressed = 0
        pending = b""
        inflater: zlib._Decompress | None = None
        first = True
        while True:
            if inflater is None:  # between members: zero padding, then a header or the end
                if not first:
                    pending = pending.lstrip(b"\0")
                if not pending:
                    pending = self._raw.read(self._block)
                    compressed += len(pending)
                    if not pending:
                        return  # the end (an empty stream is empty, as for ``gzip``)
                    continue
                inflater = zlib.decompressobj(_GZIP)
                first = False
            if not pending:
                pending = self._raw.read(self._block)
                compressed += len(pending)
                if not pending:
                    raise EOFError("compressed file ended before the end-of-stream marker")
            out = inflater.decompress(pending, self._block)
            if inflater.eof:
                pending, inflater = inflater.unused_data, None
            else:
                pending = inflater.unconsumed_tail
            if out:
                decompressed += len(out)
                self._check(compressed, decompressed)
                self._put(out)

    # -- reader ---------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        """Load the next block; False at the end of the stream."""
        if self._done:
            return False
        item = self._queue.get()
        if item is None:
            self._done = True
            return False
        if isinstance(item, BaseException):
            self._done = True
            raise item
        self._current, self._pos = item, 0
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (fewer at a block's end; ``b""`` only at the end)."""
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        if self._pos >= len(self._current) and not self._next():
            return b""
        start, block = self._pos, self._current
        if start == 0 and size >= len(block):  # the whole block: no copy
            self._pos = len(block)
            return block
        self._pos = min(len(block), start + size)
        return block[start : self._pos]

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            while self._thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    self._queue.get(timeout=_POLL)
            self._thread.join()
        super().close()


__all__ = ["BLOCK", "Inflater"]
