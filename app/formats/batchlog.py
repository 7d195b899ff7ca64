"""The JSONL batch log: an append-only file of checksummed, all-or-nothing batches.

Layout (one JSON object per line, written by this module only)::

    {"log":{"format":1,"generation":"<hex>"}}          header, first line
    {"put":{...record, sorted keys...}}                a record version
    {"del":"<id>"}                                     a tombstone
    {"commit":{"batch":B,"kind":K,"at":T,"n":N,"sha256":S[,"rc":C,"rs":D][,"req":R]}}

A batch is its entry lines followed by one commit line. ``S`` is the SHA-256 of the batch's
entry-line bytes followed by the canonical JSON of ``[B, K, T, N]`` (plus ``C, D`` when the
batch was rewritten by compaction, plus ``R`` when present), so a flipped bit anywhere in a
batch, its commit line included, is detected. ``R`` (optional, added in v2 without changing the
format number) is the request digest of the idempotency check (docs/api.md, idempotent
batches); commit lines written without it still read, and a batch without it is treated as a
legacy duplicate.

After the last valid commit, bytes that contain no further valid commit are a torn tail (the
writer died): a ``LogScan`` reports where the tail starts and the owner truncates it under its
writer lock. Damage followed by a valid commit is corruption and raises ``IntegrityError``; it
is never skipped.

This module alone knows the line syntax. Callers hand it encoded records (the canonical JSON
bytes of each record) and tombstoned ids, and get back offsets:

- ``BatchLog.write_batch(offset, puts=..., deletes=...)`` appends one batch and returns a
  ``WrittenBatch`` (start, end, digest); ``put_offsets`` gives the offset of each record's
  line in it (the index's ``pos``), ``placed_puts`` the same with each id and record;
- ``BatchLog.scan(start)`` returns a ``LogScan``: iterate it for the verified ``Batch``es
  (whose ``Entry``s carry offsets, ids and record bytes), then read where it stopped;
- ``LogWriter`` writes a whole new log (compaction, export) batch by batch.

This module knows one file format and nothing of contexts, indexes or locks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import mmap
import operator
import os
import weakref
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import orjson

from app.core.atomic import write_atomic
from app.core.errors import IntegrityError, SchemaVersionError, io_error
from app.core.spool import SizedIterable

LOG_FORMAT = 1
PUT = b'{"put":'
DEL = b'{"del":'
COMMIT = b'{"commit":'
_END = b"}\n"
_PUT_LINE = b"\n" + PUT
_PUT_SEP = _END + PUT
FRAME = len(PUT) + len(_END)
"""Bytes an entry line adds around its JSON (the put and del prefixes have the same length)."""
WRITE_CHUNK = 4 << 20
LAZY_BATCH = 16 << 20
RELEASE_EVERY = 64 << 20
"""A scan hands the pages of the log it has read back to the kernel (``MADV_DONTNEED``) every
this many bytes, so a pass over a large log does not keep it all resident in the process."""
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
"""A scanned batch whose entry lines pass this many bytes is not held: its ``entries`` are a
``MappedEntries`` view that reads them again when iterated (flat memory for huge batches)."""


# -- what the log holds ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry line at offset ``pos``: a record version (``data`` = its canonical JSON) or
    a tombstone (``data`` is None)."""

    pos: int
    record_id: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class Batch:
    """A committed batch as found in (or written to) the log: ``[start, end)`` are its bytes,
    ``sha256`` the digest in its commit line; ``receipt_count`` / ``receipt_sha256`` are the
    count and digest of the batch as first committed (a compaction keeps them)."""

    batch_id: str
    kind: str
    committed_at: str
    sha256: str
    start: int
    end: int
    entries: SizedIterable[Entry]
    receipt_count: int
    receipt_sha256: str
    req: str | None = None


