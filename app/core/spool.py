"""A prepared batch kept on disk instead of in memory (docs/api.md, "Records").

A batch too large to hold (``app.core.codec.prepare_batch`` decides) is written, as it is
encoded, to nameless temporary files in a private folder the caller provides (the embedded
store: a ``.spool-*`` staging folder of its contexts folder, locked while in use and swept when
its process was killed). The files have no name (``O_TMPFILE`` or created and unlinked), so even a
killed process gives their space back at once; only the empty folder stays for the sweep.

Each ``SpoolFile`` holds a sequence of items, each an 8-byte little-endian length and the
item's bytes; once sealed it is a sized, re-iterable view: every iteration reads the file again
with ``pread`` in ``READ_CHUNK`` pieces (its own offset, no shared file position), so memory
stays flat however large the batch. ``SizedIterable`` is the type the records seam takes: a
list satisfies it, and so does a spooled view.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol, TypeVar

from app.core.errors import StorageError, io_error

T_co = TypeVar("T_co", covariant=True)

WRITE_BUFFER = 1 << 20
READ_CHUNK = 1 << 20
_LEN = 8
_LENGTH = struct.Struct("<Q")


class SizedIterable(Protocol[T_co]):
    """Anything with a length that can be iterated any number of times (a list, a tuple, a
    spooled view): the shape of a batch on its way to storage."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[T_co]: ...


def _temp_file(folder: Path) -> IO[bytes]:
    """A nameless, unbuffered temporary file in ``folder`` (``O_TMPFILE``, or created and
    unlinked): callers gather their writes themselves, and closing never writes."""
    try:
        return tempfile.TemporaryFile(dir=folder, buffering=0)
    except OSError as exc:
        raise io_error("creating a spool file in", folder, exc) from exc


def _append_all(fh: IO[bytes], data: bytes | bytearray, folder: Path) -> None:
    """Write all of ``data`` at the end of ``fh`` (a short write is continued)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fh.fileno(), view) :]
    except OSError as exc:  # ENOSPC, EFBIG, EIO...
        raise io_error("spooling a batch to", folder, exc) from exc
    finally:
        view.release()


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < size:
        part = os.pread(fd, size - got, offset + got)
        if not part:
            raise StorageError(f"spool file ended early at byte {offset + got}")
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class SpoolFile:
    """One nameless temporary file of length-prefixed items: ``add`` them, ``seal`` it, then
    iterate it (as often as needed); ``close`` frees it."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._fh = _temp_file(folder)
        self._count = 0
        self._size = 0
        self._sealed = False
        self._pending = bytearray()

    def add(self, item: bytes) -> None:
        """Append one item (before ``seal``)."""
        pending = self._pending
        pending += _LENGTH.pack(len(item))
        pending += item
        self._count += 1
        if len(pending) >= WRITE_BUFFER:
            self._write()

    def _write(self) -> None:
        _append_all(self._fh, self._pending, self._folder)
        self._size += len(self._pending)
        self._pending.clear()

    def seal(self) -> None:
        """No more items: write what is pending; the file is readable from now on."""
        self._write()
        self._sealed = True

    @property
    def size(self) -> int:
        """Bytes in the file (items and their length prefixes)."""
        return self._size

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[bytes]:
        if not self._sealed:
            raise RuntimeError("a spool file is read only once sealed")
        return self._items(self._fh.fileno(), self._size)

    def _items(self, fd: int, end: int) -> Iterator[bytes]:
        offset = 0  # of the next read
        buf = b""
        at = 0  # of the next item in ``buf``
        while True:
            if len(buf) - at < _LEN:
                if offset >= end:
                    if at != len(buf):
                        raise StorageError(f"spool file in {self._folder}: torn item")
                    return
                more = _pread_exact(fd, min(READ_CHUNK, end - offset), offset)
                offset += len(more)
                buf, at = buf[at:] + more, 0
                continue
            (n,) = _LENGTH.unpack_from(buf, at)
            start = at + _LEN
            if len(buf) - start < n:
                want = max(n - (len(buf) - start), READ_CHUNK)
                more = _pread_exact(fd, min(want, end - offset), offset)
                offset += len(more)
                buf, at = buf[at:] + more, 0
                if len(buf) - _LEN < n:
                    raise StorageError(f"spool file in {self._folder}: torn item")
                continue
            at = start + n
            yield buf[start:at]

    def close(self) -> None:
        self._fh.close()


class SpooledStrings:
    """A ``SpoolFile`` of strings (ids): the same items, decoded (``surrogatepass``: any
    ``str`` round-trips)."""

    def __init__(self, spool: SpoolFile) -> None:
        self._spool = spool

    def add(self, value: str) -> None:
        self._spool.add(value.encode("utf-8", "surrogatepass"))

    def __len__(self) -> int:
        return len(self._spool)

    def __iter__(self) -> Iterator[str]:
        for item in self._spool:
            yield item.decode("utf-8", "surrogatepass")


class Spool:
    """A batch on disk in ``folder``: its ids, its encoded records (``SpoolFile`` views once
    sealed) and a flag byte per record (a raw side file read back in chunks)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._files: list[SpoolFile] = []
        try:
            self.records = self._open()
            self.ids = SpooledStrings(self._open())
            self._flags = _temp_file(folder)
        except BaseException:
            self.close()
            raise
        self._flag_count = 0

    def _open(self) -> SpoolFile:
        spool = SpoolFile(self._folder)
        self._files.append(spool)
        return spool

    def add_flags(self, flags: bytes | bytearray) -> None:
        """Append per-record flag bytes (callers gather them: each call is a write)."""
        _append_all(self._flags, flags, self._folder)
        self._flag_count += len(flags)

    def flag_chunks(self) -> Iterator[bytes]:
        """The flag bytes written so far, in ``READ_CHUNK`` pieces."""
        fd = self._flags.fileno()
        for offset in range(0, self._flag_count, READ_CHUNK):
            yield _pread_exact(fd, min(READ_CHUNK, self._flag_count - offset), offset)

    def seal(self) -> None:
        for spool in self._files:
            spool.seal()

    def close(self) -> None:
        for spool in self._files:
            spool.close()
        flags = getattr(self, "_flags", None)
        if flags is not None:
            flags.close()


__all__ = ["READ_CHUNK", "SizedIterable", "Spool", "SpoolFile", "SpooledStrings"]
