"""``Access`` on PostgreSQL: the store's tokens and audit log in two tables of its database.

The same rows as the embedded ``access.sqlite`` (``app.formats.accessdb``): ``tokens`` keyed by
the public token id, names unique (compared and sorted bytewise, ``COLLATE "C"``), contexts kept
as the same JSON text; ``audit`` keyed by the dense ``seq``. Nothing here computes a hash or
knows the trust key (the managers do).

The tables are created by the first write only (``ensure_schema``, part ``access``): reads of a
database without them answer empty and create nothing. Each write is one transaction.
``append_audit`` takes ``pg_advisory_xact_lock(AUDIT_LOCK_KEY)`` before reading the newest
entry, so every appender on every host sharing the database is serialised until its insert
commits: ``seq`` stays dense and the chain linear. SQL uses bound parameters only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from app.backends.postgres.connect import Database
from app.backends.postgres.schema import ensure_schema, schema_version
from app.core.errors import ConflictError, IntegrityError, StorageError
from app.formats.accessdb import AuditMaker, AuditRow, TokenRow
from app.formats.accessdb import audit_row as _audit

if TYPE_CHECKING:
    import psycopg

ACCESS_PART = "access"
ACCESS_SCHEMA_VERSION = 1

#: ``pg_advisory_xact_lock`` key serialising audit appenders (ASCII "ctxaudit").
AUDIT_LOCK_KEY = 0x6374786175646974

DDL = (
    "CREATE TABLE IF NOT EXISTS tokens ("
    " token_id text PRIMARY KEY,"
    ' name text COLLATE "C" NOT NULL UNIQUE,'
    " scope text NOT NULL,"
    " contexts text,"
    " created_at text NOT NULL,"
    " mac text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit ("
    " seq bigint PRIMARY KEY CHECK (seq >= 1),"
    " at text NOT NULL,"
    " token text NOT NULL,"
    " action text NOT NULL,"
    " target text NOT NULL,"
    " outcome integer NOT NULL,"
    " request_id text NOT NULL,"
    " mac text NOT NULL)",
)

_TOKEN_SELECT = "SELECT token_id, name, scope, contexts, created_at, mac FROM tokens"
_AUDIT_SELECT = "SELECT seq, at, token, action, target, outcome, request_id, mac FROM audit"


class PgAccess:
    """The ``Access`` rows of one store kept in its PostgreSQL database."""

    def __init__(self, database: Database | str) -> None:
        self.db = database if isinstance(database, Database) else Database(database)
        self._ready = False  # the tables are known to exist (they are never dropped)

    def where(self) -> str:
        return self.db.where()

    def __repr__(self) -> str:
        return f"PgAccess({self.where()!r})"

    # -- plumbing ---------------------------------------------------------------------------

    def _error(self, exc: Exception) -> StorageError:
        return StorageError(f"{self.where()}: access tables: {exc}")

    def _exists(self, conn: psycopg.Connection[Any]) -> bool:
        if not self._ready:
            self._ready = schema_version(conn, ACCESS_PART) is not None
        return self._ready

    def _read(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            with self.db.connection() as conn:
                if not self._exists(conn):
                    return []
                return conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Create the tables on the first write (inside the write's transaction)."""
        if not self._ready:
            ensure_schema(conn, ACCESS_PART, DDL, ACCESS_SCHEMA_VERSION)
            # ``_ready`` is set by the caller once this transaction committed

    def _token(self, row: tuple[Any, ...]) -> TokenRow:
        token_id, name, scope, contexts, created_at, mac = row
        try:
            names: tuple[str, ...] | None = None
            if contexts is not None:
                value = orjson.loads(contexts)
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError("contexts is not a list of names")
                names = tuple(value)
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise IntegrityError(f"{self.where()}: token {name!r} is damaged: {exc}") from exc
        return TokenRow(str(token_id), str(name), str(scope), names, str(created_at), str(mac))

    # -- tokens -----------------------------------------------------------------------------

    def add_token(self, row: TokenRow) -> None:
        import psycopg

        contexts = None if row.contexts is None else orjson.dumps(list(row.contexts)).decode()
        try:
            with self.db.transaction() as conn:
                self._prepare(conn)
                inserted = conn.execute(
                    "INSERT INTO tokens (token_id, name, scope, contexts, created_at, mac)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (row.token_id, row.name, row.scope, contexts, row.created_at, row.mac),
                ).rowcount
        except psycopg.Error as exc:
            raise self._error(exc) from None
        self._ready = True
        if inserted != 1:
            raise ConflictError(f"name: a token named {row.name!r} already exists")

    def token(self, token_id: str) -> TokenRow | None:
        rows = self._read(_TOKEN_SELECT + " WHERE token_id = %s", (token_id,))
        return self._token(rows[0]) if rows else None

    def tokens(self) -> list[TokenRow]:
        return [self._token(r) for r in self._read(_TOKEN_SELECT + " ORDER BY name")]

    def remove_token(self, name: str) -> bool:
        import psycopg

        try:
            with self.db.transaction() as conn:
                if not self._exists(conn):
                    return False
                return conn.execute("DELETE FROM tokens WHERE name = %s", (name,)).rowcount > 0
        except psycopg.Error as exc:
            raise self._error(exc) from None

    # -- the audit log ----------------------------------------------------------------------

    def append_audit(self, make: AuditMaker) -> AuditRow:
        import psycopg

        try:
            with self.db.transaction() as conn:
                self._prepare(conn)
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_KEY,))
                last = conn.execute(_AUDIT_SELECT + " ORDER BY seq DESC LIMIT 1").fetchone()
                row = make(None if last is None else _audit(last))
                conn.execute(
                    "INSERT INTO audit (seq, at, token, action, target, outcome, request_id, mac)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    tuple(row),
                )
        except psycopg.Error as exc:
            raise self._error(exc) from None
        self._ready = True
        return row

    def audit_rows(self, offset: int = 0, limit: int | None = None) -> list[AuditRow]:
        rows = self._read(_AUDIT_SELECT + " ORDER BY seq LIMIT %s OFFSET %s", (limit, offset))
        return [_audit(r) for r in rows]

    def audit_after(self, seq: int, limit: int) -> list[AuditRow]:
        rows = self._read(_AUDIT_SELECT + " WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit))
        return [_audit(r) for r in rows]

    def audit_count(self) -> int:
        rows = self._read("SELECT count(*) FROM audit")
        return int(rows[0][0]) if rows else 0

    def audit_last(self) -> AuditRow | None:
        rows = self._read(_AUDIT_SELECT + " ORDER BY seq DESC LIMIT 1")
        return _audit(rows[0]) if rows else None

    def close(self) -> None:
        self.db.close()


__all__ = ["ACCESS_PART", "ACCESS_SCHEMA_VERSION", "AUDIT_LOCK_KEY", "DDL", "PgAccess"]