class MappedEntries:
    """The entries of one large, already verified batch, read again from the log each time
    they are iterated (``READ_CHUNK``-sized ``pread``s on a duplicate of the scan's file
    descriptor: the same file even if the log is renamed or replaced meanwhile). ``len`` is
    the number of entries, ``puts`` the number of record versions among them."""

    READ_CHUNK = 4 << 20

    def __init__(self, path: Path, fd: int, start: int, end: int, count: int, puts: int) -> None:
        self.path = path
        self.start = start
        self.end = end
        self.puts = puts
        self._count = count
        self._fd = os.dup(fd)
        self._closer = weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Entry]:
        fd, end = self._fd, self.end
        offset = self.start  # of the next read
        rest = b""  # a partial line carried over from the previous read
        line_pos = offset  # of the first byte of ``rest``
        while offset < end:
            try:
                chunk = os.pread(fd, min(self.READ_CHUNK, end - offset), offset)
            except OSError as exc:
                raise io_error("reading", self.path, exc) from exc
            if not chunk:
                raise IntegrityError(f"{self.path}: log ends inside the batch at {self.start}")
            offset += len(chunk)
            data = rest + chunk
            at = 0
            while (nl := data.find(b"\n", at)) >= 0:
                entry = _parse_entry(data[at : nl + 1], line_pos + at)
                if entry is None:
                    raise IntegrityError(f"{self.path}: damaged data at byte {line_pos + at}")
                yield entry
                at = nl + 1
            rest = data[at:]
            line_pos += at
        if rest:
            raise IntegrityError(f"{self.path}: damaged data at byte {line_pos}")

    def close(self) -> None:
        self._closer()


class Receipt(NamedTuple):
    """The entry count and digest of a batch as first committed (kept by a compaction)."""

    entries: int
    sha256: str


class CommitMeta(NamedTuple):
    """The fields of one commit line (``entries`` is its ``n``: the batch's entry lines)."""

    batch_id: str
    kind: str
    committed_at: str
    entries: int
    sha256: str
    receipt: Receipt | None = None
    req: str | None = None


class LogHeader(NamedTuple):
    """A log's header: its generation (new at every rewrite) and its length in bytes (the
    offset of the first batch)."""

    generation: str
    length: int


class WrittenBatch(NamedTuple):
    """A batch just appended: its bytes ``[start, end)`` and the digest of its commit line."""

    start: int
    end: int
    sha256: str


# -- encoding -------------------------------------------------------------------------------


def _meta_bytes(meta: CommitMeta) -> bytes:
    fields: list[object] = [meta.batch_id, meta.kind, meta.committed_at, meta.entries]
    if meta.receipt is not None:
        fields += meta.receipt
    if meta.req is not None:
        fields.append(meta.req)  # unambiguous: receipts add an int first, a request digest a str
    return orjson.dumps(fields)


def _commit_digest(body: bytes | memoryview, meta: CommitMeta) -> str:
    h = hashlib.sha256(body)
    h.update(_meta_bytes(meta))
    return h.hexdigest()


def _encode_commit(meta: CommitMeta) -> bytes:
    fields: dict[str, object] = {
        "batch": meta.batch_id,
        "kind": meta.kind,
        "at": meta.committed_at,
        "n": meta.entries,
        "sha256": meta.sha256,
    }
    if meta.receipt is not None:
        fields["rc"], fields["rs"] = meta.receipt
    if meta.req is not None:
        fields["req"] = meta.req
    return COMMIT + orjson.dumps(fields) + _END


def _closing(h: hashlib._Hash, meta: CommitMeta) -> tuple[bytes, str]:
    """The commit line for ``meta`` once ``h`` has taken every entry line of its batch."""
    h.update(_meta_bytes(meta))
    digest = h.hexdigest()
    return _encode_commit(meta._replace(sha256=digest)), digest


def header_line(generation: str) -> bytes:
    return orjson.dumps({"log": {"format": LOG_FORMAT, "generation": generation}}) + b"\n"


def put_line(encoded: bytes) -> bytes:
    """The entry line of a record whose canonical JSON is ``encoded`` (for tests and tools
    that forge logs; writers hand records to ``BatchLog.write_batch``)."""
    return PUT + encoded + _END


