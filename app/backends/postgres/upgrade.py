"""``ctxstore upgrade`` on PostgreSQL: bring every part's tables to this version.

Each part of a store (``catalog``, ``access``, ``records``, ``parts``; the tracker's once
it keeps its tables there) records its
schema version in ``ctxstore_meta`` (``app.backends.postgres.schema``). A ``PgPart`` names a
part, the DDL that creates it at ``version``, and ``migrations``: for each older version ``v``,
the statements that turn version ``v`` into ``v + 1``. ``upgrade_part`` runs in one
transaction under the schema advisory lock (the lock ``ensure_schema`` takes, so it never races
a first use on another host): a missing part is created at the current version, an older one
is migrated step by step and its row updated, a newer one raises ``SchemaVersionError``.
Statements come from this package's modules only, never from input (no parameters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from app.backends.postgres import tracker_sql
from app.backends.postgres.access import ACCESS_PART, ACCESS_SCHEMA_VERSION
from app.backends.postgres.access import DDL as ACCESS_DDL
from app.backends.postgres.catalog import DDL as CATALOG_DDL
from app.backends.postgres.catalog import FORMAT_VERSION, PART
from app.backends.postgres.connect import Database
from app.backends.postgres.files_schema import DDL as PARTS_DDL
from app.backends.postgres.files_schema import PART as PARTS_PART
from app.backends.postgres.files_schema import SCHEMA_VERSION as PARTS_VERSION
from app.backends.postgres.records.tables import DDL as RECORDS_DDL
from app.backends.postgres.records.tables import PART as RECORDS_PART
from app.backends.postgres.records.tables import VERSION as RECORDS_VERSION
from app.backends.postgres.schema import (
    SCHEMA_LOCK_KEY,
    ensure_schema,
    schema_version,
)
from app.core.errors import SchemaVersionError


class PgPart(NamedTuple):
    """One part's schema: its name, creating DDL, current version and step migrations."""

    name: str
    ddl: Sequence[str]
    version: int
    migrations: Mapping[int, Sequence[str]] = {}


PARTS: list[PgPart] = [
    PgPart(PART, CATALOG_DDL, FORMAT_VERSION),
    PgPart(ACCESS_PART, ACCESS_DDL, ACCESS_SCHEMA_VERSION),
    PgPart(RECORDS_PART, RECORDS_DDL, RECORDS_VERSION),
    PgPart(PARTS_PART, PARTS_DDL, PARTS_VERSION),
    PgPart(tracker_sql.PART, tracker_sql.DDL, tracker_sql.VERSION, tracker_sql.MIGRATIONS),
]
"""The parts ``ctxstore upgrade`` brings to this version, the catalogue (the store's marker)
first. A module adding a part appends its ``PgPart`` (``register``)."""


def register(part: PgPart) -> None:
    """Add (or replace, by name) a part ``ctxstore upgrade`` looks after."""
    PARTS[:] = [p for p in PARTS if p.name != part.name] + [part]


def pending(conn: Any, parts: Sequence[PgPart]) -> list[tuple[PgPart, int | None]]:
    """The parts whose recorded version differs from theirs, with that version (None: the
    part was never created). Reads only."""
    out: list[tuple[PgPart, int | None]] = []
    for part in parts:
        recorded = schema_version(conn, part.name)
        if recorded != part.version:
            out.append((part, recorded))
    return out


def describe(part: PgPart, recorded: int | None) -> str:
    if recorded is None:
        return f"PostgreSQL part {part.name}: create at version {part.version}"
    return f"PostgreSQL part {part.name}: version {recorded} -> {part.version}"


def upgrade_part(conn: Any, part: PgPart) -> bool:
    """Create or migrate ``part`` in the connection's transaction (commit is the caller's);
    returns whether anything changed. ``SchemaVersionError`` for a newer, unknown version or an
    older one this version has no migration for."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
    recorded = schema_version(conn, part.name)
    if recorded is None:
        return ensure_schema(conn, part.name, part.ddl, part.version)
    if recorded == part.version:
        return False
    if recorded > part.version:
        raise SchemaVersionError(
            f"the PostgreSQL {part.name} tables have schema version {recorded}, newer than "
            f"this ctxstore's {part.version}: upgrade ctxstore"
        )
    for version in range(recorded, part.version):
        steps = part.migrations.get(version)
        if steps is None:
            raise SchemaVersionError(
                f"the PostgreSQL {part.name} tables have schema version {recorded}; this "
                f"ctxstore cannot migrate version {version} (no migration is known)"
            )
        for statement in steps:
            conn.execute(statement)
    conn.execute(
        "UPDATE ctxstore_meta SET schema_version = %s WHERE part = %s",
        (part.version, part.name),
    )
    return True


def create_missing(db: Database, parts: Sequence[PgPart] | None = None) -> list[str]:
    """Create, at this version, every part whose tables do not exist yet (one transaction,
    under the schema advisory lock); parts that exist are left alone, whatever their version
    (opening never migrates). Returns the names of the parts created."""
    created: list[str] = []
    with db.transaction() as conn:
        for part in PARTS if parts is None else parts:
            if schema_version(conn, part.name) is None and ensure_schema(
                conn, part.name, part.ddl, part.version
            ):
                created.append(part.name)
    return created


def upgrade(db: Database, part: PgPart) -> bool:
    """``upgrade_part`` in a transaction of its own (committed when it returns)."""
    with db.transaction() as conn:
        return upgrade_part(conn, part)


def planned(db: Database, parts: Sequence[PgPart] | None = None) -> list[tuple[PgPart, int | None]]:
    """``pending`` over a connection of ``db`` (default: every registered part)."""
    with db.connection() as conn:
        return pending(conn, PARTS if parts is None else parts)


__all__ = [
    "PARTS",
    "PgPart",
    "create_missing",
    "describe",
    "pending",
    "planned",
    "register",
    "upgrade",
    "upgrade_part",
]
