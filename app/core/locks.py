"""Writer locks: one ``flock`` file per context, re-entrant within a thread, shared by threads.

``Lock`` is what the rest of the code needs of a writer lock (``hold()``); ``WriterLock`` is the
embedded backend's implementation. A server backend provides its own (e.g. a PostgreSQL
advisory lock) and satisfies the same protocol.

``flock`` (what ``filelock`` uses on POSIX) belongs to the open file description, so it survives
an unrelated open/close of the same file in this process (``fcntl`` record locks do not).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from filelock import FileLock, Timeout

from app.core.errors import ConflictError, io_error

DEFAULT_TIMEOUT = 120.0


class Lock(Protocol):
    """A writer lock: serialises writers across threads and processes (on a server backend,
    across machines); re-entrant within a thread."""

    def hold(self, timeout: float | None = None) -> AbstractContextManager[None]:
        """Hold the lock while the ``with`` block runs; ``ConflictError`` if it cannot be had
        within ``timeout`` seconds (default: the lock's own)."""
        ...


class ReentrantLock:
    """What every writer lock shares: re-entrant within a thread (an ``RLock`` in front, and
    a depth count), the outer lock (a file, a server's advisory lock) taken by the outermost
    ``hold`` only. Subclasses give ``_take(wait)``, ``_drop()`` and ``what`` (messages)."""

    what: str
    timeout: float

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._depth = 0

    def _take(self, wait: float) -> None:
        raise NotImplementedError

    def _drop(self) -> None:
        raise NotImplementedError

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock for the duration of the ``with`` block (re-entrant).

        ``ConflictError`` if it cannot be had within ``timeout`` seconds (default: the lock's).
        """
        wait = self.timeout if timeout is None else timeout
        if not self._thread_lock.acquire(timeout=wait):
            raise ConflictError(f"timed out waiting for the writer lock {self.what}")
        try:
            if self._depth == 0:
                self._take(wait)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._drop()
        finally:
            self._thread_lock.release()

    @property
    def held(self) -> bool:
        """True when the calling thread holds the lock."""
        return self._depth > 0 and self._thread_lock._is_owned()  # type: ignore[attr-defined]


class WriterLock(ReentrantLock):
    """Serialises writers across threads (an ``RLock``) and processes (``flock``)."""

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(timeout)
        self.path = path
        self.what = str(path)
        self._file_lock = FileLock(str(path), thread_local=False)

    def _take(self, wait: float) -> None:
        self._acquire_current(wait)

    def _drop(self) -> None:
        self._file_lock.release()

    def _acquire_current(self, wait: float) -> None:
        """Take the file lock, making sure the file locked is the one now at ``path``: the
        folder holding it may have been replaced (an overwrite import, ``save_context``) or
        removed (a dropped context) while this process waited on the old file."""
        deadline = time.monotonic() + wait
        while True:
            gone = ConflictError(f"{self.path.parent} was removed while waiting for its lock")
            if not self.path.parent.is_dir():
                raise gone
            try:
                self._file_lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
            except Timeout:
                raise ConflictError(
                    f"timed out after {wait}s waiting for the writer lock {self.path}"
                ) from None
            except FileNotFoundError as exc:
                if not self.path.parent.is_dir():
                    raise gone from None
                raise io_error("locking", self.path, exc) from exc
            except OSError as exc:
                raise io_error("locking", self.path, exc) from exc
            if self._is_current():
                return
            self._file_lock.release()

    def _is_current(self) -> bool:
        """True when the locked file is still the one at ``path`` (same device and inode)."""
        fd = self._file_lock._context.lock_file_fd
        try:
            held, now = os.fstat(fd) if fd is not None else None, os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise io_error("locking", self.path, exc) from exc
        return held is None or (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
