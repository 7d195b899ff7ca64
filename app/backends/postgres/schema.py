"""The schema-version bookkeeping every PostgreSQL part shares (strategy section 11).

One table, ``ctxstore_meta(part, schema_version)``, holds one row per part of the store
(``access``, ``catalog``, ``records`` ...). :func:`ensure_schema` creates a part's tables the
first time and records its version; later calls only check the row. Concurrent first calls
(threads, processes, hosts) are serialised by ``pg_advisory_xact_lock`` on one fixed key, so
``CREATE TABLE IF NOT EXISTS`` never races (PostgreSQL can fail two concurrent ones on the
catalogue's unique index). Opening never migrates: a row with another version is an error.

Callers pass a psycopg connection; ``ensure_schema`` runs in the connection's current
transaction (psycopg opens one implicitly when ``autocommit`` is off) and leaves committing to
the caller, so the lock is held until then. Nothing here imports ``psycopg``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.core.errors import SchemaVersionError
from app.core.version import UPGRADE_COMMAND

#: ``pg_advisory_xact_lock`` key of schema creation (a fixed, arbitrary 64-bit value: ASCII
#: "ctxschem"). Other parts must not reuse it.
SCHEMA_LOCK_KEY = 0x637478736368656D

META_TABLE = "ctxstore_meta"

_CREATE_META = (
    "CREATE TABLE IF NOT EXISTS ctxstore_meta ("
    " part text PRIMARY KEY,"
    " schema_version integer NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now())"
)


def _statements(ddl: str | Sequence[str]) -> list[str]:
    return [ddl] if isinstance(ddl, str) else list(ddl)


def schema_version(conn: Any, part: str) -> int | None:
    """The recorded schema version of ``part``, or None when the part (or the meta table) was
    never created. Creates nothing: safe on a read-only store."""
    cur = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (META_TABLE,))
    row = cur.fetchone()
    if row is None or not row[0]:
        return None
    cur = conn.execute("SELECT schema_version FROM ctxstore_meta WHERE part = %s", (part,))
    found = cur.fetchone()
    return None if found is None else int(found[0])


def ensure_schema(conn: Any, part: str, ddl: str | Sequence[str], version: int = 1) -> bool:
    """Create ``part``'s tables with ``ddl`` (one statement or several, no parameters) unless
    its row in ``ctxstore_meta`` says they exist; returns whether it created them.

    Idempotent and safe under concurrency (advisory transaction lock). Raises ``SchemaVersionError``
    when the part was created with another ``version`` (opening never migrates).
    """
    recorded = schema_version(conn, part)
    if recorded is None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        conn.execute(_CREATE_META)
        recorded = schema_version(conn, part)
        if recorded is None:
            for statement in _statements(ddl):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO ctxstore_meta (part, schema_version) VALUES (%s, %s)",
                (part, version),
            )
            return True
    if recorded < version:
        raise SchemaVersionError(
            f"the PostgreSQL {part} tables have schema version {recorded}, older than this "
            f"ctxstore's {version}; run `{UPGRADE_COMMAND}` (opening never migrates)"
        )
    if recorded != version:
        raise SchemaVersionError(
            f"the PostgreSQL {part} tables have schema version {recorded}, this ctxstore "
            f"expects {version}: the version is unknown (written by a newer ctxstore)"
        )
    return False
