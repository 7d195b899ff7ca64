"""Building a whole index file in one pass (a rebuild, the index of an imported context).

The file is new and no reader sees it until its owner puts it in place, so it is written the
cheapest way that still ends durable: no rollback journal, ``synchronous=OFF``, ONE
transaction, the rows of each collection appended in log order (the table's B-tree only
grows at its end), and every index of a collection, its unique id index included, built
after the load by sorting (``CREATE INDEX``) instead of row by row; then one ``fsync`` of the
file. Any failure leaves a scratch file the caller deletes.

A log may hold several versions of a record and tombstones: while loading, the ids' hashes
are kept (8 bytes a row) and tombstones go to a scratch table; only if a hash repeats or a
record was deleted are superseded versions removed (by SQL, before the unique index is
built): what remains is exactly what applying the batches one by one leaves.

This module knows SQLite and nothing of contexts, logs or locks.
"""

from __future__ import annotations

import array
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from app.core.errors import io_error
from app.formats.sqlerrors import classify
from app.formats.sqlindex import (
    INDEX_VERSION,
    BatchRow,
    PutRow,
    index_sql,
    insert_puts,
    records_table_sql,
    schema_statements,
    table,
    unique_id_sql,
)

BULK_CACHE_KIB = 64 << 10
"""Page cache of the building connection (also what ``CREATE INDEX`` sorts in before it
spills to temporary files)."""

_DELS = '"bulk_tombstones"'


class BulkIndex:
    """A new index file at ``path`` (which must not exist), filled collection by collection:
    ``start``, ``add`` (every batch of the log, in order), ``finish``; then ``commit``. Not
    thread-safe; ``close`` abandons it (the caller removes the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._hashes: array.array[int] = array.array("q")
        self._tombstones = 0
        try:
            self._conn = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise classify(exc, path, "index") from exc
        try:
            with self._errors():
                conn = self._conn
                conn.execute("PRAGMA journal_mode=OFF")
                conn.execute("PRAGMA synchronous=OFF")
                conn.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
                conn.execute("BEGIN")
                for statement in schema_statements():
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={INDEX_VERSION}")
        except BaseException:
            self._conn.close()
            raise

    def _errors(self) -> _Errors:
        return _Errors(self.path)

    def start(self, collection: str) -> None:
        """An empty table for ``collection`` (no index yet)."""
        with self._errors():
            self._conn.execute(records_table_sql(table(collection)))
            self._conn.execute(f"CREATE TABLE {_DELS}(id TEXT NOT NULL, pos INTEGER NOT NULL)")
        self._hashes = array.array("q")
        self._tombstones = 0

    def add(
        self,
        collection: str,
        batch: BatchRow,
        puts: Iterable[PutRow],
        tombstones: Sequence[tuple[str, int]],
    ) -> None:
        """One batch of the log: its record versions ``(pos, id, data)`` and its tombstones
        ``(id, pos)``, as the log holds them."""
        with self._errors():
            conn = self._conn
            insert_puts(conn, table(collection), self._hashed(puts))
            if tombstones:
                conn.executemany(f"INSERT INTO {_DELS}(id, pos) VALUES (?,?)", tombstones)
                self._tombstones += len(tombstones)
            conn.execute("INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?,?,?)", batch.values())

    def _hashed(self, puts: Iterable[PutRow]) -> Iterator[PutRow]:
        append = self._hashes.append
        for put in puts:
            append(hash(put[1]))
            yield put

    def finish(
        self, collection: str, generation: str, log_end: int, indexes: Sequence[Sequence[str]]
    ) -> None:
        """Keep only each record's current version, build the collection's indexes and record
        how far into the log (of ``generation``) the index has applied."""
        t = table(collection)
        with self._errors():
            conn = self._conn
            if self._tombstones or self._repeats():
                self._keep_current(t)
            conn.execute(f"DROP TABLE {_DELS}")
            conn.execute(unique_id_sql(t, collection))
            for spec in indexes:
                conn.execute(index_sql(collection, spec))
            conn.execute(
                "INSERT OR REPLACE INTO collections(name, generation, log_end) VALUES (?,?,?)",
                (collection, generation, log_end),
            )
        self._hashes = array.array("q")

    def _repeats(self) -> bool:
        """Could an id occur twice? (Equal hashes; a collision only costs the removal pass.)"""
        if len(self._hashes) < 2:
            return False
        ordered = np.sort(np.frombuffer(self._hashes, dtype=np.int64))
        return bool((ordered[1:] == ordered[:-1]).any())

    def _keep_current(self, t: str) -> None:
        """Delete every version superseded by a later version or a later tombstone."""
        conn = self._conn
        conn.execute(f'CREATE INDEX "bulk_by_id" ON {t}(id, pos)')
        conn.execute(
            f"DELETE FROM {t} WHERE pos < (SELECT max(later.pos) FROM {t} AS later "
            f"WHERE later.id = {t}.id)"
        )
        if self._tombstones:
            conn.execute(
                f"DELETE FROM {t} WHERE pos IN (SELECT v.pos FROM {_DELS} AS d "
                f"JOIN {t} AS v ON v.id = d.id AND v.pos < d.pos)"
            )
        conn.execute('DROP INDEX "bulk_by_id"')

    def commit(self) -> None:
        """End the transaction, write the file to disk (one ``fsync``) and close it."""
        with self._errors():
            self._conn.execute("COMMIT")
        self.close()
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise io_error("writing", self.path, exc) from exc

    def close(self) -> None:
        self._conn.close()


class _Errors:
    """``sqlite3`` errors of the file being built, typed (``app.formats.sqlerrors``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, sqlite3.Error):
            raise classify(exc, self.path, "index") from exc


__all__ = ["BULK_CACHE_KIB", "BulkIndex"]
