"""The SQLite query index: latest version of every record, per-collection tables, batch ids.

Derived data: everything here can be rebuilt from the batch logs. Each collection table holds
the current version of each record (``pos`` = offset of its line in the log, which is also the
commit order), its canonical JSON and a CRC-32 checked on every read, because SQLite does not
detect changed row content. ``collections.log_end`` records how far into each log the index has
applied. Writes happen in ``BEGIN IMMEDIATE`` transactions in WAL mode; durability comes from the
log (the index may lag after a power loss and is caught up on open), so ``synchronous=NORMAL``.

Version 2 (``INDEX_VERSION``): a record's id is unique through a separate ``CREATE UNIQUE
INDEX`` (version 1 declared ``id ... UNIQUE`` in the table, an index SQLite builds row by row
and never after a load): a bulk build (``app.formats.sqlbulk``) loads the rows first and sorts
every index, the id one included, afterwards. A writing connection keeps ``WRITE_CACHE_KIB`` of
page cache, so a batch's random index inserts do not spill dirty pages to the WAL mid-batch
nor re-read the pages the previous batch touched, and the WAL is checkpointed every
``CHECKPOINT_PAGES`` (64 MiB) instead of SQLite's 4 MB (one 10k-record batch writes more
than that: the default checkpoints, with two fsyncs, after every batch). Version 1 files
are refused on use (``SchemaVersionError`` naming ``ctxstore upgrade``, which rebuilds them
from the logs).

This module knows SQLite and nothing of contexts, logs or locks.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from app.core.errors import IntegrityError, SchemaVersionError
from app.core.filters import field_expr, field_path
from app.formats.sqlitefile import SqliteFile

INDEX_VERSION = 2
FETCH = 2000


ROWS_PER_INSERT = 500  # rows per multi-row INSERT (4 parameters each; SQLite allows 32766)
FIRST_ROWS = 16
INSERT_BYTES = 4 << 20
"""About how much record text one INSERT binds (large records: fewer rows per INSERT)."""


def _next_rows(part: list[Any]) -> int:
    """Rows for the next INSERT: about ``INSERT_BYTES`` at the size the rows of ``part`` (the
    parameters of the last one) had, a power of two up to ``ROWS_PER_INSERT``."""
    rows = len(part) // 4
    text = sum(map(len, itertools.islice(part, 2, None, 4))) or 1
    fit = max(1, INSERT_BYTES * rows // text)
    return min(ROWS_PER_INSERT, 1 << (fit.bit_length() - 1))


def insert_puts(conn: sqlite3.Connection, quoted_table: str, puts: Iterable[PutRow]) -> None:
    """Insert (or replace) record versions into a collection table, a few rows per statement:
    memory stays flat however large the batch (``puts`` is streamed)."""
    crc32 = zlib.crc32
    rows = iter(puts)
    n = FIRST_ROWS
    while True:
        part = [
            v
            for pos, rid, data in itertools.islice(rows, n)
            for v in (pos, rid, data.decode(), crc32(data))
        ]
        if not part:
            break
        conn.execute(insert_sql(quoted_table, len(part) // 4), part)
        n = _next_rows(part)


PutRow = tuple[int, str, bytes]
"""``(pos, id, data)`` of a record version to store: its line's offset in the log, its id and
its canonical JSON (a plain tuple: the append path makes one per record)."""


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One row of the ``batches`` table: a committed batch of ``collection`` occupying bytes
    ``[start, end)`` of its log; ``count`` and ``sha256`` are its receipt (as first committed:
    a compaction keeps them)."""

    batch_id: str
    collection: str
    kind: str
    start: int
    end: int
    count: int
    sha256: str
    committed_at: str

    def values(self) -> tuple[str, str, str, int, int, int, str, str]:
        """The row's columns in table order (the parameters of an INSERT)."""
        return (
            self.batch_id,
            self.collection,
            self.kind,
            self.start,
            self.end,
            self.count,
            self.sha256,
            self.committed_at,
        )