def del_line(record_id: str) -> bytes:
    """The tombstone line of ``record_id`` (see ``put_line``)."""
    return DEL + orjson.dumps(record_id) + _END


def commit_line(
    lines: Sequence[bytes],
    batch_id: str,
    kind: str,
    at: str,
    receipt: tuple[int, str] | None = None,
    req: str | None = None,
) -> tuple[bytes, str]:
    """The commit line closing the entry ``lines`` and the batch digest it carries (for tests
    and tools that forge logs).

    ``receipt`` keeps the original ``(count, sha256)`` of a batch rewritten by compaction;
    ``req`` is the request digest (``Batch.req``).
    """
    h = hashlib.sha256()
    for line in lines:
        h.update(line)
    kept = None if receipt is None else Receipt(*receipt)
    return _closing(h, CommitMeta(batch_id, kind, at, len(lines), "", kept, req))


def put_offsets(start: int, puts: Iterable[bytes]) -> Iterator[int]:
    """The offset of each record's line in a batch written at ``start`` with ``puts`` (as
    ``BatchLog.write_batch`` lays them out: puts first, in order)."""
    pos = start
    for data in puts:
        yield pos
        pos += len(data) + FRAME


def placed_puts(
    start: int, ids: Iterable[str], puts: Iterable[bytes]
) -> Iterator[tuple[int, str, bytes]]:
    """``(offset of its line, id, record)`` for each record of a batch written at ``start``
    with ``puts`` (``ids`` in the same order; a different count is a ``ValueError``): one
    pass over each, so a spooled batch is read once more, not twice."""
    pos = start
    for rid, data in zip(ids, puts, strict=True):
        yield pos, rid, data
        pos += len(data) + FRAME


def _entry_chunks(puts: Iterable[bytes], deletes: Iterable[str]) -> Iterator[bytes]:
    """The entry lines of a batch (puts, then tombstones), joined into ~``WRITE_CHUNK``
    pieces: the batch is never held twice."""
    group: list[bytes] = []
    size = 0
    for data in puts:
        group.append(data)
        size += len(data) + FRAME
        if size >= WRITE_CHUNK:
            yield b"".join((PUT, _PUT_SEP.join(group), _END))
            group, size = [], 0
    if group:
        yield b"".join((PUT, _PUT_SEP.join(group), _END))
    lines: list[bytes] = []
    size = 0
    for record_id in deletes:
        line = del_line(record_id)
        lines.append(line)
        size += len(line)
        if size >= WRITE_CHUNK:
            yield b"".join(lines)
            lines, size = [], 0
    if lines:
        yield b"".join(lines)


def _entry_line(entry: Entry) -> bytes:
    return del_line(entry.record_id) if entry.data is None else put_line(entry.data)


def _pwrite_all(fd: int, data: bytes, pos: int) -> int:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, pos)
        pos += written
        view = view[written:]
    return pos


# -- one log file ---------------------------------------------------------------------------


