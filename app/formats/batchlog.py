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
format number) is the request digest of the idempotency check (SPEC 16); commit lines written
without it still read, and a batch without it is treated as a legacy duplicate.

After the last valid commit, bytes that contain no further valid commit are a torn tail (the
writer died): ``scan`` reports where the tail starts and the owner truncates it under its
writer lock. Damage followed by a valid commit
is corruption and raises ``IntegrityError``; it is never skipped.

This module knows one file format and nothing of contexts, indexes or locks.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from app.core.atomic import write_atomic
from app.core.errors import IntegrityError, SchemaVersionError, io_error

LOG_FORMAT = 1
PUT = b'{"put":'
DEL = b'{"del":'
COMMIT = b'{"commit":'
WRITE_CHUNK = 4 << 20


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry line: a record version (``data`` = its canonical JSON) or a tombstone."""

    pos: int
    record_id: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class Batch:
    """A committed batch as found in (or written to) the log."""

    batch_id: str
    kind: str
    committed_at: str
    sha256: str
    start: int
    end: int
    entries: list[Entry]
    receipt_count: int
    receipt_sha256: str
    req: str | None = None


@dataclass(slots=True)
class ScanState:
    """Where a scan stopped: ``valid_end`` is the end of the last valid commit."""

    valid_end: int
    size: int
    tail: bool = False
    batches: int = 0
    entries: int = 0


def _meta_bytes(
    batch_id: str,
    kind: str,
    at: str,
    n: int,
    receipt: tuple[int, str] | None,
    req: str | None = None,
) -> bytes:
    meta: list[object] = [batch_id, kind, at, n]
    if receipt is not None:
        meta += receipt
    if req is not None:
        meta.append(req)  # unambiguous: receipts add an int first, a request digest a str
    return orjson.dumps(meta)


def _commit_digest(
    lines: bytes | memoryview,
    batch_id: str,
    kind: str,
    at: str,
    n: int,
    receipt: tuple[int, str] | None,
    req: str | None = None,
) -> str:
    h = hashlib.sha256(lines)
    h.update(_meta_bytes(batch_id, kind, at, n, receipt, req))
    return h.hexdigest()


def commit_line(
    lines: Sequence[bytes],
    batch_id: str,
    kind: str,
    at: str,
    receipt: tuple[int, str] | None = None,
    req: str | None = None,
) -> tuple[bytes, str]:
    """The commit line closing ``lines`` and the batch digest it carries.

    ``receipt`` keeps the original ``(count, sha256)`` of a batch rewritten by compaction;
    ``req`` is the request digest (``Batch.req``), which a rewrite must carry over.
    """
    h = hashlib.sha256()
    for line in lines:
        h.update(line)
    h.update(_meta_bytes(batch_id, kind, at, len(lines), receipt, req))
    digest = h.hexdigest()
    meta: dict[str, object] = {
        "batch": batch_id,
        "kind": kind,
        "at": at,
        "n": len(lines),
        "sha256": digest,
    }
    if receipt is not None:
        meta["rc"], meta["rs"] = receipt
    if req is not None:
        meta["req"] = req
    return COMMIT + orjson.dumps(meta) + b"}\n", digest


def header_line(generation: str) -> bytes:
    return orjson.dumps({"log": {"format": LOG_FORMAT, "generation": generation}}) + b"\n"


def put_line(encoded: bytes) -> bytes:
    return PUT + encoded + b"}\n"


def del_line(record_id: str) -> bytes:
    return DEL + orjson.dumps(record_id) + b"}\n"


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

    def header(self) -> tuple[str, int]:
        """``(generation, header length)``; ``IntegrityError`` if the header is damaged."""
        try:
            with open(self.path, "rb") as fh:
                line = fh.readline(4096)
        except OSError as exc:
            raise io_error("reading", self.path, exc) from exc
        try:
            meta = orjson.loads(line)["log"]
            fmt, generation = meta["format"], meta["generation"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise IntegrityError(f"{self.path}: damaged log header") from None
        if not isinstance(fmt, int) or not isinstance(generation, str) or not line.endswith(b"\n"):
            raise IntegrityError(f"{self.path}: damaged log header")
        if fmt > LOG_FORMAT:
            raise SchemaVersionError(f"{self.path}: log format {fmt} is newer than {LOG_FORMAT}")
        return generation, len(line)

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
        lines: Sequence[bytes],
        *,
        batch_id: str,
        kind: str,
        committed_at: str,
        offset: int,
        req: str | None = None,
    ) -> tuple[str, int]:
        """Write ``lines`` + a commit line at ``offset`` and fsync; returns ``(sha256, end)``.

        On any failure the file is truncated back to ``offset`` before the error is raised,
        so a failed write never leaves bytes that a later append would bury.
        """
        commit, digest = commit_line(lines, batch_id, kind, committed_at, req=req)
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError as exc:
            raise io_error("opening", self.path, exc) from exc
        pos = offset
        try:
            for chunk in _chunks([*lines, commit]):
                view = memoryview(chunk)
                while view:
                    written = os.pwrite(fd, view, pos)
                    pos += written
                    view = view[written:]
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, offset)
                os.fsync(fd)
            raise io_error("appending to", self.path, exc) from exc
        finally:
            os.close(fd)
        return digest, pos

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

    def scan(self, start: int, state: ScanState | None = None) -> Iterator[Batch]:
        """Yield every committed batch from ``start`` (a batch boundary) in order.

        ``IntegrityError`` on damage followed by a valid commit. A torn tail sets
        ``state.tail`` and ``state.valid_end`` to where it starts.
        """
        st = state if state is not None else ScanState(valid_end=start, size=0)
        st.valid_end = start
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return
        except OSError as exc:
            raise io_error("reading", self.path, exc) from exc
        with fh:
            size = os.fstat(fh.fileno()).st_size
            st.size = size
            if size <= start:
                return
            with mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ) as mm:
                yield from self._scan_mapped(mm, start, size, st)

    def _scan_mapped(self, mm: mmap.mmap, start: int, size: int, st: ScanState) -> Iterator[Batch]:
        pos = batch_start = start
        entries: list[Entry] = []
        while pos < size:
            nl = mm.find(b"\n", pos)
            if nl < 0:
                break  # partial last line: part of a torn tail
            line = mm[pos : nl + 1]
            if line.startswith(PUT) or line.startswith(DEL):
                entry = _parse_entry(line, pos)
                if entry is None:
                    self._damage_or_tail(mm, pos, nl, size, st)
                    return
                entries.append(entry)
            elif line.startswith(COMMIT):
                meta = _parse_commit(line)
                if meta is None:
                    self._damage_or_tail(mm, pos, nl, size, st)
                    return
                batch_id, kind, at, n, digest, receipt, req = meta
                body = memoryview(mm)[batch_start:pos]
                ok = n == len(entries) and (
                    _commit_digest(body, batch_id, kind, at, n, receipt, req) == digest
                )
                body.release()
                if not ok:
                    raise IntegrityError(
                        f"{self.path}: checksum mismatch in batch {batch_id!r} "
                        f"(bytes {batch_start}-{nl + 1})"
                    )
                end = nl + 1
                rc, rs = receipt if receipt is not None else (n, digest)
                yield Batch(batch_id, kind, at, digest, batch_start, end, entries, rc, rs, req)
                st.valid_end = end
                st.batches += 1
                st.entries += len(entries)
                batch_start = end
                entries = []
            else:
                self._damage_or_tail(mm, pos, nl, size, st)
                return
            pos = nl + 1
        if batch_start < size:
            st.tail = True
            st.valid_end = batch_start

    def _damage_or_tail(self, mm: mmap.mmap, pos: int, nl: int, size: int, st: ScanState) -> None:
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
        st.tail = True

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
                ok = n == meta[3] and _commit_digest(body, *meta[:4], *meta[5:]) == meta[4]
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
        if meta is None or meta[0] != batch_id:
            raise IntegrityError(f"{self.path}: batch {batch_id[:80]!r} is not at byte {start}")
        return meta[6]

    def copy_verified(self, start: int, end: int, dst: IO[bytes]) -> int:
        """Copy the committed batches in ``[start, end)`` to ``dst`` after verifying each
        batch's checksum; returns the number of entries copied."""
        fh, size = self._mapped()
        entries = 0
        with fh:
            if end > size:
                raise IntegrityError(f"{self.path}: committed data ends early at byte {size}")
            if end <= start:
                return 0
            with mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ) as mm:
                for batch_start, commit_start, batch_end in self._verified(mm, start, end):
                    entries += mm[batch_start:commit_start].count(b"\n")
                    dst.write(mm[batch_start:batch_end])
        return entries

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
        needles = (b'"id":' + key, DEL + key + b"}\n")
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


def _chunks(lines: Sequence[bytes]) -> Iterator[bytes]:
    buf: list[bytes] = []
    size = 0
    for line in lines:
        buf.append(line)
        size += len(line)
        if size >= WRITE_CHUNK:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def _parse_entry(line: bytes, pos: int) -> Entry | None:
    if not line.endswith(b"}\n"):
        return None
    body = line[len(PUT) : -2]  # PUT and DEL prefixes have the same length
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


CommitMeta = tuple[str, str, str, int, str, tuple[int, str] | None, str | None]


def _parse_commit(line: bytes) -> CommitMeta | None:
    if not line.endswith(b"}\n"):
        return None
    try:
        meta = orjson.loads(line[len(COMMIT) : -2])
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
    return batch_id, kind, at, n, digest, receipt, req
