"""The embedded store's service access database: tokens and the audit log in one SQLite file
(``access.sqlite`` at the store's root; name in ``app.core.layout``).

``tokens`` holds one row per token, keyed by its public id: name (unique), scope, contexts
(JSON list, NULL for every context), creation time and the keyed hash (``mac``) the managers
compute (``app.managers.access.tokens``). ``audit`` holds the chained audit entries, keyed by
their dense sequence number. This module stores and finds rows; it computes no hash and knows
no key.

The file is never opened through a link (``IntegrityError``). It is created by the first
write only: every read of a store without it answers as an
empty database (no tokens, no entries), so listing works on a read-only store. Each write is
one ``BEGIN IMMEDIATE`` transaction; ``append_audit`` reads the newest entry and inserts the
next one inside the same transaction, so concurrent appenders (threads, processes) keep one
dense chain.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import orjson

from app.core.errors import ConflictError, IntegrityError
from app.core.nofollow import exists_as, lstat_as
from app.formats.sqlitefile import SqliteFile

ACCESS_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens(
    token_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    contexts TEXT,
    created_at TEXT NOT NULL,
    mac TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit(
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    token TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    mac TEXT NOT NULL);
"""

_TOKEN_COLUMNS = "token_id, name, scope, contexts, created_at, mac"
_AUDIT_COLUMNS = "seq, at, token, action, target, outcome, request_id, mac"


class TokenRow(NamedTuple):
    """One stored token: never the token itself, only its keyed hash ``mac``."""

    token_id: str
    name: str
    scope: str
    contexts: tuple[str, ...] | None
    created_at: str
    mac: str


class AuditRow(NamedTuple):
    """One stored audit entry (``seq`` starts at 1 and is dense)."""

    seq: int
    at: str
    token: str
    action: str
    target: str
    outcome: int
    request_id: str
    mac: str


def audit_row(row: Sequence[Any]) -> AuditRow:
    """An ``AuditRow`` from a database row in column order (seq, at, token, action, target,
    outcome, request_id, mac), typed: the one decoder of both backends."""
    seq, at, token, action, target, outcome, request_id, mac = row
    return AuditRow(
        int(seq),
        str(at),
        str(token),
        str(action),
        str(target),
        int(outcome),
        str(request_id),
        str(mac),
    )


AuditMaker = Callable[[AuditRow | None], AuditRow]
"""Builds the next entry from the newest stored one (None: the log is empty)."""


def _contexts(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    value = orjson.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("contexts is not a list of names")
    return tuple(value)


class AccessDB(SqliteFile):
    """``access.sqlite`` of one store; connections are per thread."""

    VERSION = ACCESS_VERSION
    SYNCHRONOUS = "FULL"
    WHAT = "access database"

    def where(self) -> str:
        return str(self.path)

    def _first_use(self, conn: sqlite3.Connection) -> None:
        self.create_schema(conn, _SCHEMA)

    def _exists(self) -> bool:
        """Whether the file was created (reads of a store without it see nothing);
        ``IntegrityError`` for a link or a folder where it belongs."""
        return exists_as(self.path, "file")

    def _connect(self) -> sqlite3.Connection:
        lstat_as(self.path, "file")  # never opened through a link
        return super()._connect()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if not self._exists():
            return []
        with self.errors():
            rows: list[tuple[Any, ...]] = self.conn().execute(sql, params).fetchall()
            return rows

    def _token(self, row: tuple[Any, ...]) -> TokenRow:
        try:
            return TokenRow(
                str(row[0]), str(row[1]), str(row[2]), _contexts(row[3]), str(row[4]), str(row[5])
            )
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise IntegrityError(f"{self.path}: token {row[1]!r} is damaged: {exc}") from exc

    @staticmethod
    def _audit(row: tuple[Any, ...]) -> AuditRow:
        return audit_row(row)

    # -- tokens -------------------------------------------------------------------------

    def add_token(self, row: TokenRow) -> None:
        contexts = None if row.contexts is None else orjson.dumps(list(row.contexts)).decode()
        with self.write() as tx:
            taken = tx.execute(
                "SELECT name FROM tokens WHERE name = ? OR token_id = ?", (row.name, row.token_id)
            ).fetchone()
            if taken is not None:
                raise ConflictError(f"name: a token named {row.name!r} already exists")
            tx.execute(
                f"INSERT INTO tokens({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (row.token_id, row.name, row.scope, contexts, row.created_at, row.mac),
            )

    def token(self, token_id: str) -> TokenRow | None:
        rows = self._read(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_id = ?", (token_id,))
        return self._token(rows[0]) if rows else None

    def tokens(self) -> list[TokenRow]:
        return [
            self._token(r) for r in self._read(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY name")
        ]

    def remove_token(self, name: str) -> bool:
        if not self._exists():
            return False
        with self.write() as tx:
            return tx.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount > 0

    # -- the audit log ------------------------------------------------------------------

    def append_audit(self, make: AuditMaker) -> AuditRow:
        with self.write() as tx:
            last = tx.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            row = make(None if last is None else self._audit(last))
            tx.execute(f"INSERT INTO audit({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            return row

    def audit_rows(self, offset: int = 0, limit: int | None = None) -> list[AuditRow]:
        rows = self._read(
            f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY seq LIMIT ? OFFSET ?",
            (-1 if limit is None else limit, offset),
        )
        return [self._audit(r) for r in rows]

    def audit_after(self, seq: int, limit: int) -> list[AuditRow]:
        rows = self._read(
            f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [self._audit(r) for r in rows]

    def audit_count(self) -> int:
        rows = self._read("SELECT COUNT(*) FROM audit")
        return int(rows[0][0]) if rows else 0

    def audit_last(self) -> AuditRow | None:
        rows = self._read(f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1")
        return self._audit(rows[0]) if rows else None


__all__ = ["ACCESS_VERSION", "AccessDB", "AuditMaker", "AuditRow", "TokenRow", "audit_row"]