class BatchLog:
    """One collection's log file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- creation and header ------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.exists()

    def create(self, generation: str) -> int:
        """Atomically create (or replace) the log holding only its header; returns its size."""
        header = header_line(generation)
        write_atomic(self.path, header)
        return len(header)

    def header(self) -> LogHeader:
        """The log's header; ``IntegrityError`` if it is damaged."""
        try:
            with open(self.path, "rb") as fh:
                line = fh.readline(4096)
        except OSError as exc:
            raise io_error("reading", self.path, exc) from exc
        return _parse_header(line, self.path)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise io_error("reading", self.path, exc) from exc

    # -- writing ------------------------------------------------------------------------

    def write_batch(
        self,
        offset: int,
        *,
        batch_id: str,
        kind: str,
        committed_at: str,
        puts: SizedIterable[bytes] = (),
        deletes: SizedIterable[str] = (),
        req: str | None = None,
    ) -> WrittenBatch:
        """Write one batch at ``offset`` (the records ``puts``, given as their canonical JSON,
        then tombstones for ``deletes``) closed by its commit line, and fsync. ``puts`` and
        ``deletes`` are iterated once, in ``WRITE_CHUNK`` pieces: a batch of any size (e.g. a
        spooled one, ``app.core.spool``) is never held whole.

        On any failure the file is truncated back to ``offset`` before the error is raised,
        so a failed write never leaves bytes that a later append would bury. ``put_offsets``
        gives where each record's line went.
        """
        meta = CommitMeta(batch_id, kind, committed_at, len(puts) + len(deletes), "", None, req)
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError as exc:
            raise io_error("opening", self.path, exc) from exc
        pos = offset
        try:
            h = hashlib.sha256()
            pending = b""
            for chunk in _entry_chunks(puts, deletes):
                h.update(chunk)
                if pending:
                    pos = _pwrite_all(fd, pending, pos)
                pending = chunk
            commit, digest = _closing(h, meta)
            pos = _pwrite_all(fd, pending + commit, pos)
            os.fsync(fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, offset)
                os.fsync(fd)
            if isinstance(exc, OSError):
                raise io_error("appending to", self.path, exc) from exc
            raise
        finally:
            os.close(fd)
        return WrittenBatch(offset, pos, digest)

    def truncate(self, offset: int) -> None:
        """Cut the file back to ``offset`` (a torn tail) durably."""
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise io_error("truncating", self.path, exc) from exc

    # -- reading ------------------------------------------------------------------------

    def scan(self, start: int) -> LogScan:
        """Every committed batch from ``start`` (a batch boundary), in order, as a ``LogScan``
        (iterate it; then read where it stopped)."""
        return LogScan(self.path, start)

    def _verified(self, mm: mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """``(batch start, commit line start, batch end)`` of each batch in ``[start, end)``,
        checksum verified, found by jumping from commit line to commit line (entries are not
        parsed: the checksum vouches for them). ``IntegrityError`` on any damage."""
        pos = start
        while pos < end:
            at = mm.find(b"\n" + COMMIT, pos - 1, end)
            line_end = mm.find(b"\n", at + 1, end) + 1 if at >= 0 else 0
            meta = _parse_commit(mm[at + 1 : line_end]) if line_end > 0 else None
            if meta is None:
                raise IntegrityError(f"{self.path}: damaged batch at byte {pos}")
            body = memoryview(mm)[pos : at + 1]
            try:
                n = mm[pos : at + 1].count(b"\n")
                ok = n == meta.entries and _commit_digest(body, meta) == meta.sha256
            finally:
                body.release()
            if not ok:
                raise IntegrityError(f"{self.path}: checksum mismatch at byte {pos}")
            yield pos, at + 1, line_end
            pos = line_end

    def _mapped(self) -> tuple[IO[bytes], int]:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - the callers close it
        except OSError as exc:
            raise io_error("reading", self.path, exc) from exc
        return fh, os.fstat(fh.fileno()).st_size

    def request_digest(self, start: int, end: int, batch_id: str) -> str | None:
        """The request digest of the batch committed at ``[start, end)`` (checksum verified;
        ``None`` for a commit line written before digests existed). ``IntegrityError`` if no
        valid batch ``batch_id`` is there."""
        fh, size = self._mapped()
        with fh:
            if end > size or end <= start:
                raise IntegrityError(f"{self.path}: batch {batch_id[:80]!r} ends past the log")
            with mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ) as mm:
                found = list(self._verified(mm, start, end))
                if len(found) != 1:
                    raise IntegrityError(f"{self.path}: no single batch at byte {start}")
                _, commit_start, _ = found[0]
                meta = _parse_commit(mm[commit_start:end])
        if meta is None or meta.batch_id != batch_id:
            raise IntegrityError(f"{self.path}: batch {batch_id[:80]!r} is not at byte {start}")
        return meta.req

    def count_verified(self, start: int) -> int:
        """Verify every batch from ``start`` to the end of the file (which must end with a
        commit: no tail) and return the number of record versions (put lines) in them."""
        fh, size = self._mapped()
        puts = 0
        with fh:
            if size <= start:
                return 0
            with mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ) as mm:
                for batch_start, commit_start, _ in self._verified(mm, start, size):
                    body = mm[batch_start:commit_start]
                    puts += body.count(b"\n" + PUT) + body.startswith(PUT)
        return puts

    def find_id_lines(self, record_id: str) -> list[int]:
        """Offsets of the entry lines that may concern ``record_id`` (a byte search; callers
        parse and verify the batches found)."""
        key = orjson.dumps(record_id)
        needles = (b'"id":' + key, DEL + key + _END)
        found: set[int] = set()
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise io_error("reading", self.path, exc) from exc
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return []
            with mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ) as mm:
                for needle in needles:
                    at = mm.find(needle)
                    while at >= 0:
                        found.add(mm.rfind(b"\n", 0, at) + 1)
                        at = mm.find(needle, at + len(needle))
        return sorted(found)


