"""The schema of ``tracker.sqlite`` and its explicit upgrade (``ctxstore upgrade``).

Versions: 1 the first; 2 adds the steady-clock heartbeat columns (``beat_boot``,
``beat_steady``); 3 adds priorities and retries (``priority``, ``max_retries``, ``attempts``,
``chunk_failures``, ``not_before``) and the queue index (status, priority, age). Opening a
tracker of an older version raises ``SchemaVersionError`` naming ``ctxstore upgrade``
(``SqliteFile.check_version``); ``upgrade_tracker`` migrates it in one write transaction,
keeping every workflow row (an old row gets priority 0, no retries, ``attempts`` = the chunks
it committed).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.core.errors import SchemaVersionError
from app.formats.sqlerrors import classify

TRACKER_VERSION = 3

TABLES = """
CREATE TABLE IF NOT EXISTS workflows(
    workflow_id TEXT PRIMARY KEY,
    workflow_type TEXT NOT NULL,
    context TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    items_total INTEGER NOT NULL,
    items_processed INTEGER NOT NULL DEFAULT 0,
    chunk_size INTEGER NOT NULL,
    chunks_total INTEGER NOT NULL,
    chunks_done INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    errors TEXT NOT NULL DEFAULT '[]',
    params TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    worker TEXT,
    planned INTEGER NOT NULL DEFAULT 1,
    items_file TEXT,
    items_sha256 TEXT,
    chunk_index BLOB NOT NULL,
    beat_boot TEXT,
    beat_steady REAL,
    priority INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    chunk_failures INTEGER NOT NULL DEFAULT 0,
    not_before REAL);
CREATE TABLE IF NOT EXISTS journal(
    workflow_id TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    call_no INTEGER NOT NULL,
    kind TEXT NOT NULL,
    collection TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    ids BLOB NOT NULL,
    existed BLOB NOT NULL,
    committed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(workflow_id, chunk_no, call_no))
"""

INDEXES = """
CREATE INDEX IF NOT EXISTS workflows_by_status ON workflows(status, created_at);
CREATE INDEX IF NOT EXISTS workflows_queue ON workflows(status, priority DESC, created_at)
"""

SCHEMA = TABLES + ";" + INDEXES

# Columns each version added (name, declaration); a table of an older version lacks them.
_ADDED: tuple[tuple[str, str], ...] = (
    ("beat_boot", "TEXT"),  # 2
    ("beat_steady", "REAL"),  # 2
    ("priority", "INTEGER NOT NULL DEFAULT 0"),  # 3
    ("max_retries", "INTEGER NOT NULL DEFAULT 0"),  # 3
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),  # 3
    ("chunk_failures", "INTEGER NOT NULL DEFAULT 0"),  # 3
    ("not_before", "REAL"),  # 3
)


def migrate(tx: sqlite3.Connection) -> None:
    """Any older version -> this one, inside the caller's write transaction: add the missing
    columns (new heartbeat columns NULL: judged by the old wall-clock rule until the next
    heartbeat; an old row's ``attempts`` = the chunks it committed), then the indexes."""
    have = {r[1] for r in tx.execute("PRAGMA table_info(workflows)")}
    for column, declaration in _ADDED:
        if column not in have:
            tx.execute(f"ALTER TABLE workflows ADD COLUMN {column} {declaration}")  # ours
    if "attempts" not in have:
        tx.execute("UPDATE workflows SET attempts = chunks_done")
    for statement in INDEXES.split(";"):
        if statement.strip():
            tx.execute(statement)


def upgrade_tracker(path: Path) -> bool:
    """Migrate the tracker database at ``path`` from an older version to this one in one
    write transaction (``ctxstore upgrade``; using an older tracker raises
    ``SchemaVersionError`` until then). Every workflow row is kept. Returns whether it
    migrated (False: missing, empty, or already current); ``SchemaVersionError`` for an
    unknown version."""
    if not path.is_file():
        return False
    try:
        conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise classify(exc, path, "tracker database", "") from exc
    try:
        conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version in (0, TRACKER_VERSION):
            conn.execute("ROLLBACK")
            return False
        if not 0 < version < TRACKER_VERSION:
            conn.execute("ROLLBACK")
            raise SchemaVersionError(
                f"{path}: tracker database version {version} is unknown (this is {TRACKER_VERSION})"
            )
        for statement in TABLES.split(";"):
            if statement.strip():
                conn.execute(statement)
        migrate(conn)
        conn.execute(f"PRAGMA user_version={TRACKER_VERSION}")
        conn.execute("COMMIT")
        return True
    except sqlite3.Error as exc:
        raise classify(exc, path, "tracker database", "") from exc
    finally:
        conn.close()


__all__ = ["SCHEMA", "TRACKER_VERSION", "migrate", "upgrade_tracker"]
