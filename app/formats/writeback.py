"""Starting the write-back of a file's freshly written pages early (Linux
``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so that the ``fsync`` that makes the file durable
finds little left to write and dirty pages never pile up to the kernel's throttling limit.

This is a hint only: it never replaces the ``fsync`` (``app.core.atomic`` still calls it), it
waits for nothing, and where the call does not exist (not Linux, no libc) or fails it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2
MIN_BYTES = 4 << 20  # ranges smaller than this are left to the final fsync


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    call: Callable[[int, int, int, int], int] = fn
    return call


_SYNC_FILE_RANGE = _load()


def available() -> bool:
    """True when ``start`` can start a write-back on this system."""
    return _SYNC_FILE_RANGE is not None


def start(fd: int, offset: int, length: int) -> None:
    """Start writing back the dirty pages of ``[offset, offset + length)`` of the file open at
    ``fd`` (returns without waiting for the device); a no-op where unsupported."""
    if _SYNC_FILE_RANGE is not None and length > 0:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)


class Kicker:
    """Starts the write-back of a file written sequentially, ``MIN_BYTES`` at a time: call
    ``written(end)`` with the file's size so far."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._done = 0

    def written(self, end: int) -> None:
        if end - self._done >= MIN_BYTES:
            start(self._fd, self._done, end - self._done)
            self._done = end
