"""One collection's log and its slice of the index, kept in step.

Every method that writes must be called with the context's writer lock held. This is where the
write path (log fsync, then index transaction), recovery (catch-up, torn-tail truncation),
compaction and verification live; ``Context`` adds the public API and its contracts on top.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from app.core.atomic import atomic_file
from app.core.codec import decode, legacy_value
from app.core.errors import IntegrityError, StorageError
from app.core.schemas import CompactionReport, RecordVersion
from app.formats.batchlog import (
    PUT,
    Batch,
    BatchLog,
    ScanState,
    commit_line,
    header_line,
    put_line,
)
from app.formats.sqlindex import BatchRow, SqliteIndex
from app.managers.catalog import Catalog

APPLY_EVERY = 50_000
FEW_IDS = 4
FULL_SCAN_BELOW = 1 << 20
MAX_REPORTED = 10


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def new_generation() -> str:
    return os.urandom(8).hex()


class CollectionLog:
    def __init__(self, name: str, path: Path, index: SqliteIndex, catalog: Catalog) -> None:
        self.name = name
        self.log = BatchLog(path)
        self.index = index
        self.catalog = catalog

    # -- recovery -----------------------------------------------------------------------

    def recover(self, *, create: bool) -> int | None:
        """Bring the index up to the log (under the lock); returns the log's committed end."""
        state = self.index.collection_state(self.name)
        if not self.log.exists():
            if state is not None:
                raise IntegrityError(f"{self.log.path}: log missing but indexed")
            if not create:
                return None
            generation = new_generation()
            end = self.log.create(generation)
            self.index.reset_collection(self.name, generation, end, self.catalog.indexes(self.name))
            return end
        generation, header_len = self.log.header()
        if state is None or state[0] != generation:
            self.index.reset_collection(
                self.name, generation, header_len, self.catalog.indexes(self.name)
            )
            start = header_len
        else:
            start = state[1]
        size = self.log.size()
        if size == start:
            return start
        if size < start:
            raise IntegrityError(
                f"{self.log.path}: log ends at byte {size} but its index covers {start}: "
                "committed batches are missing"
            )
        return self._catch_up(start)

    def committed(self, start: int) -> Iterator[Batch]:
        """The log's batches from ``start``, verified; ``IntegrityError`` if the log ends (in a
        tail) before the end the index records as committed: a damaged final commit line
        is never mistaken for a torn tail."""
        st = ScanState(valid_end=start, size=0)
        yield from self.log.scan(start, st)
        if st.tail:
            state = self.index.collection_state(self.name)
            if state is not None and st.valid_end < state[1]:
                raise IntegrityError(
                    f"{self.log.path}: damaged committed data at byte {st.valid_end}"
                )

    def rebuild_into(self, index: SqliteIndex, witness_end: int | None) -> None:
        """Index this log from scratch into ``index`` (a new file) without changing the log.

        ``witness_end``: how far the old index said the log was committed, if it could still
        be read; a tail starting before it is damage, not a torn write."""
        generation, header_len = self.log.header()
        index.reset_collection(self.name, generation, header_len, self.catalog.indexes(self.name))
        builder = CollectionLog(self.name, self.log.path, index, self.catalog)
        st = builder._apply_scan(header_len)
        if st.tail and witness_end is not None and st.valid_end < witness_end:
            raise IntegrityError(f"{self.log.path}: damaged committed data at byte {st.valid_end}")

    def _apply_scan(self, start: int) -> ScanState:
        st = ScanState(valid_end=start, size=0)
        pending: list[Batch] = []
        entries = 0
        for batch in self.log.scan(start, st):
            pending.append(batch)
            entries += len(batch.entries)
            if entries >= APPLY_EVERY:
                self._apply(pending)
                pending, entries = [], 0
        self._apply(pending)
        return st

    def _catch_up(self, start: int) -> int:
        st = self._apply_scan(start)
        if st.tail:
            self.log.truncate(st.valid_end)
        return st.valid_end

    def _apply(self, batches: list[Batch]) -> None:
        if not batches:
            return
        with self.index.write() as conn:
            for b in batches:
                row: BatchRow = (
                    b.batch_id,
                    self.name,
                    b.kind,
                    b.start,
                    b.end,
                    b.receipt_count,
                    b.receipt_sha256,
                    b.committed_at,
                )
                puts = [(e.pos, e.record_id, e.data) for e in b.entries if e.data is not None]
                dels = [e.record_id for e in b.entries if e.data is None]
                self.index.apply(conn, self.name, row, puts, dels)
            self.index.set_log_end(conn, self.name, batches[-1].end)

    # -- writing ------------------------------------------------------------------------

    def commit(
        self, kind: str, batch_id: str, ids: list[str], lines: list[bytes], req: str | None = None
    ) -> BatchRow:
        """Durably write one batch (log fsync, then index); all or nothing. ``req`` is the
        request digest kept in the commit line (SPEC 16)."""
        end = self.recover(create=True)
        assert end is not None
        at = now_iso()
        digest, new_end = self.log.write_batch(
            lines, batch_id=batch_id, kind=kind, committed_at=at, offset=end, req=req
        )
        row: BatchRow = (batch_id, self.name, kind, end, new_end, len(lines), digest, at)

        def puts() -> Iterator[tuple[int, str, bytes]]:  # lazily: never a copy of the batch
            pos = end
            for rid, line in zip(ids, lines, strict=True):
                yield pos, rid, line[len(PUT) : -2]
                pos += len(line)

        try:
            with self.index.write() as conn:
                if kind == "append":
                    self.index.apply(conn, self.name, row, puts(), [])
                else:
                    self.index.apply(conn, self.name, row, [], ids)
                self.index.set_log_end(conn, self.name, new_end)
        except BaseException:
            self._undo(end, new_end)
            raise
        return row

    def _undo(self, end: int, new_end: int) -> None:
        """After a failed index update, take the batch back out of the log (old state)."""
        with contextlib.suppress(StorageError):
            state = self.index.collection_state(self.name)
            if state is None or state[1] != new_end:
                self.log.truncate(end)

    # -- compaction ---------------------------------------------------------------------

    def compact(self) -> CompactionReport:
        """Rewrite the log without superseded versions and tombstones (atomic replace)."""
        end = self.recover(create=False)
        if end is None:
            return CompactionReport(
                collection=self.name,
                records_before=0,
                records_after=0,
                bytes_before=0,
                bytes_after=0,
            )
        bytes_before = self.log.size()
        generation = new_generation()
        with atomic_file(self.log.path) as fh:
            before, after = self.write_compacted(fh, generation)
        header = len(header_line(generation))
        self.index.reset_collection(self.name, generation, header, self.catalog.indexes(self.name))
        self._catch_up(header)
        return CompactionReport(
            collection=self.name,
            records_before=before,
            records_after=after,
            bytes_before=bytes_before,
            bytes_after=self.log.size(),
        )

    def write_compacted(self, fh: IO[bytes], generation: str) -> tuple[int, int]:
        """Write a compacted copy of the (recovered) log to ``fh``: ``(entries before, after)``.

        Every batch keeps its id, time and original receipt (an empty batch is kept as its
        commit line, so batch ids stay idempotent); only current versions survive.
        """
        _, header_len = self.log.header()
        state = self.index.collection_state(self.name)
        if state is not None and self.index.holds_only_current(self.name):
            fh.write(header_line(generation))
            copied = self.log.copy_verified(header_len, state[1], fh)
            return copied, copied
        before = after = 0
        current = self.index.current_positions(self.name)
        nxt = next(current, None)
        fh.write(header_line(generation))
        try:
            for batch in self.committed(header_len):
                lines = []
                for e in batch.entries:
                    before += 1
                    while nxt is not None and nxt < e.pos:
                        nxt = next(current, None)
                    if e.data is not None and nxt == e.pos:
                        lines.append(put_line(e.data))
                after += len(lines)
                commit, _ = commit_line(
                    lines,
                    batch.batch_id,
                    batch.kind,
                    batch.committed_at,
                    receipt=(batch.receipt_count, batch.receipt_sha256),
                    req=batch.req,
                )
                fh.write(b"".join(lines))
                fh.write(commit)
        finally:
            current.close()
        return before, after

    # -- reading the log ----------------------------------------------------------------

    def versions(self, ids: Iterable[str]) -> dict[str, list[RecordVersion]]:
        """Every version and deletion of ``ids`` still in the log, oldest first.

        A few ids in a large log are looked up by searching the log's bytes for them and
        reading (and checksum-verifying) only the batches that hold them; otherwise one
        verified pass over the whole log.
        """
        out: dict[str, list[RecordVersion]] = {rid: [] for rid in ids}
        if not self.log.exists() or not out:
            return out
        if len(out) <= FEW_IDS and self.log.size() > FULL_SCAN_BELOW:
            return self._versions_by_search(out)
        _, header_len = self.log.header()
        for batch in self.committed(header_len):
            for e in batch.entries:
                found = out.get(e.record_id)
                if found is not None:
                    found.append(_version(self.name, batch, e.pos, e.record_id, e.data))
        return out

    def _versions_by_search(
        self, out: dict[str, list[RecordVersion]]
    ) -> dict[str, list[RecordVersion]]:
        starts: set[int] = set()
        for rid in out:
            for pos in self.log.find_id_lines(rid):
                row = self.index.batch_at(self.name, pos)
                if row is not None:  # else: beyond what is committed and indexed
                    starts.add(row[3])
        for start in sorted(starts):
            batch = next(self.log.scan(start), None)
            if batch is None:
                raise IntegrityError(f"{self.log.path}: no committed batch at byte {start}")
            for e in batch.entries:
                found = out.get(e.record_id)
                if found is not None:
                    found.append(_version(self.name, batch, e.pos, e.record_id, e.data))
        return out

    def iter_log(self) -> Iterator[Batch]:
        if not self.log.exists():
            return
        _, header_len = self.log.header()
        yield from self.committed(header_len)

    # -- verification -------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Problems found comparing the log (checksums) with the index; never raises."""
        problems: list[str] = []
        try:
            self._verify(problems)
        except StorageError as exc:
            problems.append(str(exc))
        return problems

    def _verify(self, problems: list[str]) -> None:
        path = self.log.path
        generation, header_len = self.log.header()
        expected: dict[str, tuple[int, int]] = {}
        st = ScanState(valid_end=header_len, size=0)
        batches = 0
        legacy = 0
        for batch in self.log.scan(header_len, st):
            batches += 1
            for e in batch.entries:
                if e.data is None:
                    expected.pop(e.record_id, None)
                else:
                    expected[e.record_id] = (e.pos, zlib.crc32(e.data))
                    found = legacy_value(e.data)  # SPEC 22: v1 values v2 refuses are listed
                    legacy += found is not None
                    if found is not None and legacy <= MAX_REPORTED:
                        problems.append(
                            f"{path}: record {e.record_id[:80]!r} (byte {e.pos}) holds {found} "
                            "(written before v2; it reads back, but cannot be appended again)"
                        )
        state = self.index.collection_state(self.name)
        if st.tail:
            where = (
                "inside the indexed range" if state and st.valid_end < state[1] else "uncommitted"
            )
            problems.append(
                f"{path}: {st.size - st.valid_end} damaged or torn bytes after byte "
                f"{st.valid_end} ({where})"
            )
        if state is None or state[0] != generation:
            problems.append(f"{self.index.path}: collection {self.name!r} is not indexed")
            return
        if state[1] != st.valid_end:
            problems.append(
                f"{self.index.path}: index of {self.name!r} covers {state[1]} bytes of {path}, "
                f"whose committed data ends at {st.valid_end}"
            )
        bad = 0
        for pos, rid, data, crc in self.index.rows(self.name):
            exp = expected.pop(rid, None)
            if exp is None or exp != (pos, crc) or zlib.crc32(data.encode()) != crc:
                bad += 1
                if bad <= MAX_REPORTED:
                    problems.append(
                        f"{self.index.path}: record {rid[:80]!r} of {self.name!r} differs from "
                        f"{path}"
                    )
        if expected:
            problems.append(
                f"{self.index.path}: {len(expected)} records of {path} missing from the index"
            )
        if bad > MAX_REPORTED:
            problems.append(f"{self.index.path}: {bad} records differ from {path} in all")
        indexed_batches = sum(1 for _ in self.index.batches(self.name))
        if indexed_batches != batches:
            problems.append(
                f"{self.index.path}: {indexed_batches} batches indexed, {batches} in {path}"
            )


def _version(
    collection: str, batch: Batch, pos: int, record_id: str, data: bytes | None
) -> RecordVersion:
    return RecordVersion(
        id=record_id,
        collection=collection,
        batch_id=batch.batch_id,
        committed_at=batch.committed_at,
        sha256=hashlib.sha256(data if data is not None else b"null").hexdigest(),
        deleted=data is None,
        data=None if data is None else decode(data),
        position=pos,
    )