class LogScan(Iterator[Batch]):
    """One pass over a log's committed batches from ``start``, and where it stopped.

    Iterate it for the batches, checksum verified and in order (``IntegrityError`` on damage
    followed by a valid commit). Its attributes describe what has been read so far, and once
    the iteration is over, the whole file:

    - ``valid_end``: the end of the last valid commit (``start`` before the first);
    - ``tail``: True when bytes after ``valid_end`` hold no valid commit (a torn write: the
      owner truncates the file to ``valid_end`` under its writer lock);
    - ``size``: the file's size when the pass opened it (0 if it does not exist).

    It replaces a state object the caller had to pass in and read back: the scan is the
    state. A scan is iterated once; stopping early leaves ``valid_end`` at the last batch
    read.
    """

    def __init__(self, path: Path, start: int) -> None:
        self.path = path
        self.valid_end = start
        self.size = 0
        self.tail = False
        self._released = start - start % mmap.PAGESIZE
        self._batches = self._run(start)

    def __next__(self) -> Batch:
        return next(self._batches)

    def close(self) -> None:
        """Stop early and release the file now (else it is released when the scan is)."""
        self._batches.close()

    def _run(self, start: int) -> Generator[Batch, None, None]:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return
        except OSError as exc:
            raise io_error("reading", self.path, exc) from exc
        with fh:
            size = os.fstat(fh.fileno()).st_size
            self.size = size
            if size <= start:
                return
            with mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ) as mm:
                yield from self._scan_mapped(mm, fh.fileno(), start, size)

    def _scan_mapped(
        self, mm: mmap.mmap, fd: int, start: int, size: int
    ) -> Generator[Batch, None, None]:
        pos = batch_start = start
        entries: list[Entry] = []
        count = puts = 0  # entry lines of the batch so far, record versions among them
        held = True  # False past LAZY_BATCH bytes: entries are checked, not kept
        while pos < size:
            nl = mm.find(b"\n", pos)
            if nl < 0:
                break  # partial last line: part of a torn tail
            line = mm[pos : nl + 1]
            if line.startswith(PUT) or line.startswith(DEL):
                entry = _parse_entry(line, pos)
                if entry is None:
                    self._damage_or_tail(mm, pos, nl)
                    return
                count += 1
                puts += entry.data is not None
                if pos - self._released >= RELEASE_EVERY:
                    self._release(mm, pos)
                if held:
                    entries.append(entry)
                    if nl - batch_start >= LAZY_BATCH:
                        held, entries = False, []
            elif line.startswith(COMMIT):
                meta = _parse_commit(line)
                if meta is None:
                    self._damage_or_tail(mm, pos, nl)
                    return
                digest = self._digest(mm, batch_start, pos, meta)
                ok = meta.entries == count and digest == meta.sha256
                if not ok:
                    raise IntegrityError(
                        f"{self.path}: checksum mismatch in batch {meta.batch_id!r} "
                        f"(bytes {batch_start}-{nl + 1})"
                    )
                end = nl + 1
                receipt = meta.receipt or Receipt(meta.entries, meta.sha256)
                found: SizedIterable[Entry] = (
                    entries if held else MappedEntries(self.path, fd, batch_start, pos, count, puts)
                )
                yield Batch(
                    meta.batch_id,
                    meta.kind,
                    meta.committed_at,
                    meta.sha256,
                    batch_start,
                    end,
                    found,
                    receipt.entries,
                    receipt.sha256,
                    meta.req,
                )
                self.valid_end = end
                batch_start = end
                entries, count, puts, held = [], 0, 0, True
            else:
                self._damage_or_tail(mm, pos, nl)
                return
            pos = nl + 1
        if batch_start < size:
            self.tail = True
            self.valid_end = batch_start

    def _release(self, mm: mmap.mmap, upto: int) -> None:
        """Let the pages of the mapping before ``upto`` go (they are read again from the page
        cache if touched later): a scan's resident memory stays near ``RELEASE_EVERY``."""
        end = upto - upto % mmap.PAGESIZE
        if _DONTNEED is not None and end > self._released:
            mm.madvise(_DONTNEED, self._released, end - self._released)
        self._released = max(self._released, end)

    def _digest(self, mm: mmap.mmap, start: int, end: int, meta: CommitMeta) -> str:
        """``_commit_digest`` of the batch body ``[start, end)``, hashed ``RELEASE_EVERY`` bytes
        at a time with the pages released behind."""
        h = hashlib.sha256()
        for at in range(start, end, RELEASE_EVERY):
            with memoryview(mm)[at : min(end, at + RELEASE_EVERY)] as body:
                h.update(body)
            if end - start > RELEASE_EVERY:
                self._released = min(self._released, at - at % mmap.PAGESIZE)
                self._release(mm, min(end, at + RELEASE_EVERY))
        h.update(_meta_bytes(meta))
        return h.hexdigest()

    def _damage_or_tail(self, mm: mmap.mmap, pos: int, nl: int) -> None:
        """A bad line: corruption if a valid commit follows it, else the torn tail."""
        search = nl
        while True:
            at = mm.find(b"\n" + COMMIT, search)
            if at < 0:
                break
            end = mm.find(b"\n", at + 1)
            if end >= 0 and _parse_commit(mm[at + 1 : end + 1]) is not None:
                raise IntegrityError(f"{self.path}: damaged data at byte {pos}")
            search = at + 1
        self.tail = True