class IndexRow(NamedTuple):
    """One stored row of a collection table, unchecked (what ``verify`` compares with the log)."""

    pos: int
    id: str
    data: str
    crc: int


class CollectionState(NamedTuple):
    """A collection's row in ``collections``: the generation of the log the index was built
    from and how far into that log it has applied (``log_end``)."""

    generation: str
    log_end: int


def table(collection: str) -> str:
    """Quoted table name of a (validated) collection name."""
    return f'"c_{collection}"'


def side_table(collection: str) -> str:
    """Quoted name of the table a collection's next content is built in (then swapped in)."""
    return f'"n_{collection}"'


def side_batches(collection: str) -> str:
    """Quoted name of the table the batches of a collection's next content are built in."""
    return f'"nb_{collection}"'


_RECORDS_COLUMNS = (
    "(pos INTEGER PRIMARY KEY, id TEXT NOT NULL, data TEXT NOT NULL, crc INTEGER NOT NULL)"
)
"""A collection table; its ids are made unique by ``unique_id_sql`` (created before rows are
applied one batch at a time, after the load in a bulk build)."""


def records_table_sql(quoted_table: str) -> str:
    """``CREATE TABLE`` of a collection table (live, side or bulk-built), without indexes."""
    return f"CREATE TABLE {quoted_table}{_RECORDS_COLUMNS}"


def unique_id_sql(quoted_table: str, collection: str) -> str:
    """The unique index on a collection table's ids. Its name carries a random tag: a side
    table (``start_side``) and the live table it replaces each hold one at the same time."""
    return f'CREATE UNIQUE INDEX "u_{collection}_{os.urandom(4).hex()}" ON {quoted_table}(id)'


_BATCHES_COLUMNS = (
    "(batch_id TEXT PRIMARY KEY, collection TEXT NOT NULL, kind TEXT NOT NULL, "
    "start INTEGER NOT NULL, end INTEGER NOT NULL, count INTEGER NOT NULL, "
    "sha256 TEXT NOT NULL, committed_at TEXT NOT NULL)"
)
"""The one definition of a batches table (the live one and a collection's side one)."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS collections(
    name TEXT PRIMARY KEY, generation TEXT NOT NULL, log_end INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches{_BATCHES_COLUMNS};
CREATE INDEX IF NOT EXISTS batches_by_pos ON batches(collection, start);
"""


def schema_statements() -> list[str]:
    """The statements creating an empty index file's shared tables."""
    return [statement for statement in _SCHEMA.split(";") if statement.strip()]


def index_sql(collection: str, spec: Sequence[str]) -> str:
    """``CREATE INDEX`` of one indexed-fields spec on a collection table (expression index:
    the same ``json_extract`` text the filter compiler emits, so queries use it)."""
    exprs = [field_expr(field_path(f, "indexes")) for f in spec]
    tag = hashlib.sha1("\x00".join(spec).encode()).hexdigest()[:12]
    return f'CREATE INDEX IF NOT EXISTS "i_{collection}_{tag}" ON {table(collection)}(' + (
        ", ".join(exprs) + ")"
    )


@functools.lru_cache(maxsize=64)
def insert_sql(quoted_table: str, rows: int) -> str:
    """One multi-row INSERT: a single step for SQLite, so the GIL is handed over once per
    statement instead of once per row as ``executemany`` does (with busy threads each
    hand-over can wait a whole switch interval)."""
    values = ",".join(["(?,?,?,?)"] * rows)
    return f"INSERT OR REPLACE INTO {quoted_table}(pos, id, data, crc) VALUES {values}"


def check_index_version(path: Path) -> None:
    """``SchemaVersionError`` if the index at ``path`` was written by an unknown version.

    Reads only the header (read-only connection); a missing or unreadable file passes here
    and is dealt with on use (``rebuild_index`` repairs it). An older version passes too: the
    store opens, and using that context raises ``SchemaVersionError`` naming ``ctxstore
    upgrade`` (``SqliteFile.check_version``)."""
    if not path.is_file():
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60.0)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return
    if not 0 <= version <= INDEX_VERSION:
        raise SchemaVersionError(
            f"{path}: index version {version} is unknown (this is {INDEX_VERSION})"
            + SqliteIndex.UNKNOWN_VERSION_HINT
        )


