"""Writer locks: one ``flock`` file per context, re-entrant within a thread, shared by threads.

``flock`` (what ``filelock`` uses on POSIX) belongs to the open file description, so it survives
an unrelated open/close of the same file in this process (``fcntl`` record locks do not).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from app.core.errors import ConflictError, io_error

DEFAULT_TIMEOUT = 120.0


class WriterLock:
    """Serialises writers across threads (an ``RLock``) and processes (``flock``)."""

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._file_lock = FileLock(str(path), thread_local=False)
        self._depth = 0

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock for the duration of the ``with`` block (re-entrant).

        ``ConflictError`` if it cannot be had within ``timeout`` seconds (default: the lock's).
        """
        wait = self.timeout if timeout is None else timeout
        if not self._thread_lock.acquire(timeout=wait):
            raise ConflictError(f"timed out waiting for the writer lock {self.path}")
        try:
            if self._depth == 0:
                try:
                    self._file_lock.acquire(timeout=wait)
                except Timeout:
                    raise ConflictError(
                        f"timed out after {wait}s waiting for the writer lock {self.path}"
                    ) from None
                except OSError as exc:
                    raise io_error("locking", self.path, exc) from exc
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._file_lock.release()
        finally:
            self._thread_lock.release()

    @property
    def held(self) -> bool:
        """True when the calling thread holds the lock."""
        return self._depth > 0 and self._thread_lock._is_owned()  # type: ignore[attr-defined]
