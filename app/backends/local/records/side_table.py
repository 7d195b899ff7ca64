"""Building a collection's next index content aside, then swapping it in for readers.

Compaction and re-indexing never empty the live table: the new rows go to side tables in the
same SQLite file (in transactions of about ``APPLY_EVERY`` entries, invisible to readers),
and ``swap`` replaces the live table, the collection's batches and its log state in one
transaction. A reader in any thread or process sees the old content or the new one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from app.core.errors import StorageError
from app.core.spool import SizedIterable
from app.formats.batchlog import Batch, Entry, MappedEntries
from app.formats.sqlindex import BatchRow, PutRow, SqliteIndex

APPLY_EVERY = 50_000
"""Entries applied to the index per transaction when many batches are (re)indexed."""


class Pending(NamedTuple):
    row: BatchRow
    puts: SizedIterable[PutRow]
    deletes: list[str]


class SideBuilder:
    """Fills the side tables of one collection (caller holds the context's writer lock)."""

    def __init__(self, index: SqliteIndex, collection: str) -> None:
        self.index = index
        self.collection = collection
        self._pending: list[Pending] = []
        self._entries = 0
        index.start_side(collection)

    def add(self, row: BatchRow, puts: SizedIterable[PutRow], deletes: list[str]) -> None:
        self._pending.append(Pending(row, puts, deletes))
        self._entries += len(puts) + len(deletes)
        if self._entries >= APPLY_EVERY:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        with self.index.write() as conn:
            for p in self._pending:
                self.index.apply_side(conn, self.collection, p.row, p.puts, p.deletes)
        self._pending, self._entries = [], 0

    def swap(self, generation: str, log_end: int, indexes: Sequence[Sequence[str]]) -> None:
        """Make what was added the collection's content, in one transaction."""
        self._flush()
        self.index.swap_side(self.collection, generation, log_end, indexes)

    @contextlib.contextmanager
    def abandoned_on_failure(self) -> Iterator[None]:
        """Drop the side tables if the block fails (the live table is untouched)."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(StorageError):
                self.index.drop_side(self.collection)
            raise


def batch_row(collection: str, batch: Batch) -> BatchRow:
    """The index row of a log batch (its receipt: the original count and digest)."""
    return BatchRow(
        batch_id=batch.batch_id,
        collection=collection,
        kind=batch.kind,
        start=batch.start,
        end=batch.end,
        count=batch.receipt_count,
        sha256=batch.receipt_sha256,
        committed_at=batch.committed_at,
    )


class _MappedPuts:
    """``put_rows`` of a large batch's ``MappedEntries``: read from the log when iterated."""

    def __init__(self, entries: MappedEntries) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return self._entries.puts

    def __iter__(self) -> Iterator[PutRow]:
        for e in self._entries:
            if e.data is not None:
                yield e.pos, e.record_id, e.data


def deleted_ids(entries: Iterable[Entry]) -> list[str]:
    """The ids tombstoned among ``entries`` (a large batch of record versions only is not
    read again for it)."""
    if isinstance(entries, MappedEntries) and entries.puts == len(entries):
        return []
    return [e.record_id for e in entries if e.data is None]


def put_rows(entries: Iterable[Entry]) -> SizedIterable[PutRow]:
    """``(position, id, data)`` of the record versions among ``entries`` (a list, or for a
    large batch scanned from the log a view that reads them again: never held whole)."""
    if isinstance(entries, MappedEntries):
        return _MappedPuts(entries)
    return [(e.pos, e.record_id, e.data) for e in entries if e.data is not None]
