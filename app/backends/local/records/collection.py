"""One collection's log and its slice of the index, kept in step.

Every method that writes must be called with the context's writer lock held. This is where the
write path (log fsync, then index transaction), recovery (catch-up, torn-tail truncation) and
compaction live; ``Context`` adds the public API and its contracts on top. The log is the truth
(docs/api.md, "Guarantees"): compaction and export decide what survives from the
log alone, and whole-collection index rewrites are built aside and swapped in
(``side_table``); ``logcheck`` verifies.

Records reach this module as their canonical JSON bytes and leave the log as ``Batch`` /
``Entry`` objects: the log's line syntax stays inside ``app.formats.batchlog``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from app.backends.local.records.catalog import Catalog
from app.backends.local.records.logcheck import check_collection
from app.backends.local.records.side_table import (
    APPLY_EVERY,
    SideBuilder,
    batch_row,
    deleted_ids,
    put_rows,
)
from app.core.atomic import atomic_file
from app.core.clock import utc_iso
from app.core.codec import decode
from app.core.errors import IntegrityError, StorageError, environmental
from app.core.schemas import CompactionReport, LatestCommit, RecordVersion
from app.core.spool import SizedIterable
from app.formats.batchlog import (
    Batch,
    BatchLog,
    BatchReader,
    Entry,
    LogScan,
    LogWriter,
    MappedEntries,
    ReadBatch,
    placed_puts,
)
from app.formats.indexsnapshot import BatchLayout, BatchSpan, open_snapshot
from app.formats.sqlbulk import BulkIndex
from app.formats.sqlindex import BatchRow, CollectionState, PutRow, SqliteIndex

FEW_IDS = 4
AHEAD_FROM = 8 << 20
"""A whole-collection pass over a log of at least this many bytes verifies the next batch in
a worker thread while this one is parsed (``_verified``)."""
LOG_READ_BATCH = 16 << 10
"""Below this many bytes per batch on average, a whole collection is read from the index
(``_fits``)."""
FULL_SCAN_BELOW = 1 << 20


def new_generation() -> str:
    """A fresh log generation (a new log, or a log rewritten by compaction)."""
    return os.urandom(8).hex()


class CollectionLog:
    """One collection: its batch log (``log``) and its slice of the context's ``index``.

    Used by ``Context``: ``recover``, ``append`` / ``delete`` (the write path), ``compact``,
    ``write_compacted``, ``versions``, ``current_records``, ``latest_commits``,
    ``request_digest``, ``caught_up``, ``verify`` and ``rebuild_into``.
    """

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
        header = self.log.header()
        if state is None or state.generation != header.generation:
            return self._reindex(header.generation, header.length)
        start = state.log_end
        size = self.log.size()
        if size == start:
            return start
        if size < start:
            raise IntegrityError(
                f"{self.log.path}: log ends at byte {size} but its index covers {start}: "
                "committed batches are missing"
            )
        return self._catch_up(start)

    def _reindex(self, generation: str, header_len: int) -> int:
        """Index the whole log aside and swap it in (a compaction finished its rename but not
        its re-index, or the collection is new to this index); cuts a torn tail."""
        side = SideBuilder(self.index, self.name)
        with side.abandoned_on_failure():
            scan = self.log.scan(header_len)
            for batch in scan:
                dels = deleted_ids(batch.entries)
                side.add(batch_row(self.name, batch), put_rows(batch.entries), dels)
            side.swap(generation, scan.valid_end, self.catalog.indexes(self.name))
        if scan.tail:
            self.log.truncate(scan.valid_end)
        return scan.valid_end

    def committed(self, start: int) -> Iterator[Batch]:
        """The log's batches from ``start``, verified; ``IntegrityError`` if the log ends (in a
        tail) before the end the index records as committed: a damaged final commit line
        is never mistaken for a torn tail."""
        scan = self.log.scan(start)
        yield from scan
        if scan.tail:
            state = self.index.collection_state(self.name)
            if state is not None and scan.valid_end < state.log_end:
                raise IntegrityError(
                    f"{self.log.path}: damaged committed data at byte {scan.valid_end}"
                )

    def rebuild_into(self, bulk: BulkIndex, witness_end: int | None) -> None:
        """Index this log from scratch into ``bulk`` (a new file being built in one pass, rows
        in log order, indexes after the load) without changing the log.

        ``witness_end``: how far the old index said the log was committed, if it could still
        be read; a tail starting before it is damage, not a torn write."""
        header = self.log.header()
        bulk.start(self.name)
        scan = self.log.scan(header.length)
        for batch in scan:
            tombstones = [(e.record_id, e.pos) for e in _tombstones(batch.entries)]
            bulk.add(self.name, batch_row(self.name, batch), put_rows(batch.entries), tombstones)
        if scan.tail and witness_end is not None and scan.valid_end < witness_end:
            raise IntegrityError(
                f"{self.log.path}: damaged committed data at byte {scan.valid_end}"
            )
        bulk.finish(self.name, header.generation, scan.valid_end, self.catalog.indexes(self.name))

    def _apply_scan(self, start: int) -> LogScan:
        """Apply every batch from ``start`` to the index; returns the finished scan."""
        scan = self.log.scan(start)
        pending: list[Batch] = []
        entries = 0
        for batch in scan:
            pending.append(batch)
            entries += len(batch.entries)
            if entries >= APPLY_EVERY:
                self._apply(pending)
                pending, entries = [], 0
        self._apply(pending)
        return scan

    def _catch_up(self, start: int) -> int:
        scan = self._apply_scan(start)
        if scan.tail:
            self.log.truncate(scan.valid_end)
        return scan.valid_end

    def _apply(self, batches: list[Batch]) -> None:
        if not batches:
            return
        with self.index.write() as conn:
            for b in batches:
                dels = deleted_ids(b.entries)
                self.index.apply(
                    conn, self.name, batch_row(self.name, b), put_rows(b.entries), dels
                )
            self.index.set_log_end(conn, self.name, batches[-1].end)

    # -- writing ------------------------------------------------------------------------

    def append(
        self,
        batch_id: str,
        ids: SizedIterable[str],
        records: SizedIterable[bytes],
        req: str | None = None,
    ) -> BatchRow:
        """Durably write one batch of record versions (log fsync, then index); all or
        nothing. ``records`` are the canonical JSON of each record, ``ids`` their ids (same
        order); ``req`` is the request digest kept in the commit line (docs/api.md,
        idempotent batches). Both are streamed (a spooled batch is read from disk): the log
        write iterates ``records`` once, the index update ``records`` and ``ids`` once more;
        neither holds the batch."""
        end = self.recover(create=True)
        assert end is not None
        at = utc_iso()
        written = self.log.write_batch(
            end, batch_id=batch_id, kind="append", committed_at=at, puts=records, req=req
        )
        row = BatchRow(
            batch_id, self.name, "append", end, written.end, len(records), written.sha256, at
        )
        # lazily: never a copy of the batch
        puts: Iterator[PutRow] = placed_puts(end, ids, records)
        self._index_batch(row, puts, ())
        return row

    def delete(self, batch_id: str, ids: Sequence[str], req: str | None = None) -> BatchRow:
        """Durably write one batch of tombstones for ``ids`` (log fsync, then index); all or
        nothing. An empty ``ids`` commits an empty batch (its id is then taken)."""
        end = self.recover(create=True)
        assert end is not None
        at = utc_iso()
        written = self.log.write_batch(
            end, batch_id=batch_id, kind="delete", committed_at=at, deletes=ids, req=req
        )
        row = BatchRow(
            batch_id, self.name, "delete", end, written.end, len(ids), written.sha256, at
        )
        self._index_batch(row, (), ids)
        return row

    def _index_batch(self, row: BatchRow, puts: Iterable[PutRow], deletes: Sequence[str]) -> None:
        """Apply a batch just written to the log; on failure take it back out of the log."""
        try:
            with self.index.write() as conn:
                self.index.apply(conn, self.name, row, puts, deletes)
                self.index.set_log_end(conn, self.name, row.end)
        except BaseException:
            self._undo(row.start, row.end)
            raise

    def _undo(self, end: int, new_end: int) -> None:
        """After a failed index update, take the batch back out of the log (old state)."""
        with contextlib.suppress(StorageError):
            state = self.index.collection_state(self.name)
            if state is None or state.log_end != new_end:
                self.log.truncate(end)

    def request_digest(self, row: BatchRow) -> str | None:
        """The request digest stored in the commit line of the batch ``row`` (None for a
        batch committed before digests existed); ``IntegrityError`` if it is not there."""
        return self.log.request_digest(row.start, row.end, row.batch_id)

    def caught_up(self) -> bool:
        """True when the index covers this log exactly (same generation, up to its end);
        reads only, never writes."""
        state = self.index.collection_state(self.name)
        return (
            state is not None
            and state.generation == self.log.header().generation
            and state.log_end == self.log.size()
        )

    # -- compaction ---------------------------------------------------------------------

    def compact(self) -> CompactionReport:
        """Rewrite the log without superseded versions and tombstones (atomic replace).

        The log decides what survives (the index is never trusted for it, docs/api.md), and the
        collection's index table is rebuilt from the new log aside, then swapped in with the
        new log state in one transaction: readers see the collection before or after, never
        empty or partial (docs/api.md, compaction). So a compaction also repairs an index that
        missed, added or altered rows of this collection.
        """
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
        header = self.log.header()
        generation, header_len = header.generation, header.length
        latest, before = self.survivors(header_len)
        side = SideBuilder(self.index, self.name)
        with side.abandoned_on_failure():
            if before == len(latest):  # nothing superseded, no tombstone: the log stays
                after = self._index_survivors(header_len, side)
                log_end = end
            else:
                generation = new_generation()
                with atomic_file(self.log.path) as fh:
                    after = self._write_survivors(fh, generation, header_len, latest, side)
                    _check_kept(self.log.path, after, len(latest))  # before the rename
                log_end = self.log.size()
            _check_kept(self.log.path, after, len(latest))
            side.swap(generation, log_end, self.catalog.indexes(self.name))
        return CompactionReport(
            collection=self.name,
            records_before=before,
            records_after=after,
            bytes_before=bytes_before,
            bytes_after=log_end,
        )

    def survivors(self, header_len: int) -> tuple[dict[str, int], int]:
        """From one verified pass over the log: the position of each current record's latest
        version (deleted records are absent), and the number of entries in the log."""
        latest: dict[str, int] = {}
        entries = 0
        for batch in self.committed(header_len):
            entries += len(batch.entries)
            for e in batch.entries:
                if e.data is None:
                    latest.pop(e.record_id, None)
                else:
                    latest[e.record_id] = e.pos
        return latest, entries

    def _index_survivors(self, header_len: int, side: SideBuilder) -> int:
        kept = 0
        for batch in self.committed(header_len):
            puts = put_rows(batch.entries)
            kept += len(puts)
            side.add(batch_row(self.name, batch), puts, [])
        return kept

    def _write_survivors(
        self,
        fh: IO[bytes],
        generation: str,
        header_len: int,
        latest: dict[str, int],
        side: SideBuilder | None,
    ) -> int:
        """Write the log's header and batches keeping only the entries ``latest`` names;
        every batch keeps its id, time, receipt and commit fields (an emptied batch stays as
        its commit line, so batch ids stay idempotent). Returns the entries written."""
        writer = LogWriter(fh, generation, self.log.path)
        kept = 0
        for batch in self.committed(header_len):
            survivors = (
                e for e in batch.entries if e.data is not None and latest.get(e.record_id) == e.pos
            )
            counted = _Counted(survivors)
            written = writer.rewrite(batch, counted, keep_entries=side is not None)
            kept += counted.count  # streamed: a huge batch is never held (LogWriter.rewrite)
            if side is not None:
                side.add(batch_row(self.name, written), put_rows(written.entries), [])
        return kept

    def write_compacted(self, fh: IO[bytes]) -> tuple[int, int]:
        """Write a compacted copy of the (recovered) log, with a new generation, to ``fh``:
        ``(entries before, after)``. Survival is decided from the log alone; the index is not
        read."""
        header_len = self.log.header().length
        latest, before = self.survivors(header_len)
        after = self._write_survivors(fh, new_generation(), header_len, latest, None)
        _check_kept(self.log.path, after, len(latest))
        return before, after

    def latest_commits(self, ids: Iterable[str]) -> dict[str, LatestCommit]:
        """For each of ``ids`` found in the log: ``(commit time of its latest entry, whether
        that entry is a tombstone)``, from one verified pass over the log."""
        wanted = set(ids)
        out: dict[str, LatestCommit] = {}
        if not wanted or not self.log.exists():
            return out
        header_len = self.log.header().length
        for batch in self.committed(header_len):
            for e in batch.entries:
                if e.record_id in wanted:
                    out[e.record_id] = LatestCommit(batch.committed_at, e.data is None)
        return out

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
            searched = self._versions_by_search_stable(out)
            if searched is not None:
                return searched
            out = {rid: [] for rid in out}
        header_len = self.log.header().length
        for batch in self.committed(header_len):
            for e in batch.entries:
                found = out.get(e.record_id)
                if found is not None:
                    found.append(_version(self.name, batch, e.pos, e.record_id, e.data))
        return out

    def _generations(self) -> tuple[str, str | None]:
        state = self.index.collection_state(self.name)
        return self.log.header().generation, None if state is None else state.generation

    def _versions_by_search_stable(
        self, out: dict[str, list[RecordVersion]]
    ) -> dict[str, list[RecordVersion]] | None:
        """The search path, which takes batch positions from the index, only while the log
        and its index are of one generation throughout (a compaction in another process
        replaces the log first, then the index); None when they were not (then the caller
        makes one pass over the log, which does not need the index's positions)."""
        before = self._generations()
        if before[0] != before[1]:
            return None
        try:
            found = self._versions_by_search(out)
        except IntegrityError:
            if self._generations() == before:
                raise
            return None
        return found if self._generations() == before else None

    def _versions_by_search(
        self, out: dict[str, list[RecordVersion]]
    ) -> dict[str, list[RecordVersion]]:
        starts: set[int] = set()
        for rid in out:
            for pos in self.log.find_id_lines(rid):
                row = self.index.batch_at(self.name, pos)
                if row is not None:  # else: beyond what is committed and indexed
                    starts.add(row.start)
        for start in sorted(starts):
            scan = self.log.scan(start)
            batch = next(scan, None)
            scan.close()
            if batch is None:
                raise IntegrityError(f"{self.log.path}: no committed batch at byte {start}")
            for e in batch.entries:
                found = out.get(e.record_id)
                if found is not None:
                    found.append(_version(self.name, batch, e.pos, e.record_id, e.data))
        return out

    def current_records(self) -> Iterator[dict[str, Any]]:
        """The current version of every record, in commit order, read from the log (two
        verified passes; the index is not read)."""
        if not self.log.exists():
            return
        header_len = self.log.header().length
        latest, _ = self.survivors(header_len)
        for batch in self.committed(header_len):
            for e in batch.entries:
                if e.data is not None and latest.get(e.record_id) == e.pos:
                    yield decode(e.data)

    def stream_all(self) -> Iterator[dict[str, Any]]:
        """Every current record in commit order, as of one committed state of the index,
        read from the log: each batch checksum verified before its records are handed out.

        The index says (in one read transaction, ``open_snapshot``) which log and how much of
        it is committed, its batches, and which lines are current: when no record version was
        ever superseded or deleted, every put line is, and a batch's records are parsed by a
        C-level iterator (``ReadBatch.records``), about the cost of parsing its lines; other
        batches are filtered by the current positions in them. Where the log is not the one
        the index describes (a compaction replaced it meanwhile) or its batches do not tile
        the log, the records are read from the index instead (``SqliteIndex.stream``)."""
        return itertools.chain.from_iterable(self._current_parts())

    def _current_parts(self) -> Iterator[Iterable[dict[str, Any]]]:
        with open_snapshot(self.index, self.name) as snap:
            if snap is None:
                return
            try:
                reader = BatchReader(self.log.path)
            except StorageError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                reader = None  # a log the index names is missing: as the index reads
            with contextlib.ExitStack() as stack:
                if reader is not None:
                    stack.callback(reader.close)
                layout = snap.layout()
                if reader is None or not _fits(layout, reader, snap.state):
                    yield self.index.stream(self.name, "(1)", (), "pos")
                    return
                every_put = snap.all_current()
                size = snap.state.log_end - reader.header_length
                ahead = layout.batches > 1 and size >= AHEAD_FROM
                spans = snap.batches()
                # closed before the reader (LIFO): its worker never reads a closed descriptor
                batches = stack.enter_context(contextlib.closing(_verified(reader, spans, ahead)))
                for span, batch in batches:
                    if every_put and batch.only_puts:
                        yield batch.records()
                    elif batch.body_end > batch.start:
                        wanted = snap.positions(span)
                        if wanted:
                            yield _current_of(batch.entries(), wanted)

    def iter_log(self) -> Iterator[Batch]:
        if not self.log.exists():
            return
        header_len = self.log.header().length
        yield from self.committed(header_len)

    # -- verification -------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Problems found comparing the log (checksums) with the index; never raises."""
        problems: list[str] = []
        try:
            check_collection(self.name, self.log, self.index, problems)
        except StorageError as exc:
            if environmental(exc) is not None:  # I/O, EMFILE...: not damage
                raise
            problems.append(str(exc))
        return problems


def _fits(layout: BatchLayout, reader: BatchReader, state: CollectionState) -> bool:
    """Whether the log is read from the log itself: the batches cover the log ``reader`` reads
    from its header to the committed end ``state`` names, back to back, in the generation
    ``state`` names, and are on average at least ``LOG_READ_BATCH`` bytes (each batch read
    costs a ``pread``, a hash and a few Python calls: many tiny batches read faster from the
    index)."""
    if reader.generation != state.generation:
        return False
    if layout.batches == 0:
        return state.log_end == reader.header_length
    return (
        layout.first == reader.header_length
        and layout.last == state.log_end
        and layout.breaks == 0
        and (state.log_end - reader.header_length) >= LOG_READ_BATCH * layout.batches
    )


def _verified(
    reader: BatchReader, spans: Iterator[BatchSpan], ahead: bool
) -> Generator[tuple[BatchSpan, ReadBatch], None, None]:
    """Each span with ``reader.batch`` of it, in order. With ``ahead`` the next batch is read
    and verified by a worker thread while the records of this one are handed out (``pread``
    and SHA-256 release the GIL), so a pass costs about the larger of the two."""
    if not ahead:
        for span in spans:
            yield span, reader.batch(span.start, span.end)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="ctxstore-verify") as pool:
        current: BatchSpan | None = next(spans, None)
        pending = None if current is None else pool.submit(reader.batch, *current)
        while current is not None and pending is not None:
            batch = pending.result()
            following = next(spans, None)
            if following is not None:
                pending = pool.submit(reader.batch, *following)
            yield current, batch
            current = following


def _current_of(entries: Iterable[Entry], wanted: set[int]) -> Iterator[dict[str, Any]]:
    for e in entries:
        if e.data is not None and e.pos in wanted:
            yield decode(e.data)


class _Counted(Iterator[Entry]):
    """Entries passed through, counted."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self._entries = entries
        self.count = 0

    def __next__(self) -> Entry:
        entry = next(self._entries)
        self.count += 1
        return entry


def _tombstones(entries: Iterable[Entry]) -> Iterable[Entry]:
    """The tombstones among ``entries`` (a large batch of record versions only is not read
    again for them)."""
    if isinstance(entries, MappedEntries) and entries.puts == len(entries):
        return ()
    return [e for e in entries if e.data is None]


def _check_kept(path: Path, kept: int, current: int) -> None:
    if kept != current:
        raise IntegrityError(f"{path}: a compaction kept {kept} of {current} current records")


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
