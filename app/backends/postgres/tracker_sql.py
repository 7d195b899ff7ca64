"""The SQL of ``PgTracker`` (tables, the claim query, the clock expressions); bound params only.

Two tables, created once by ``ensure_schema`` (part ``tracker``):

- ``ctxstore_workflows``: one row per workflow, the same columns as the embedded
  ``tracker.sqlite``: ``priority`` (higher is claimed first), ``max_retries``, ``attempts``
  (chunk attempts in all), ``chunk_failures`` (failed attempts of the current chunk) and
  ``not_before`` (a retry waits until then, on the DATABASE clock).
  Times are epoch seconds (``double precision``) as the managers use them; ``heartbeat_at``
  is always taken from the DATABASE clock (``clock_timestamp()``), so liveness is judged on one
  clock for every host.
- ``ctxstore_workflow_journal``: the write journal, one row per record-store call of a chunk.

Column names interpolated into SQL come from ``COLUMNS`` only (never from input).
"""

from __future__ import annotations

from app.core.workflow_types import WorkflowStatus

PART = "tracker"
VERSION = 2
"""1: the first; 2: retries (``max_retries``, ``attempts``, ``chunk_failures``,
``not_before``; ``MIGRATIONS[1]``)."""

WORKFLOWS = "ctxstore_workflows"
JOURNAL = "ctxstore_workflow_journal"

DDL = (
    "CREATE TABLE IF NOT EXISTS ctxstore_workflows ("
    ' workflow_id text COLLATE "C" PRIMARY KEY,'
    ' workflow_type text COLLATE "C" NOT NULL,'
    ' context text COLLATE "C" NOT NULL,'
    " status text NOT NULL,"
    " priority integer NOT NULL DEFAULT 0,"
    " created_at double precision NOT NULL,"
    " started_at double precision,"
    " finished_at double precision,"
    " heartbeat_at double precision,"
    " items_total bigint NOT NULL,"
    " items_processed bigint NOT NULL DEFAULT 0,"
    " chunk_size integer NOT NULL,"
    " chunks_total integer NOT NULL,"
    " chunks_done integer NOT NULL DEFAULT 0,"
    " error_count integer NOT NULL DEFAULT 0,"
    " errors text NOT NULL DEFAULT '[]',"
    " params text NOT NULL,"
    " cancel_requested integer NOT NULL DEFAULT 0,"
    " owner text,"
    " worker text,"
    " planned integer NOT NULL DEFAULT 1,"
    " items_file text,"
    " items_sha256 text,"
    " chunk_index bytea NOT NULL,"
    " max_retries integer NOT NULL DEFAULT 0,"
    " attempts bigint NOT NULL DEFAULT 0,"
    " chunk_failures integer NOT NULL DEFAULT 0,"
    " not_before double precision)",
    "CREATE INDEX IF NOT EXISTS ctxstore_workflows_queue ON ctxstore_workflows"
    " (priority DESC, created_at, workflow_id) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS ctxstore_workflows_by_status ON ctxstore_workflows"
    " (status, created_at)",
    "CREATE TABLE IF NOT EXISTS ctxstore_workflow_journal ("
    ' workflow_id text COLLATE "C" NOT NULL,'
    " chunk_no integer NOT NULL,"
    " call_no integer NOT NULL,"
    " kind text NOT NULL,"
    " collection text NOT NULL,"
    " batch_id text NOT NULL,"
    " ids bytea NOT NULL,"
    " existed bytea NOT NULL,"
    " committed integer NOT NULL DEFAULT 0,"
    " PRIMARY KEY (workflow_id, chunk_no, call_no))",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE ctxstore_workflows"
        " ADD COLUMN IF NOT EXISTS max_retries integer NOT NULL DEFAULT 0,"
        " ADD COLUMN IF NOT EXISTS attempts bigint NOT NULL DEFAULT 0,"
        " ADD COLUMN IF NOT EXISTS chunk_failures integer NOT NULL DEFAULT 0,"
        " ADD COLUMN IF NOT EXISTS not_before double precision",
        "UPDATE ctxstore_workflows SET attempts = chunks_done",
    ),
}
"""``ctxstore upgrade``: the statements turning version ``v`` into ``v + 1`` (every row kept;
an old row's ``attempts`` = the chunks it committed)."""

COLUMNS = frozenset(
    {
        "workflow_id",
        "workflow_type",
        "context",
        "status",
        "priority",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "items_total",
        "items_processed",
        "chunk_size",
        "chunks_total",
        "chunks_done",
        "error_count",
        "errors",
        "params",
        "cancel_requested",
        "owner",
        "worker",
        "planned",
        "items_file",
        "items_sha256",
        "max_retries",
    }
)
"""Columns a caller may set (``insert``, ``move``); ``chunk_index`` is set by the tracker."""

SUMMARY = (
    "workflow_id, workflow_type, context, status, created_at, started_at, finished_at, "
    "heartbeat_at, items_total, items_processed, chunk_size, chunks_total, chunks_done, "
    "error_count, errors, params, cancel_requested, owner, worker, planned, items_file, "
    "priority, max_retries, attempts, chunk_failures, not_before"
)
"""The columns a ``BatchWorkflow`` is built from (as the embedded ``SUMMARY_COLUMNS``)."""

PENDING = WorkflowStatus.PENDING.value
PROCESSING = WorkflowStatus.PROCESSING.value

BEAT = "(extract(epoch FROM clock_timestamp()) - %(age)s)"
"""The database clock now, minus the age of the caller's reading (0 for a fresh one)."""

SELECT_ROW = f"SELECT {SUMMARY} FROM ctxstore_workflows WHERE workflow_id = %(wid)s"

