"""The exported copy of a collection's log: a checked byte copy when compaction would keep
every entry, the compacted copy otherwise.

Compaction (``Context.write_compacted_log``) parses every entry of the log twice to decide
which versions survive, then rewrites every batch. A log without tombstones whose put lines
all name distinct records (decided from the log's bytes, never from the index) has nothing to
drop: it is exported as it stands, its batches as first committed (a batch that carries no
receipt fields is its own receipt), under a new generation. On the embedded backend such a
log is copied (a new header, then the live log's batches copied by the kernel) and the copy
is verified batch by batch (``BatchLog.count_verified``: every checksum, no tail) before it
is used. Anything else (damage, a torn tail, an upsert, a tombstone, a record whose first key
is not ``id``) takes the compaction path, which recovers or refuses the log as before. The
caller holds the context's writer lock, so the log does not grow meanwhile.
"""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path

from app.backends.local import LocalBackend
from app.backends.local.records.collection import new_generation
from app.core import layout
from app.core.errors import IntegrityError, io_error
from app.formats.batchlog import DEL, BatchLog, header_line
from app.managers.context import Context

COPY_CHUNK = 16 << 20
_ID_FIRST = re.compile(rb'\n\{"put":\{"id":"([^"\\\n]*)"')


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Copy bytes ``[start, end)`` of ``src`` to the current end of ``dst`` (both fds):
    ``copy_file_range`` where the kernel offers it, else read/write."""
    pos = start
    try:
        while pos < end:
            n = os.copy_file_range(src, dst, min(COPY_CHUNK, end - pos), pos)
            if n <= 0:
                break
            pos += n
    except OSError:
        pass  # not offered across these file systems: copy the rest by hand
    while pos < end:
        data = os.pread(src, min(COPY_CHUNK, end - pos), pos)
        if not data:
            raise OSError(f"log shrank while copied (at byte {pos}, expected {end})")
        os.write(dst, data)
        pos += len(data)


def _all_current(path: Path, start: int, puts: int) -> bool:
    """Whether the verified log ``path`` (batches from ``start``) holds ``puts`` put lines of
    distinct ids and no tombstone, read from the log alone (not from the index). Only put
    lines whose record has ``id`` as its first key and an id without escapes are recognised
    (a byte search); any other line makes the answer False (the caller then compacts)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size <= start:
            return puts == 0
        with mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ) as mm:
            if mm.find(b"\n" + DEL, start - 1) >= 0:
                return False
            ids = _ID_FIRST.findall(mm, start - 1)
    return len(ids) == puts and len(set(ids)) == puts


def _copy_if_all_current(ctx: Context, collection: str, dest: Path) -> int | None:
    """Copy the live log to ``dest`` (a new generation) if compaction would keep every entry;
    the number of records, or ``None`` (``dest`` then holds garbage: the caller rewrites it).
    Damage or a torn tail in the live log also answers ``None``: the compaction path then
    recovers the log or refuses it, naming it."""
    if not isinstance(ctx.backend, LocalBackend):
        return None
    live = BatchLog(ctx.path / layout.log_name(collection))
    header = live.header()
    new_header = header_line(new_generation())
    try:
        src = os.open(live.path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise io_error("reading", live.path, exc) from exc
    try:
        end = os.fstat(src).st_size
        with open(dest, "wb") as out:
            out.write(new_header)
            out.flush()
            _copy_range(src, out.fileno(), header.length, end)
    except OSError as exc:
        raise io_error("copying", live.path, exc) from exc
    finally:
        os.close(src)
    try:
        puts = BatchLog(dest).count_verified(len(new_header))  # every checksum, no tail
    except IntegrityError:
        return None
    return puts if _all_current(dest, len(new_header), puts) else None


def write_export_log(ctx: Context, collection: str, dest: Path) -> int:
    """Write the exported log of ``collection`` to ``dest``; the number of records in it.
    The caller holds ``ctx.writer_lock``."""
    copied = _copy_if_all_current(ctx, collection, dest)
    if copied is not None:
        return copied
    with open(dest, "wb") as fh:
        written: int = ctx.write_compacted_log(collection, fh)
    return written


__all__ = ["write_export_log"]