class BatchReader:
    """Reads a log's committed batches at byte ranges the caller already knows (the index's
    batch rows), each checksum verified before any of its records is handed out.

    Open it, compare ``generation`` with the generation the ranges belong to, then call
    ``batch`` per range in log order. The file descriptor is held until ``close``: a log
    replaced meanwhile (compaction) is still read as it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise io_error("reading", path, exc) from exc
        try:
            first = self._read_upto(0, 4096)
            header = _parse_header(first[: first.find(b"\n") + 1 or len(first)], path)
        except BaseException:
            os.close(self._fd)
            raise
        self.generation = header.generation
        self.header_length = header.length

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> BatchReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_upto(self, start: int, size: int) -> bytes:
        try:
            return os.pread(self._fd, size, start)
        except OSError as exc:
            raise io_error("reading", self.path, exc) from exc

    def _read(self, start: int, end: int) -> bytes:
        data = self._read_upto(start, end - start)
        if len(data) != end - start:
            raise IntegrityError(f"{self.path}: the log ends before byte {end}")
        return data

    def _pieces(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``[start, end)`` as whole lines, about ``MappedEntries.READ_CHUNK`` at a time."""
        rest = b""
        at = start
        while at < end:
            chunk = self._read(at, min(end, at + MappedEntries.READ_CHUNK))
            at += len(chunk)
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                rest += chunk
                continue
            yield rest + chunk[:cut]
            rest = chunk[cut:]
        if rest:
            raise IntegrityError(f"{self.path}: damaged data at byte {end - len(rest)}")

    def batch(self, start: int, end: int) -> ReadBatch:
        """The batch at ``[start, end)``, verified (its commit line closes the range and its
        SHA-256 matches; the bytes are then the writer's, whose commit counts its lines, so
        ``only_puts`` when the put lines are as many); ``IntegrityError`` otherwise. A batch
        of up to ``LAZY_BATCH`` bytes is read once; a larger one is hashed a piece at a time
        and read again when its records are iterated, so it is never held whole."""
        tail = self._read(max(start, end - 4096), end)
        nl = tail.rfind(b"\n", 0, len(tail) - 1)
        if nl < 0 and end - start > len(tail):
            tail = self._read(start, end)  # a commit line over 4 KiB (a long batch id)
            nl = tail.rfind(b"\n", 0, len(tail) - 1)
        commit_at = end - len(tail) + nl + 1
        meta = _parse_commit(tail[nl + 1 :])
        if meta is None or not tail.endswith(b"\n"):
            raise IntegrityError(f"{self.path}: damaged batch at byte {start}")
        h = hashlib.sha256()
        puts = 0
        body: bytes | None = None
        if commit_at - start <= LAZY_BATCH:
            body = self._read(start, commit_at)
            h.update(body)
            puts = _put_lines(body)
        else:
            for piece in self._pieces(start, commit_at):
                h.update(piece)
                puts += _put_lines(piece)
        h.update(_meta_bytes(meta))
        if h.hexdigest() != meta.sha256:
            raise IntegrityError(f"{self.path}: checksum mismatch at byte {start}")
        dels = puts != meta.entries
        return ReadBatch(self, start, commit_at, meta.kind, not dels, body)


