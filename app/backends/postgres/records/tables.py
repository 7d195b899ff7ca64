"""The tables of the records part (PERSISTENCE_LAYER_STRATEGY.md section 11, "Records").

- ``ctxstore_collections``: one row per collection of a context (its "log" exists once the
  row does): the schema path and the declared indexed fields (the embedded ``context.json``),
  and the log's generation (new at creation and at every compaction).
- ``ctxstore_batches``: one row per committed batch, ``seq`` its commit order (a ``bigserial``
  drawn under the context's write lock, so commit order within a context), ``batch_id`` unique
  per context, ``n`` / ``sha256`` its receipt (as first committed: a compaction keeps them),
  ``entries`` / ``digest`` / ``size`` what its body holds now.
- ``ctxstore_batch_bodies``: the batch's body split in parts of at most ``BODY_PART`` bytes:
  exactly the entry lines and the commit line the embedded log holds for it (built by
  ``app.formats.batchlog``), so a huge batch is never one value in memory on either side.
- ``ctxstore_records``: the current version of every record (the query index): ``doc`` the
  ``jsonb`` for filters and expression indexes, ``raw`` the record's canonical bytes, which is
  what reads return (``jsonb`` would print ``1e+20`` as an integer and ``-0.0`` as ``0``);
  ``(seq, pos)`` its place in commit order (``pos``: its entry's number in the batch).

Expression indexes are one per indexed field list over ``(context, collection, fields...)``,
named from a hash of the fields (never from user text), created under an advisory lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from app.backends.postgres.filters import field_expr_pg
from app.core.filters import field_path
from app.core.schemas import BUILTIN_INDEXES

PART = "records"
VERSION = 1
BODY_PART = 4 << 20

TABLES = (
    "CREATE TABLE IF NOT EXISTS ctxstore_collections ("
    " context text NOT NULL, collection text NOT NULL,"
    " schema text, indexes jsonb NOT NULL DEFAULT '[]'::jsonb, generation text NOT NULL,"
    " PRIMARY KEY (context, collection))",
    "CREATE TABLE IF NOT EXISTS ctxstore_batches ("
    " seq bigserial PRIMARY KEY,"
    " context text NOT NULL, collection text NOT NULL,"
    " batch_id text NOT NULL, kind text NOT NULL,"
    " n bigint NOT NULL, sha256 text NOT NULL, committed_at text NOT NULL, req text,"
    " entries bigint NOT NULL, digest text NOT NULL, size bigint NOT NULL,"
    " UNIQUE (context, batch_id))",
    "CREATE INDEX IF NOT EXISTS ctxstore_batches_order"
    " ON ctxstore_batches (context, collection, seq)",
    "CREATE TABLE IF NOT EXISTS ctxstore_batch_bodies ("
    " seq bigint NOT NULL, part integer NOT NULL, data bytea NOT NULL,"
    " PRIMARY KEY (seq, part))",
    "CREATE TABLE IF NOT EXISTS ctxstore_records ("
    " context text NOT NULL, collection text NOT NULL, id text NOT NULL,"
    " seq bigint NOT NULL, pos integer NOT NULL, doc jsonb NOT NULL, raw bytea NOT NULL,"
    " PRIMARY KEY (context, collection, id))",
    "CREATE INDEX IF NOT EXISTS ctxstore_records_order"
    " ON ctxstore_records (context, collection, seq, pos)",
)

STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS ctxstore_stage ("
    " id text NOT NULL, seq bigint NOT NULL, pos integer NOT NULL, raw bytea NOT NULL)"
    " ON COMMIT DELETE ROWS"
)
"""Rows of a batch on their way into ``ctxstore_records`` (COPY cannot upsert)."""


def lock_key(what: str) -> int:
    """A signed 64-bit advisory-lock key for ``what``: the derivation of
    ``app.backends.postgres.catalog.lock_key`` (repeated here: the catalogue imports this
    module to forget a dropped context's records)."""
    digest = hashlib.sha256(f"ctxstore:{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


DDL_LOCK = lock_key("records:ddl")


def write_key(context: str) -> int:
    """The ``pg_advisory_xact_lock`` key every write transaction of ``context`` takes (a key of
    its own: the context's session writer lock is held on another connection)."""
    return lock_key(f"records:{context}")


def index_name(spec: Sequence[str]) -> str:
    """The expression index of a field list (a hash: never user text in SQL)."""
    return "ctxstore_ri_" + hashlib.sha1("\x00".join(spec).encode()).hexdigest()[:16]


def index_sql(spec: Sequence[str]) -> str:
    """``CREATE INDEX`` for the field list ``spec`` (validated field paths only)."""
    exprs = [field_expr_pg(field_path(f, "indexes"), "doc") for f in spec]
    return (
        f"CREATE INDEX IF NOT EXISTS {index_name(spec)} ON ctxstore_records"
        f" (context, collection, {', '.join(exprs)})"
    )


BUILTIN_FIELD_LISTS = sorted({spec for specs in BUILTIN_INDEXES.values() for spec in specs})
BUILTIN_INDEX_NAMES = frozenset(index_name(spec) for spec in BUILTIN_FIELD_LISTS)
DDL = (*TABLES, *(index_sql(spec) for spec in BUILTIN_FIELD_LISTS))
"""The tables and the expression indexes of the built-in collections' indexed fields (made
with the tables, so an append never creates an index inside a caller's unit of work)."""

FORGET = (
    "DELETE FROM ctxstore_batch_bodies WHERE seq IN"
    " (SELECT seq FROM ctxstore_batches WHERE context = %s)",
    "DELETE FROM ctxstore_batches WHERE context = %s",
    "DELETE FROM ctxstore_records WHERE context = %s",
    "DELETE FROM ctxstore_collections WHERE context = %s",
)


def forget_context(conn: Any, context: str) -> None:
    """Delete every record table row of ``context`` in the caller's transaction (a dropped
    context, or one replaced whole). A no-op when the tables do not exist yet."""
    found = conn.execute("SELECT to_regclass('ctxstore_batches') IS NOT NULL").fetchone()
    if not found or not found[0]:
        return
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (write_key(context),))
    for statement in FORGET:
        conn.execute(statement, (context,))


__all__ = [
    "BODY_PART",
    "BUILTIN_INDEX_NAMES",
    "DDL",
    "DDL_LOCK",
    "PART",
    "STAGE",
    "VERSION",
    "forget_context",
    "index_name",
    "index_sql",
    "write_key",
]
