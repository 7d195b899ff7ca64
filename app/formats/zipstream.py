"""A minimal streaming writer of uncompressed (stored) zip archives, as NPZ files are.

Why not ``zipfile``: here each member's data can start at an aligned offset (padding in the
local header's extra field, as Android's zipalign does), and the CRC-32 of a member is
computed on a worker thread while this thread writes the data (a data descriptor after the
data carries it), so writing costs about one pass over memory instead of two.

The output is a standard zip (APPNOTE 6.3): ``zipfile`` and ``numpy.load`` read it; zip64
records are written when a size or offset needs them. Timestamps are fixed (1980-01-01), so
equal content gives byte-identical files.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from typing_extensions import Buffer

from app.formats.crc import crc32

LIMIT = 0xFFFFFFFF  # at or above this a size/offset goes to the zip64 extra field
MARK = 0xFFFFFFFF  # the 32-bit field's value when the real one is in a zip64 record
_DOS_TIME, _DOS_DATE = 0, (0 << 9) | (1 << 5) | 1  # 1980-01-01 00:00:00
_FLAGS = 0x08 | 0x800  # data descriptor follows the data; names are UTF-8
_PAD_ID = 0xD935  # the extra-field id zipalign uses for padding
_UNIX = 3 << 8
_ATTRS = 0o100644 << 16
_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")
CHUNK = 16 << 20


class Sink(Protocol):
    def write(self, b: Buffer, /) -> int | None: ...

    def tell(self) -> int: ...


@dataclass(frozen=True)
class Entry:
    name: bytes
    crc: int
    size: int
    offset: int


def _crc(parts: Sequence[memoryview]) -> int:
    crc = 0
    for part in parts:
        for start in range(0, part.nbytes, CHUNK):
            crc = crc32(part[start : start + CHUNK], crc)
    return crc


def _padding(data_start: int, align: int) -> bytes:
    if align <= 1:
        return b""
    size = 4 + (-(data_start + 4)) % align
    return struct.pack("<HH", _PAD_ID, size - 4) + bytes(size - 4)


class ZipStream:
    """Write members one after another to ``out`` (which must offer ``write`` and ``tell``);
    ``close`` writes the central directory. Buffers handed to ``add`` must stay unchanged
    until ``add`` returns."""

    def __init__(self, out: Sink, *, align: int = 64) -> None:
        self._out = out
        self._align = align
        self._entries: list[Entry] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ctxstore-crc")

    def add(self, name: str, parts: Sequence[memoryview], *, data_offset: int = 0) -> None:
        """Add a stored member whose data is ``parts`` concatenated. The byte at
        ``data_offset`` within the data (e.g. just after an ``.npy`` header) is aligned."""
        encoded = name.encode("utf-8")
        size = sum(p.nbytes for p in parts)
        offset = self._out.tell()
        zip64 = size >= LIMIT
        extra = struct.pack("<HHQQ", 1, 16, 0, 0) if zip64 else b""
        extra += _padding(
            offset + _LOCAL.size + len(encoded) + len(extra) + data_offset, self._align
        )
        marker = MARK if zip64 else 0
        self._out.write(
            _LOCAL.pack(
                b"PK\x03\x04",
                45 if zip64 else 20,
                _FLAGS,
                0,
                _DOS_TIME,
                _DOS_DATE,
                0,
                marker,
                marker,
                len(encoded),
                len(extra),
            )
            + encoded
            + extra
        )
        crc_future = self._pool.submit(_crc, parts)
        try:
            for part in parts:
                for begin in range(0, part.nbytes, CHUNK):
                    self._out.write(part[begin : begin + CHUNK])
        finally:
            crc = crc_future.result()
        if zip64:
            self._out.write(struct.pack("<4sLQQ", b"PK\x07\x08", crc, size, size))
        else:
            self._out.write(struct.pack("<4s3L", b"PK\x07\x08", crc, size, size))
        self._entries.append(Entry(encoded, crc, size, offset))

    def close(self) -> None:
        """Write the central directory and end records; the archive is then complete."""
        self._pool.shutdown(wait=True)
        cd_start = self._out.tell()
        for e in self._entries:
            fields = ([e.size, e.size] if e.size >= LIMIT else []) + (
                [e.offset] if e.offset >= LIMIT else []
            )
            extra = (
                struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
            )
            size32 = MARK if e.size >= LIMIT else e.size
            self._out.write(
                _CENTRAL.pack(
                    b"PK\x01\x02",
                    _UNIX | 45,
                    45 if fields else 20,
                    _FLAGS,
                    0,
                    _DOS_TIME,
                    _DOS_DATE,
                    e.crc,
                    size32,
                    size32,
                    len(e.name),
                    len(extra),
                    0,
                    0,
                    0,
                    _ATTRS,
                    MARK if e.offset >= LIMIT else e.offset,
                )
                + e.name
                + extra
            )
        cd_size = self._out.tell() - cd_start
        count = len(self._entries)
        if cd_start >= LIMIT or cd_size >= LIMIT or count >= 0xFFFF:
            end64 = self._out.tell()
            self._out.write(
                _END64.pack(
                    b"PK\x06\x06", 44, _UNIX | 45, 45, 0, 0, count, count, cd_size, cd_start
                )
            )
            self._out.write(_LOCATOR64.pack(b"PK\x06\x07", 0, end64, 1))
        n16 = min(count, 0xFFFF)
        size32 = MARK if cd_size >= LIMIT else cd_size
        start32 = MARK if cd_start >= LIMIT else cd_start
        self._out.write(_END.pack(b"PK\x05\x06", 0, 0, n16, n16, size32, start32, 0))

    def abort(self) -> None:
        self._pool.shutdown(wait=True)
