"""The plumbing ``PgTracker`` is built on: its tables, transactions and the clock helpers.

``TrackerBase`` holds the ``Database`` and the staged-items store, knows whether the tracker
tables exist (created by the first write under ``ensure_schema``, part ``tracker``; reads of a
database without them answer empty and create nothing) and turns psycopg errors into
``StorageError`` naming the database. Inside an open ``Database.transaction()`` of the thread
(a unit of work), the tables are created on a connection of their own, so a rolled-back unit of
work never leaves them remembered but missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from app.backends.postgres import tracker_sql as q
from app.backends.postgres.connect import Database
from app.backends.postgres.schema import ensure_schema, schema_version
from app.backends.postgres.tracker_items import ObjectItems
from app.core import clock
from app.core.clock import Stamp
from app.core.errors import NotFoundError, SchemaVersionError, StorageError
from app.formats.staged_items import ChunkIndex

if TYPE_CHECKING:
    import psycopg

Row = dict[str, Any]


def stamp_age(now: Stamp) -> float:
    """How long ago ``now`` was on this host's steady clock (0 for another boot's reading)."""
    if now.boot != clock.boot_id():
        return 0.0
    return max(0.0, clock.steady() - now.steady)


def chunk_index_of(blob: bytes) -> ChunkIndex:
    return [(int(a), int(b), int(c)) for a, b, c in orjson.loads(blob)]


class TrackerBase:
    """Tables, transactions and errors of one store's PostgreSQL tracker."""

    def __init__(self, database: Database, items: ObjectItems) -> None:
        self.db = database
        self.items = items
        self._ready = False  # the tables are known to exist (they are never dropped)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db.where()!r})"

    @property
    def path(self) -> Path:
        return Path(f"{self.db.where()}#{q.WORKFLOWS}")

    # -- plumbing ---------------------------------------------------------------------------

    def _error(self, exc: Exception) -> StorageError:
        return StorageError(f"{self.db.where()}: workflow tracker: {exc}")

    def _exists(self, conn: psycopg.Connection[Any]) -> bool:
        if not self._ready:
            version = schema_version(conn, q.PART)
            if version is not None and version != q.VERSION:
                raise SchemaVersionError(
                    f"the PostgreSQL {q.PART} tables have schema version {version}, this "
                    f"ctxstore expects {q.VERSION} (run `ctxstore upgrade`)"
                )
            self._ready = version is not None
        return self._ready

    def _read(self, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
        import psycopg
        from psycopg.rows import dict_row

        try:
            with self.db.transaction() as conn:
                if not self._exists(conn):
                    return []
                return conn.cursor(row_factory=dict_row).execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from None

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """A transaction (joining an ambient one) with the tables created; psycopg errors
        become ``StorageError`` naming the database."""
        import psycopg

        try:
            if not self._ready and self.db.in_transaction:
                # inside a unit of work: create the tables on a connection of their own, so a
                # rollback of that work never leaves them remembered but missing
                with self.db.session() as own, own.transaction():
                    ensure_schema(own, q.PART, q.DDL, q.VERSION)
            with self.db.transaction() as conn:
                if not self._exists(conn):
                    ensure_schema(conn, q.PART, q.DDL, q.VERSION)
                yield conn
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def _one(self, wid: str) -> Row:
        rows = self._read(q.SELECT_ROW, {"wid": wid})
        if not rows:
            raise NotFoundError(f"workflow {wid!r} not found")
        return rows[0]


def fetch_dict(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> Row | None:
    from psycopg.rows import dict_row

    found: Row | None = conn.cursor(row_factory=dict_row).execute(sql, params).fetchone()
    return found


def fetch_row(conn: psycopg.Connection[Any], workflow_id: str) -> Row | None:
    return fetch_dict(conn, q.SELECT_ROW, {"wid": workflow_id})
