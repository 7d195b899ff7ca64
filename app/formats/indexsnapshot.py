"""One read snapshot of a collection's index for reading its current records from the log.

A whole-collection ``iter`` in commit order reads the records from the batch log (the truth,
checksum verified batch by batch) rather than from the index's JSON text: what it needs from
the index is which log lines hold current versions, all within one SQLite read transaction so
that what it hands out is one committed state (docs/api.md, "Guarantees"). ``open_snapshot``
gives that transaction: the collection's state (log generation and committed end), its
batches in log order, whether every record version ever appended is still current (then
every put line of the log is current and no position needs to be read), and otherwise the
current positions inside one batch.

This module knows the index's SQLite schema (``app.formats.sqlindex``) and nothing of logs.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Iterator
from typing import NamedTuple

from app.formats.sqlindex import CollectionState, SqliteIndex, table


class BatchSpan(NamedTuple):
    """A committed batch's bytes ``[start, end)`` in the log."""

    start: int
    end: int


class BatchLayout(NamedTuple):
    """``IndexSnapshot.layout``: ``first``/``last`` are None without batches."""

    batches: int
    first: int | None
    last: int | None
    breaks: int


class IndexSnapshot:
    """What the index says of one collection, read in one transaction (see the module)."""

    def __init__(self, conn: sqlite3.Connection, collection: str, state: CollectionState):
        self._conn = conn
        self._table = table(collection)
        self.collection = collection
        self.state = state

    def batches(self) -> Iterator[BatchSpan]:
        """The collection's batches in log order (read as iterated, within the snapshot)."""
        cur = self._conn.execute(
            "SELECT start, end FROM batches WHERE collection=? ORDER BY start", (self.collection,)
        )
        return itertools.starmap(BatchSpan, cur)

    def layout(self) -> BatchLayout:
        """How many batches, where the first starts and the last ends, and how many of them
        do not start where the one before ended (a gap or an overlap)."""
        batches, first, last = self._conn.execute(
            "SELECT count(*), min(start), max(end) FROM batches WHERE collection=?",
            (self.collection,),
        ).fetchone()
        (breaks,) = self._conn.execute(
            "SELECT count(*) FROM (SELECT start, lag(end) OVER (ORDER BY start) AS prev "
            "FROM batches WHERE collection=?) WHERE prev IS NOT NULL AND prev != start",
            (self.collection,),
        ).fetchone()
        return BatchLayout(batches, first, last, breaks)

    def all_current(self) -> bool:
        """True when the collection holds as many records as were ever appended to it (the
        receipts of its append batches): then no version was superseded or deleted, and every
        put line of its log is a current record."""
        (appended,) = self._conn.execute(
            "SELECT coalesce(sum(count), 0) FROM batches WHERE collection=? AND kind=?",
            (self.collection, "append"),
        ).fetchone()
        (current,) = self._conn.execute(f"SELECT count(*) FROM {self._table}").fetchone()
        return bool(appended == current)

    def positions(self, span: BatchSpan) -> set[int]:
        """The log offsets of the current versions that lie in ``span``."""
        cur = self._conn.execute(
            f"SELECT pos FROM {self._table} WHERE pos >= ? AND pos < ?", (span.start, span.end)
        )
        return {row[0] for row in cur}


@contextlib.contextmanager
def open_snapshot(index: SqliteIndex, collection: str) -> Iterator[IndexSnapshot | None]:
    """A read transaction on a private connection to ``index`` (closed when the block ends),
    as an ``IndexSnapshot`` of ``collection``, or ``None`` when the index has no such
    collection. SQLite errors become typed storage errors (``SqliteIndex.errors``)."""
    if not index.has_table(collection):
        yield None
        return
    conn = index._connect()
    try:
        with index.errors():
            conn.execute("BEGIN")
            row = conn.execute(
                "SELECT generation, log_end FROM collections WHERE name=?", (collection,)
            ).fetchone()
            yield None if row is None else IndexSnapshot(conn, collection, CollectionState(*row))
    finally:
        conn.close()
