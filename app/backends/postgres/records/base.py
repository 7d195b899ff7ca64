"""``PgBase``: what every part of ``PgRecords`` stands on: the database, the context's
name, working folder and writer lock, transactions, snapshots and readiness."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from app.backends.local.records.collection import new_generation
from app.backends.local.staging import staging_folder
from app.backends.postgres.connect import Database
from app.backends.postgres.records.tables import (
    BUILTIN_INDEX_NAMES,
    DDL,
    PART,
    VERSION,
    write_key,
)
from app.backends.postgres.schema import ensure_schema, schema_version
from app.core.errors import InvalidInput, StorageError
from app.core.layout import SPOOL_PURPOSE
from app.core.locks import Lock

if TYPE_CHECKING:
    import psycopg

FETCH = 2000
BASE = "FROM ctxstore_records WHERE context = %s AND collection = %s"


_CURSORS = itertools.count()


def _fetch(conn: Any, name: str, sql: str, args: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` through the server-side cursor ``name``, ``FETCH`` at a time."""
    with conn.cursor(name=name) as cur:
        cur.itersize = FETCH
        cur.execute(sql, list(args))
        while rows := cur.fetchmany(FETCH):
            yield from rows


class PgBase:
    """The record collections of context ``name`` in the database ``db``; ``folder`` is the
    context's local working folder (spools beside it); ``lock`` its writer lock, the one the
    context's other parts hold too (``PgContexts.context_lock``)."""

    def __init__(self, db: Database, name: str, folder: Path, lock: Lock) -> None:
        self._db = db
        self.name = name
        self.path = folder
        self.writer_lock: Lock = lock
        self._ready = False
        self._schemas: dict[str, type[BaseModel]] = {}
        self._indexed: set[str] = set(BUILTIN_INDEX_NAMES)  # made with the tables

    def __repr__(self) -> str:
        return f"PgRecords({self._db.where()!r}, {self.name!r})"

    def where(self) -> str:
        """How errors name the context's records (the URL without its password)."""
        return f"{self._db.where()} (context {self.name!r})"

    # -- the database -------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """One transaction (joining the caller's, if one is open in this thread)."""
        import psycopg

        try:
            with self._db.transaction() as conn:
                yield conn
        except psycopg.errors.UntranslatableCharacter as exc:
            raise InvalidInput(f"records: {str(exc).strip()}") from None
        except psycopg.Error as exc:
            text = str(exc).strip() or type(exc).__name__
            raise StorageError(f"{doing} at {self.where()}: {text}") from None

    @contextlib.contextmanager
    def write_transaction(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """A write transaction holding the context's write key until it ends."""
        with self.transaction(doing) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (write_key(self.name),))
            yield conn

    def snapshot(self, sql: str, args: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """The rows of ``sql`` from one REPEATABLE READ snapshot, fetched ``FETCH`` at a time
        through a server-side cursor on a connection of their own (flat memory; the caller
        may write while iterating). Inside this thread's open transaction (a unit of work),
        on that transaction's connection instead, so the rows include its own writes."""
        import psycopg

        try:
            if self._db.in_transaction:  # inside a unit of work: see its own writes
                with self._db.connection() as conn:
                    yield from _fetch(conn, f"ctxstore_stream_{next(_CURSORS)}", sql, args)
                return
            with self._db.session() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield from _fetch(conn, "ctxstore_stream", sql, args)
        except psycopg.Error as exc:
            text = str(exc).strip() or type(exc).__name__
            raise StorageError(f"reading {self.where()}: {text}") from None

    # -- readiness and locking ----------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self._ready

    def ready(self) -> None:
        """The index is the table itself, always up to date: only the tables are made sure
        of (once per ``PgRecords``). They are created, the first time, on a connection of
        their own: never inside a unit of work (``Backend.atomic``) the caller may have open,
        which would hold the schema lock until it commits."""
        if self._ready:
            return
        with self.transaction("opening the records") as conn:
            found = schema_version(conn, PART)
        if found != VERSION:  # missing (created now) or another version (refused)
            import psycopg

            try:
                with self._db.session() as conn, conn.transaction():
                    ensure_schema(conn, PART, DDL, VERSION)
            except psycopg.Error as exc:
                raise StorageError(
                    f"creating the records tables at {self.where()}: {exc}"
                ) from None
        self._ready = True

    def ready_if_idle(self) -> bool:
        self.ready()
        return True

    def writing(self) -> AbstractContextManager[None]:
        return self.writer_lock.hold()

    @contextlib.contextmanager
    def spool_folder(self) -> Iterator[Path]:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{parent}: cannot create the working folder ({exc})") from exc
        with staging_folder(parent, SPOOL_PURPOSE) as folder:
            yield folder

    def _row(self, conn: Any, collection: str) -> tuple[Any, ...] | None:
        found: tuple[Any, ...] | None = conn.execute(
            "SELECT schema, indexes, generation FROM ctxstore_collections"
            " WHERE context = %s AND collection = %s",
            (self.name, collection),
        ).fetchone()
        return found

    def _ensure_collection(self, conn: Any, collection: str, generation: str | None = None) -> None:
        conn.execute(
            "INSERT INTO ctxstore_collections (context, collection, generation)"
            " VALUES (%s, %s, %s) ON CONFLICT (context, collection) DO NOTHING",
            (self.name, collection, generation or new_generation()),
        )


__all__ = ["BASE", "FETCH", "PgBase"]