LOCK_ROW = (
    "SELECT status, owner, errors FROM ctxstore_workflows WHERE workflow_id = %(wid)s FOR UPDATE"
)

# The queue pattern (Procrastinate, PgQueuer): one ready row, locked by this transaction and
# skipped by every other claimer, moved to processing in the same statement.
CLAIM_NEXT = (
    "WITH next AS MATERIALIZED ("
    " SELECT workflow_id FROM ctxstore_workflows"
    " WHERE status = %(pending)s AND workflow_type = ANY(%(types)s)"
    " AND (not_before IS NULL OR not_before <= extract(epoch FROM clock_timestamp()))"
    " ORDER BY priority DESC, created_at, workflow_id"
    " LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " UPDATE ctxstore_workflows AS w SET status = %(processing)s, owner = %(owner)s,"
    f" worker = %(worker)s, heartbeat_at = {BEAT},"
    " started_at = COALESCE(w.started_at, %(wall)s), not_before = NULL"
    " FROM next WHERE w.workflow_id = next.workflow_id"
    " RETURNING " + ", ".join(f"w.{c.strip()}" for c in SUMMARY.split(","))
)

CLAIM_ONE = (
    "UPDATE ctxstore_workflows SET status = %(processing)s, owner = %(owner)s,"
    f" worker = %(worker)s, heartbeat_at = {BEAT},"
    " started_at = COALESCE(started_at, %(wall)s), not_before = NULL"
    f" WHERE workflow_id = %(wid)s AND status = %(pending)s RETURNING {SUMMARY}"
)

STALE = (
    "SELECT workflow_id, cancel_requested FROM ctxstore_workflows"
    " WHERE status = %(processing)s"
    " AND COALESCE(heartbeat_at, started_at, created_at)"
    " < extract(epoch FROM clock_timestamp()) - %(stale_after)s"
    " ORDER BY created_at, workflow_id FOR UPDATE SKIP LOCKED"
)

HEARTBEAT = (
    f"UPDATE ctxstore_workflows SET heartbeat_at = {BEAT}"
    " WHERE workflow_id = %(wid)s AND owner = %(owner)s AND status = %(processing)s"
)

PLAN = (
    "UPDATE ctxstore_workflows SET planned = 1, items_file = %(name)s,"
    " items_sha256 = %(sha)s, items_total = %(count)s, chunks_total = %(chunks)s,"
    f" chunk_index = %(index)s, heartbeat_at = {BEAT}"
    " WHERE workflow_id = %(wid)s AND owner = %(owner)s AND status = %(processing)s"
    " AND planned = 0"
)

CHUNK_DONE = (
    "UPDATE ctxstore_workflows SET chunks_done = %(next)s,"
    f" items_processed = items_processed + %(items)s, heartbeat_at = {BEAT},"
    " attempts = attempts + 1, chunk_failures = 0"
    " WHERE workflow_id = %(wid)s AND owner = %(owner)s AND status = %(processing)s"
    f" AND chunks_done = %(chunk)s RETURNING {SUMMARY}"
)

ATTEMPT_FAILED = (
    "UPDATE ctxstore_workflows SET status = %(new)s, errors = %(errors)s,"
    " error_count = error_count + 1, attempts = attempts + 1,"
    " chunk_failures = chunk_failures + 1,"
    " owner = CASE WHEN %(retry)s THEN NULL ELSE owner END,"
    " not_before = CASE WHEN %(retry)s"
    " THEN extract(epoch FROM clock_timestamp()) + %(retry_in)s ELSE NULL END,"
    " finished_at = CASE WHEN %(retry)s THEN finished_at ELSE %(now)s END"
    f" WHERE workflow_id = %(wid)s RETURNING {SUMMARY}"
)
"""A failed chunk attempt; a retry waits ``retry_in`` seconds on the database clock."""

PENDING_TYPES = (
    "SELECT workflow_type, count(*) AS n FROM ctxstore_workflows"
    " WHERE status = %(pending)s GROUP BY workflow_type"
)

JOURNAL_COMMITTED = (
    "UPDATE ctxstore_workflow_journal SET committed = 1"
    " WHERE workflow_id = %(wid)s AND chunk_no = %(chunk)s"
)

JOURNAL_ADD = (
    "INSERT INTO ctxstore_workflow_journal"
    " (workflow_id, chunk_no, call_no, kind, collection, batch_id, ids, existed)"
    " VALUES (%(wid)s, %(chunk)s, %(call)s, %(kind)s, %(collection)s, %(batch)s, %(ids)s,"
    " %(existed)s) ON CONFLICT DO NOTHING"
)

JOURNAL_EARLIER = (
    "UPDATE ctxstore_workflow_journal SET committed = 1"
    " WHERE workflow_id = %(wid)s AND chunk_no = %(chunk)s AND call_no < %(call)s"
)

JOURNAL_READ = (
    "SELECT chunk_no, call_no, kind, collection, batch_id, ids, existed, committed"
    " FROM ctxstore_workflow_journal WHERE workflow_id = %(wid)s ORDER BY chunk_no, call_no"
)

BATCH_IDS = (
    "SELECT batch_id FROM ctxstore_workflow_journal WHERE workflow_id = %(wid)s"
    " AND committed = 1 ORDER BY chunk_no, call_no"
)

PURGE = (
    "DELETE FROM ctxstore_workflows WHERE status = ANY(%(statuses)s)"
    " AND finished_at IS NOT NULL AND finished_at < %(before)s"
    " RETURNING workflow_id, items_file"
)

PURGE_JOURNAL = "DELETE FROM ctxstore_workflow_journal WHERE workflow_id = ANY(%(ids)s)"
