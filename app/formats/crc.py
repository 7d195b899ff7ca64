"""CRC-32 (the zip / gzip checksum, IEEE polynomial) from the fastest implementation present:
ISA-L's (``isal``, carry-less multiply: about 3x zlib's on x86-64) when installed, else
``zlib.crc32``. Both give the same value for the same bytes; both release the GIL on large
buffers."""

from __future__ import annotations

import zlib
from collections.abc import Callable

from typing_extensions import Buffer


def _pick() -> Callable[[Buffer, int], int]:
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.crc32
    fn: Callable[[Buffer, int], int] = isal_zlib.crc32
    return fn


_CRC32 = _pick()


def crc32(data: Buffer, value: int = 0) -> int:
    """The CRC-32 of ``data`` continuing from ``value`` (as ``zlib.crc32``)."""
    return _CRC32(data, value)