def _put_lines(lines: bytes) -> int:
    """How many of the whole entry lines ``lines`` are record versions (a ``{"put":`` nested
    in a record is never at a line start: JSON text holds no raw newline)."""
    return lines.count(_PUT_LINE) + lines.startswith(PUT)


class ReadBatch(NamedTuple):
    """A verified batch (``BatchReader.batch``): entry lines ``[start, body_end)``;
    ``only_puts`` when every one of them is a record version."""

    reader: BatchReader
    start: int
    body_end: int
    kind: str
    only_puts: bool
    body: bytes | None

    def _bodies(self) -> Iterator[bytes]:
        if self.body is not None:
            yield self.body
        else:
            yield from self.reader._pieces(self.start, self.body_end)

    def records(self) -> Iterator[dict[str, object]]:
        """Every record of a batch that holds only record versions, decoded: a C-level
        iterator (lines of the verified bytes, parsed, their record taken), so a pass costs
        about what parsing the lines does."""
        if not self.only_puts:
            raise ValueError("the batch holds tombstones")
        take = operator.itemgetter("put")
        return itertools.chain.from_iterable(
            map(take, map(orjson.loads, io.BytesIO(body))) for body in self._bodies()
        )

    def entries(self) -> Iterator[Entry]:
        """The batch's entries with their offsets (each line parsed)."""
        pos = self.start
        for body in self._bodies():
            for line in io.BytesIO(body):
                entry = _parse_entry(line, pos)
                if entry is None:
                    raise IntegrityError(f"{self.reader.path}: damaged data at byte {pos}")
                yield entry
                pos += len(line)
        if pos != self.body_end:
            raise IntegrityError(f"{self.reader.path}: damaged data at byte {pos}")


