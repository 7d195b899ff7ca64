"""Give freed heap memory back to the operating system (glibc ``malloc_trim``), where possible.

After a large burst of small objects is freed (an append buffer closed after holding 100k
items), glibc keeps the pages mapped: the process looks as big as at its peak. Trimming once at
such a point costs a few milliseconds; elsewhere (other C libraries) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return fn


def release_free_memory() -> None:
    """Return free heap pages to the OS (no-op without glibc)."""
    trim = _trim()
    if trim is not None:
        trim(0)