class SqliteIndex(SqliteFile):
    """One context's index file. Each thread reads through its own connection; writes are made
    by the writer-lock holder."""

    VERSION = INDEX_VERSION
    WRITE_CACHE_KIB = 64 << 10
    CHECKPOINT_PAGES = 16384  # 64 MiB of WAL: a checkpoint every few batches, not every one
    WHAT = "index"
    REPAIR = "; repair it with rebuild_index()"
    UNKNOWN_VERSION_HINT = (
        "; if it was not written by a newer ctxstore but damaged, delete it: it is rebuilt "
        "from the logs"
    )

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._known: set[str] = set()

    def invalidate(self) -> None:
        super().invalidate()
        self._known.clear()

    def close(self) -> None:
        super().close()
        self._known.clear()

    def initialise(self) -> None:
        with self.write() as conn:
            for statement in schema_statements():
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={INDEX_VERSION}")

    # -- collections and their state ----------------------------------------------------

    def is_initialised(self) -> bool:
        with self.errors():
            row = (
                self.conn()
                .execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='collections'")
                .fetchone()
            )
        return row is not None

    def collection_state(self, collection: str) -> CollectionState | None:
        with self.errors():
            row = (
                self.conn()
                .execute("SELECT generation, log_end FROM collections WHERE name=?", (collection,))
                .fetchone()
            )
        return None if row is None else CollectionState(row[0], row[1])

    def has_table(self, collection: str) -> bool:
        if collection in self._known:
            return True
        with self.errors():
            row = (
                self.conn()
                .execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                    (f"c_{collection}",),
                )
                .fetchone()
            )
        if row is not None:
            self._known.add(collection)
        return row is not None

    def reset_collection(
        self, collection: str, generation: str, log_end: int, indexes: Sequence[Sequence[str]]
    ) -> None:
        """(Re)create an empty table for ``collection`` at log offset ``log_end``."""
        t = table(collection)
        with self.write() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(records_table_sql(t))
            conn.execute(unique_id_sql(t, collection))
            for spec in indexes:
                conn.execute(self._index_sql(collection, spec))
            conn.execute("DELETE FROM batches WHERE collection=?", (collection,))
            conn.execute(
                "INSERT OR REPLACE INTO collections(name, generation, log_end) VALUES (?,?,?)",
                (collection, generation, log_end),
            )
        self._known.discard(collection)

    # -- building a collection's next content aside, then swapping it in ------------------

    def start_side(self, collection: str) -> None:
        """(Re)create the empty side tables a collection's next content is built in. Readers
        never look at them: they keep reading the live table until ``swap_side``."""
        with self.write() as conn:
            self._drop_side(conn, collection)
            conn.execute(records_table_sql(side_table(collection)))
            conn.execute(unique_id_sql(side_table(collection), collection))
            conn.execute(f"CREATE TABLE {side_batches(collection)}{_BATCHES_COLUMNS}")

    def drop_side(self, collection: str) -> None:
        with self.write() as conn:
            self._drop_side(conn, collection)

    @staticmethod
    def _drop_side(conn: sqlite3.Connection, collection: str) -> None:
        conn.execute(f"DROP TABLE IF EXISTS {side_table(collection)}")
        conn.execute(f"DROP TABLE IF EXISTS {side_batches(collection)}")

    def apply_side(
        self,
        conn: sqlite3.Connection,
        collection: str,
        batch: BatchRow,
        puts: Iterable[PutRow],
        deletes: Sequence[str],
    ) -> None:
        """``apply`` to the side tables of ``collection`` (inside an open ``write()``)."""
        self._apply_to(conn, side_table(collection), side_batches(collection), batch, puts, deletes)

    def swap_side(
        self, collection: str, generation: str, log_end: int, indexes: Sequence[Sequence[str]]
    ) -> None:
        """Make the side tables the collection's content, with its log state, in ONE
        transaction: a reader in any thread or process sees the old content or the new one,
        never an empty or partial table."""
        t, side, sb = table(collection), side_table(collection), side_batches(collection)
        with self.write() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(f"ALTER TABLE {side} RENAME TO {t}")
            for spec in indexes:
                conn.execute(self._index_sql(collection, spec))
            conn.execute("DELETE FROM batches WHERE collection=?", (collection,))
            conn.execute(f"INSERT OR REPLACE INTO batches SELECT * FROM {sb}")
            conn.execute(f"DROP TABLE {sb}")
            conn.execute(
                "INSERT OR REPLACE INTO collections(name, generation, log_end) VALUES (?,?,?)",
                (collection, generation, log_end),
            )
        self._known.discard(collection)

    def ensure_indexes(self, collection: str, indexes: Sequence[Sequence[str]]) -> None:
        with self.write() as conn:
            for spec in indexes:
                conn.execute(self._index_sql(collection, spec))

    @staticmethod
    def _index_sql(collection: str, spec: Sequence[str]) -> str:
        return index_sql(collection, spec)

    # -- applying batches ---------------------------------------------------------------

    def apply(
        self,
        conn: sqlite3.Connection,
        collection: str,
        batch: BatchRow,
        puts: Iterable[PutRow],
        deletes: Sequence[str],
    ) -> None:
        """Apply one batch inside an open ``write()`` transaction."""
        self._apply_to(conn, table(collection), "batches", batch, puts, deletes)

    @staticmethod
    def _apply_to(
        conn: sqlite3.Connection,
        t: str,
        batches: str,
        batch: BatchRow,
        puts: Iterable[PutRow],
        deletes: Sequence[str],
    ) -> None:
        insert_puts(conn, t, puts)
        if deletes:
            conn.executemany(f"DELETE FROM {t} WHERE id=?", [(d,) for d in deletes])
        conn.execute(f"INSERT OR REPLACE INTO {batches} VALUES (?,?,?,?,?,?,?,?)", batch.values())

    @staticmethod
    def set_log_end(conn: sqlite3.Connection, collection: str, log_end: int) -> None:
        conn.execute("UPDATE collections SET log_end=? WHERE name=?", (log_end, collection))

    # -- batches ------------------------------------------------------------------------

    def batch(self, batch_id: str) -> BatchRow | None:
        with self.errors():
            row = (
                self.conn()
                .execute("SELECT * FROM batches WHERE batch_id=?", (batch_id,))
                .fetchone()
            )
        return None if row is None else BatchRow(*row)

    def batches(self, collection: str) -> Iterator[BatchRow]:
        with self.errors():
            cur = self.conn().execute(
                "SELECT * FROM batches WHERE collection=? ORDER BY start", (collection,)
            )
            yield from itertools.starmap(BatchRow, cur)

    def batch_at(self, collection: str, pos: int) -> BatchRow | None:
        """The batch whose byte range contains ``pos``."""
        with self.errors():
            row = (
                self.conn()
                .execute(
                    "SELECT * FROM batches WHERE collection=? AND start<=? ORDER BY start DESC "
                    "LIMIT 1",
                    (collection, pos),
                )
                .fetchone()
            )
        if row is None:
            return None
        found = BatchRow(*row)
        return found if found.start <= pos < found.end else None

    # -- reading records ----------------------------------------------------------------

    def _check(self, collection: str, data: str, crc: int) -> str:
        if zlib.crc32(data.encode()) != crc:
            raise IntegrityError(
                f"{self.path}: damaged row in collection {collection!r}; "
                "repair it with rebuild_index()"
            )
        return data

    def get(self, collection: str, record_id: str) -> str | None:
        if not self.has_table(collection):
            return None
        with self.errors():
            row = (
                self.conn()
                .execute(f"SELECT data, crc FROM {table(collection)} WHERE id=?", (record_id,))
                .fetchone()
            )
        return None if row is None else self._check(collection, row[0], row[1])

    def select(
        self,
        collection: str,
        where_sql: str,
        params: Sequence[Any],
        order_sql: str = "pos",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """The matching records, decoded (each row CRC-checked first)."""
        if not self.has_table(collection):
            return []
        sql, args = self._select_sql(collection, where_sql, params, order_sql, limit, offset)
        with self.errors():
            rows = self.conn().execute(sql, args).fetchall()
        crc32 = zlib.crc32
        for data, crc in rows:
            if crc32(data.encode()) != crc:
                self._check(collection, data, crc)
        return list(map(orjson.loads, [row[0] for row in rows]))

    def stream(
        self, collection: str, where_sql: str, params: Sequence[Any], order_sql: str = "pos"
    ) -> Iterator[dict[str, Any]]:
        """Decoded matching records, streamed from a private connection holding one snapshot
        (writes made while iterating, even by this thread, are not seen half-way)."""
        if not self.has_table(collection):
            return
        sql, args = self._select_sql(collection, where_sql, params, order_sql, None, 0)
        crc32, loads = zlib.crc32, orjson.loads
        conn = self._connect()
        try:
            with self.errors():
                conn.execute("BEGIN")
                cur = conn.execute(sql, args)
                while rows := cur.fetchmany(FETCH):
                    for data, crc in rows:
                        if crc32(data.encode()) != crc:
                            self._check(collection, data, crc)
                    yield from map(loads, [row[0] for row in rows])
        finally:
            conn.close()

    @staticmethod
    def _select_sql(
        collection: str,
        where_sql: str,
        params: Sequence[Any],
        order_sql: str,
        limit: int | None,
        offset: int,
    ) -> tuple[str, list[Any]]:
        sql = f"SELECT data, crc FROM {table(collection)} WHERE {where_sql} ORDER BY {order_sql}"
        args = list(params)
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            args += [-1 if limit is None else limit, offset]
        return sql, args

    def select_ids(self, collection: str, where_sql: str, params: Sequence[Any]) -> list[str]:
        if not self.has_table(collection):
            return []
        with self.errors():
            cur = self.conn().execute(
                f"SELECT id FROM {table(collection)} WHERE {where_sql} ORDER BY pos", list(params)
            )
            return [r[0] for r in cur]

    def existing(self, collection: str, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` that have a current version, in the given order."""
        if not self.has_table(collection) or not ids:
            return []
        found: set[str] = set()
        with self.errors():
            conn = self.conn()  # inside errors(): another thread may close an idle connection
            for i in range(0, len(ids), 500):
                part = list(ids[i : i + 500])
                marks = ",".join("?" * len(part))
                found.update(
                    r[0]
                    for r in conn.execute(
                        f"SELECT id FROM {table(collection)} WHERE id IN ({marks})", part
                    )
                )
        return [i for i in ids if i in found]

    def count(self, collection: str, where_sql: str = "(1)", params: Sequence[Any] = ()) -> int:
        if not self.has_table(collection):
            return 0
        with self.errors():
            row = (
                self.conn()
                .execute(
                    f"SELECT count(*) FROM {table(collection)} WHERE {where_sql}", list(params)
                )
                .fetchone()
            )
        return int(row[0])

    def rows(self, collection: str) -> Iterator[IndexRow]:
        """Every row in commit order, unchecked (for ``verify``)."""
        if not self.has_table(collection):
            return
        with self.errors():
            cur = self.conn().execute(
                f"SELECT pos, id, data, crc FROM {table(collection)} ORDER BY pos"
            )
            while rows := cur.fetchmany(FETCH):
                yield from map(IndexRow._make, rows)

    def collection_names(self) -> list[str]:
        with self.errors():
            return [r[0] for r in self.conn().execute("SELECT name FROM collections ORDER BY name")]

    def integrity_check(self) -> list[str]:
        with self.errors():
            rows = self.conn().execute("PRAGMA integrity_check").fetchall()
        return [] if rows == [("ok",)] else [str(r[0]) for r in rows]