class LogWriter:
    """Writes a whole new log to an open binary file: its header, then batches rewritten from
    an existing log (compaction, a compacted copy for export). ``end`` is the offset the next
    batch starts at."""

    def __init__(self, fh: IO[bytes], generation: str, where: Path | None = None) -> None:
        """``where`` names the log being written in errors (default: the file's name)."""
        self._fh = fh
        self._where = where if where is not None else Path(str(getattr(fh, "name", "log")))
        header = header_line(generation)
        fh.write(header)
        self.end = len(header)

    def rewrite(self, batch: Batch, kept: Iterable[Entry], *, keep_entries: bool = True) -> Batch:
        """Write the entries ``kept`` of ``batch`` (in order) closed by a commit line that
        carries over every field of the original (batch id, kind, time, its receipt and
        request digest; ``n`` and ``sha256`` are recomputed for the kept lines). An emptied
        batch stays as its commit line, so batch ids stay idempotent. Returns the batch as
        written: new offsets, the original receipt.

        Lines are written ``WRITE_CHUNK`` bytes at a time as ``kept`` is iterated, so a huge
        batch is never held: past ``LAZY_BATCH`` bytes the returned entries are a
        ``MappedEntries`` view reading them back from the file (which must then be readable),
        or, with ``keep_entries`` False, empty (the caller needs only the file)."""
        start = pos = self.end
        group: list[bytes] = []
        size = count = puts = 0
        entries: list[Entry] = []
        held = keep_entries
        h = hashlib.sha256()
        for e in kept:
            line = _entry_line(e)
            h.update(line)
            group.append(line)
            size += len(line)
            count += 1
            puts += e.data is not None
            if held:
                entries.append(Entry(pos, e.record_id, e.data))
            pos += len(line)
            if size >= WRITE_CHUNK:
                self._fh.write(b"".join(group))
                group, size = [], 0
            if held and pos - start >= LAZY_BATCH:
                held, entries = False, []
        receipt = Receipt(batch.receipt_count, batch.receipt_sha256)
        meta = CommitMeta(
            batch.batch_id, batch.kind, batch.committed_at, count, "", receipt, batch.req
        )
        commit, digest = _closing(h, meta)
        self._fh.write(b"".join(group))
        self._fh.write(commit)
        self.end = pos + len(commit)
        found: SizedIterable[Entry] = entries
        if keep_entries and not held:
            self._fh.flush()
            found = MappedEntries(self._where, self._fh.fileno(), start, pos, count, puts)
        return Batch(
            batch.batch_id,
            batch.kind,
            batch.committed_at,
            digest,
            start,
            self.end,
            found,
            receipt.entries,
            receipt.sha256,
            batch.req,
        )


# -- parsing --------------------------------------------------------------------------------


def _parse_entry(line: bytes, pos: int) -> Entry | None:
    if not line.endswith(_END):
        return None
    body = line[len(PUT) : -len(_END)]  # PUT and DEL prefixes have the same length
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if line.startswith(PUT):
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            return None
        return Entry(pos, value["id"], body)
    if not isinstance(value, str):
        return None
    return Entry(pos, value, None)


def _parse_header(line: bytes, path: Path) -> LogHeader:
    """The header in ``line`` (the log's first line, read up to 4096 bytes)."""
    try:
        meta = orjson.loads(line)["log"]
        fmt, generation = meta["format"], meta["generation"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise IntegrityError(f"{path}: damaged log header") from None
    if not isinstance(fmt, int) or not isinstance(generation, str) or not line.endswith(b"\n"):
        raise IntegrityError(f"{path}: damaged log header")
    if fmt > LOG_FORMAT:
        raise SchemaVersionError(f"{path}: log format {fmt} is newer than {LOG_FORMAT}")
    return LogHeader(generation, len(line))


def _parse_commit(line: bytes) -> CommitMeta | None:
    if not line.endswith(_END):
        return None
    try:
        meta = orjson.loads(line[len(COMMIT) : -len(_END)])
        batch_id, kind, at, n, digest = (
            meta["batch"],
            meta["kind"],
            meta["at"],
            meta["n"],
            meta["sha256"],
        )
        receipt = (meta["rc"], meta["rs"]) if "rc" in meta else None
        req = meta.get("req")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not all(isinstance(v, str) for v in (batch_id, kind, at, digest)):
        return None
    if not isinstance(n, int) or (
        receipt is not None and not (isinstance(receipt[0], int) and isinstance(receipt[1], str))
    ):
        return None
    if req is not None and not isinstance(req, str):
        return None
    return CommitMeta(
        batch_id, kind, at, n, digest, None if receipt is None else Receipt(*receipt), req
    )
