"""The batch workflow tracker's database (staged items files: ``app.formats.staged_items``).

``tracker.sqlite`` (WAL, ``synchronous=FULL``, ``busy_timeout``; every state change in a
``BEGIN IMMEDIATE`` transaction) holds one row per workflow and a write journal: one row per
record-store call a chunk makes (collection, derived batch id, the ids written and which of them
already existed before), written *before* the call, so rollback knows what a workflow may have
touched even after a crash. ``items/<workflow>.<token>.jsonl`` holds the staged items, one JSON
object per line, fsync'd and renamed into place before the row that names it is committed; the
row keeps each chunk's byte range and CRC-32, checked on every read.

This module knows SQLite and files, nothing of contexts or record stores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.core.clock import Stamp
from app.core.errors import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    SchemaVersionError,
    io_error,
)
from app.core.layout import ITEMS_DIR, TRACKER_FILE
from app.core.workflow_types import WorkflowStatus, check_transition
from app.formats.sqlitefile import SqliteFile
from app.formats.staged_items import ChunkIndex, ItemsDir, StagedItems
from app.formats.tracker_schema import SCHEMA, TRACKER_VERSION, migrate

DB_NAME = TRACKER_FILE  # kept for callers of the old names

# Columns a BatchWorkflow is built from (the chunk index stays in the database).
SUMMARY_COLUMNS = (
    "workflow_id, workflow_type, context, status, created_at, started_at, finished_at, "
    "heartbeat_at, items_total, items_processed, chunk_size, chunks_total, chunks_done, "
    "error_count, errors, params, cancel_requested, owner, worker, planned, items_file, "
    "priority, max_retries, attempts, chunk_failures, not_before"
)
MAX_ERRORS_KEPT = 100

Row = dict[str, Any]


def _state_row(conn: sqlite3.Connection, workflow_id: str) -> sqlite3.Row:
    """The status, owner and errors of a workflow (in the caller's write transaction);
    ``NotFoundError`` when there is no such workflow."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT status, owner, errors FROM workflows WHERE workflow_id = ?", (workflow_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"workflow {workflow_id!r} not found")
    return row


@dataclass(frozen=True)
class JournalEntry:
    chunk_no: int
    call_no: int
    kind: str
    collection: str
    batch_id: str
    ids: list[str]
    existed: list[str]
    committed: bool


def merge_errors(old_json: str, new: Sequence[str]) -> str:
    """The errors list after adding ``new`` (the oldest are kept, capped)."""
    errors: list[str] = orjson.loads(old_json)
    room = MAX_ERRORS_KEPT - len(errors)
    if room > 0:
        errors.extend(new[:room])
    return orjson.dumps(errors).decode()


# A processing workflow is stale when its last heartbeat was taken in another boot, or more
# than stale_after ago on the steady clock (parameters: boot, steady limit, wall limit for
# rows written by version 1, which have no steady reading).
_STALE = (
    "(beat_boot IS NULL AND COALESCE(heartbeat_at, started_at, created_at) < ?3) OR "
    "(beat_boot IS NOT NULL AND (beat_boot != ?1 OR beat_steady < ?2))"
)


class TrackerDB(SqliteFile):
    """The tracker database of one store; connections are per thread."""

    VERSION = TRACKER_VERSION
    SYNCHRONOUS = "FULL"
    WHAT = "tracker database"

    def __init__(self, root: Path) -> None:
        super().__init__(root / DB_NAME)
        self.root = root
        self.items_dir = root / ITEMS_DIR
        self.items = ItemsDir(self.items_dir)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.items_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise io_error("creating", self.items_dir, exc) from exc
        return super()._connect()

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row

    def _first_use(self, conn: sqlite3.Connection) -> None:
        self.create_schema(conn, SCHEMA, migrate)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.errors():
            return self.conn().execute(sql, params).fetchall()

    # -- staged items (files: app.formats.staged_items) ----------------------------------

    def stage_items(self, workflow_id: str, lines: Iterable[bytes], chunk_size: int) -> StagedItems:
        self.conn()  # creates the directory
        return self.items.stage(workflow_id, lines, chunk_size)

    def read_chunk(self, items_file: str, index: ChunkIndex, chunk_no: int) -> list[bytes]:
        return self.items.read_chunk(items_file, index, chunk_no)

    def discard_items(self, items_file: str | None) -> None:
        self.items.discard(items_file)

    # -- rows ---------------------------------------------------------------------------

    def insert(self, row: Row, index: ChunkIndex) -> None:
        """Insert a new workflow row; ``ConflictError`` if the id is taken."""
        cols = [*row.keys(), "chunk_index"]
        values = [*row.values(), orjson.dumps(index)]
        sql = (
            f"INSERT INTO workflows({', '.join(cols)}) "  # column names are ours, not input
            f"VALUES ({', '.join('?' for _ in cols)})"
        )
        with self.write() as conn:
            taken = conn.execute(
                "SELECT 1 FROM workflows WHERE workflow_id = ?", (row["workflow_id"],)
            ).fetchone()
            if taken is not None:
                raise ConflictError(f"workflow_id: {row['workflow_id']!r} already exists")
            conn.execute(sql, values)

    def exists(self, workflow_id: str) -> bool:
        rows = self._query("SELECT 1 FROM workflows WHERE workflow_id = ?", (workflow_id,))
        return bool(rows)

    def get(self, workflow_id: str) -> Row:
        rows = self._query(
            f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE workflow_id = ?", (workflow_id,)
        )
        if not rows:
            raise NotFoundError(f"workflow {workflow_id!r} not found")
        return dict(rows[0])

    def chunk_index(self, workflow_id: str) -> ChunkIndex:
        rows = self._query(
            "SELECT chunk_index FROM workflows WHERE workflow_id = ?", (workflow_id,)
        )
        if not rows:
            raise NotFoundError(f"workflow {workflow_id!r} not found")
        return [(int(a), int(b), int(c)) for a, b, c in orjson.loads(rows[0][0])]

    def list_rows(
        self,
        *,
        status: str | None,
        workflow_type: str | None,
        context: str | None,
        limit: int,
        offset: int,
    ) -> list[Row]:
        clauses, params = [], []
        for column, value in (
            ("status", status),
            ("workflow_type", workflow_type),
            ("context", context),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = " AND ".join(clauses) or "1"
        rows = self._query(
            f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE {where} "
            "ORDER BY created_at DESC, workflow_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [dict(r) for r in rows]

    def batch_ids(self, workflow_id: str) -> list[str]:
        """Batch ids of the record-store calls the workflow committed, in order."""
        rows = self._query(
            "SELECT batch_id FROM journal WHERE workflow_id = ? AND committed = 1 "
            "ORDER BY chunk_no, call_no",
            (workflow_id,),
        )
        return [r[0] for r in rows]

    def move(
        self,
        workflow_id: str,
        new: WorkflowStatus | None,
        *,
        if_owner: str | None = None,
        expect: Iterable[WorkflowStatus] | None = None,
        errors: Sequence[str] = (),
        extra_errors: int = 0,
        **fields: Any,
    ) -> Row | None:
        """Change a workflow in one transaction, checking the state machine.

        With ``if_owner``, nothing happens (``None``) unless the row is still ``processing``
        and owned by ``if_owner``. With ``expect``, a status outside it raises ``ConflictError``.
        ``errors`` are appended to the row's errors (capped) and counted in ``error_count``
        with ``extra_errors`` more that were not listed.
        """
        with self.write() as conn:
            row = _state_row(conn, workflow_id)
            old = WorkflowStatus(row["status"])
            if if_owner is not None and (
                row["owner"] != if_owner or old != WorkflowStatus.PROCESSING
            ):
                return None
            if expect is not None and old not in set(expect):
                raise ConflictError(f"workflow {workflow_id!r} is {old.value}")
            if new is not None:
                check_transition(old, new)
                fields["status"] = new.value
            if errors:
                fields["errors"] = merge_errors(row["errors"], errors)
            assignments = [f"{column} = ?" for column in fields]  # our column names only
            values = list(fields.values())
            if errors or extra_errors:
                assignments.append("error_count = error_count + ?")
                values.append(len(errors) + extra_errors)
            if assignments:
                conn.execute(
                    f"UPDATE workflows SET {', '.join(assignments)} WHERE workflow_id = ?",
                    [*values, workflow_id],
                )
            out = conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE workflow_id = ?", (workflow_id,)
            ).fetchone()
        return dict(out)

    def claim(
        self,
        workflow_id: str | None,
        owner: str,
        worker: str,
        now: Stamp,
        types: Sequence[str] = (),
    ) -> Row | None:
        """Atomically move one pending workflow (the given one, or the next of ``types``:
        highest priority, then oldest, among those whose retry time has come) to processing.

        Returns the claimed row, or ``None`` when there is nothing pending (``workflow_id``
        None). A given workflow that is not pending raises ``ConflictError``.
        """
        with self.write() as conn:
            if workflow_id is None:
                marks = ", ".join("?" for _ in types)
                found = conn.execute(
                    "SELECT workflow_id, status FROM workflows WHERE status = ? "
                    f"AND workflow_type IN ({marks}) AND (not_before IS NULL OR not_before <= ?) "
                    "ORDER BY priority DESC, created_at, workflow_id LIMIT 1",
                    (WorkflowStatus.PENDING.value, *types, now.wall),
                ).fetchone()
                if found is None:
                    return None
            else:
                found = conn.execute(
                    "SELECT workflow_id, status FROM workflows WHERE workflow_id = ?",
                    (workflow_id,),
                ).fetchone()
                if found is None:
                    raise NotFoundError(f"workflow {workflow_id!r} not found")
                check_transition(found["status"], WorkflowStatus.PROCESSING)
            wid = found["workflow_id"]
            conn.execute(
                "UPDATE workflows SET status = ?, owner = ?, worker = ?, heartbeat_at = ?, "
                "beat_boot = ?, beat_steady = ?, started_at = COALESCE(started_at, ?), "
                "not_before = NULL WHERE workflow_id = ? AND status = ?",
                (
                    WorkflowStatus.PROCESSING.value,
                    owner,
                    worker,
                    now.wall,
                    now.boot,
                    now.steady,
                    now.wall,
                    wid,
                    WorkflowStatus.PENDING.value,
                ),
            )
            out = conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE workflow_id = ?", (wid,)
            ).fetchone()
        return dict(out)

    def cancel(self, workflow_id: str, now: float) -> Row:
        """Cancel a pending workflow now, or ask a processing one to stop at its next chunk."""
        with self.write() as conn:
            row = conn.execute(
                "SELECT status FROM workflows WHERE workflow_id = ?", (workflow_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"workflow {workflow_id!r} not found")
            old = WorkflowStatus(row["status"])
            check_transition(old, WorkflowStatus.CANCELLED)
            if old == WorkflowStatus.PROCESSING:
                conn.execute(
                    "UPDATE workflows SET cancel_requested = 1 WHERE workflow_id = ?",
                    (workflow_id,),
                )
            else:
                conn.execute(
                    "UPDATE workflows SET status = ?, cancel_requested = 1, finished_at = ? "
                    "WHERE workflow_id = ?",
                    (WorkflowStatus.CANCELLED.value, now, workflow_id),
                )
            out = conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE workflow_id = ?", (workflow_id,)
            ).fetchone()
        return dict(out)

    def recover_stale(self, stale_after: float, now: Stamp) -> list[str]:
        """Processing workflows whose last heartbeat is more than ``stale_after`` seconds old
        on the steady clock (or from another boot) go back to pending (or to cancelled, when
        a cancel was asked for); returns their ids."""
        with self.write() as conn:
            rows = conn.execute(
                "SELECT workflow_id, cancel_requested FROM workflows WHERE status = ?4 AND "
                f"({_STALE}) ORDER BY created_at",
                (
                    now.boot,
                    now.steady - stale_after,
                    now.wall - stale_after,
                    WorkflowStatus.PROCESSING.value,
                ),
            ).fetchall()
            for wid, cancel in rows:
                new = WorkflowStatus.CANCELLED if cancel else WorkflowStatus.PENDING
                check_transition(WorkflowStatus.PROCESSING, new)
                conn.execute(
                    "UPDATE workflows SET status = ?, owner = NULL, "
                    "finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE workflow_id = ?",
                    (new.value, bool(cancel), now.wall, wid),
                )
        return [r[0] for r in rows]

    def heartbeat(self, workflow_id: str, owner: str, now: Stamp) -> bool:
        """Refresh the heartbeat; False when the workflow is no longer ours."""
        with self.write() as conn:
            cur = conn.execute(
                "UPDATE workflows SET heartbeat_at = ?, beat_boot = ?, beat_steady = ? "
                "WHERE workflow_id = ? AND owner = ? AND status = ?",
                (
                    now.wall,
                    now.boot,
                    now.steady,
                    workflow_id,
                    owner,
                    WorkflowStatus.PROCESSING.value,
                ),
            )
            return cur.rowcount == 1

    def plan(
        self, workflow_id: str, owner: str, staged: StagedItems, chunk_size: int, now: Stamp
    ) -> bool:
        """Attach items resolved at the first processing (e.g. a delete's targets)."""
        with self.write() as conn:
            cur = conn.execute(
                "UPDATE workflows SET planned = 1, items_file = ?, items_sha256 = ?, "
                "items_total = ?, chunks_total = ?, chunk_index = ?, heartbeat_at = ?, "
                "beat_boot = ?, beat_steady = ? "
                "WHERE workflow_id = ? AND owner = ? AND status = ? AND planned = 0",
                (
                    staged.name,
                    staged.sha256,
                    staged.count,
                    len(staged.index),
                    orjson.dumps(staged.index),
                    now.wall,
                    now.boot,
                    now.steady,
                    workflow_id,
                    owner,
                    WorkflowStatus.PROCESSING.value,
                ),
            )
            return cur.rowcount == 1

    def chunk_done(
        self, workflow_id: str, owner: str, chunk_no: int, items: int, now: Stamp
    ) -> Row | None:
        """Record a committed chunk (journal rows committed, progress, heartbeat).

        Returns the row (to see ``cancel_requested``), or ``None`` if no longer ours.
        """
        with self.write() as conn:
            cur = conn.execute(
                "UPDATE workflows SET chunks_done = ?, items_processed = items_processed + ?, "
                "attempts = attempts + 1, chunk_failures = 0, "
                "heartbeat_at = ?, beat_boot = ?, beat_steady = ? WHERE workflow_id = ? "
                "AND owner = ? AND status = ? AND chunks_done = ?",
                (
                    chunk_no + 1,
                    items,
                    now.wall,
                    now.boot,
                    now.steady,
                    workflow_id,
                    owner,
                    WorkflowStatus.PROCESSING.value,
                    chunk_no,
                ),
            )
            if cur.rowcount != 1:
                return None
            conn.execute(
                "UPDATE journal SET committed = 1 WHERE workflow_id = ? AND chunk_no = ?",
                (workflow_id, chunk_no),
            )
            out = conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE workflow_id = ?", (workflow_id,)
            ).fetchone()
        return dict(out)

    def attempt_failed(
        self, workflow_id: str, owner: str, error: str, retry_in: float | None, now: float
    ) -> Row | None:
        """Record a failed chunk attempt (``attempts``, ``errors``): with ``retry_in`` the
        workflow goes back to ``pending``, unowned, not claimed before ``now + retry_in``;
        without, it is ``failed``. ``None`` (nothing changed) if no longer ours."""
        with self.write() as conn:
            row = _state_row(conn, workflow_id)
            if row["owner"] != owner or row["status"] != WorkflowStatus.PROCESSING.value:
                return None
            new = WorkflowStatus.FAILED if retry_in is None else WorkflowStatus.PENDING
            check_transition(WorkflowStatus.PROCESSING, new)
            conn.execute(
                "UPDATE workflows SET status = ?, errors = ?, error_count = error_count + 1, "
                "attempts = attempts + 1, chunk_failures = chunk_failures + 1, "
                "owner = CASE WHEN ? THEN NULL ELSE owner END, not_before = ?, "
                "finished_at = CASE WHEN ? THEN finished_at ELSE ? END WHERE workflow_id = ?",
                (
                    new.value,
                    merge_errors(row["errors"], [error]),
                    retry_in is not None,
                    None if retry_in is None else now + retry_in,
                    retry_in is not None,
                    now,
                    workflow_id,
                ),
            )
            out = conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM workflows WHERE workflow_id = ?", (workflow_id,)
            ).fetchone()
        return dict(out)

    def pending_types(self) -> dict[str, int]:
        """How many pending workflows each workflow type has."""
        rows = self._query(
            "SELECT workflow_type, COUNT(*) FROM workflows WHERE status = ? GROUP BY workflow_type",
            (WorkflowStatus.PENDING.value,),
        )
        return {r[0]: int(r[1]) for r in rows}

    # -- the write journal --------------------------------------------------------------

    def journal_add(
        self,
        workflow_id: str,
        chunk_no: int,
        call_no: int,
        kind: str,
        collection: str,
        batch_id: str,
        ids: Sequence[str],
        existed: Sequence[str],
    ) -> None:
        """Note a record-store call before it is made (the first note of a call wins).

        Earlier calls of the same chunk returned, so they are marked committed.
        """
        with self.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO journal(workflow_id, chunk_no, call_no, kind, collection, "
                "batch_id, ids, existed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    workflow_id,
                    chunk_no,
                    call_no,
                    kind,
                    collection,
                    batch_id,
                    orjson.dumps(list(ids)),
                    orjson.dumps(list(existed)),
                ),
            )
            if call_no > 0:
                conn.execute(
                    "UPDATE journal SET committed = 1 WHERE workflow_id = ? AND chunk_no = ? "
                    "AND call_no < ?",
                    (workflow_id, chunk_no, call_no),
                )

    def journal(self, workflow_id: str) -> Iterator[JournalEntry]:
        """Every noted call of a workflow, in order."""
        with self.errors():
            cur = self.conn().execute(
                "SELECT chunk_no, call_no, kind, collection, batch_id, ids, existed, committed "
                "FROM journal WHERE workflow_id = ? ORDER BY chunk_no, call_no",
                (workflow_id,),
            )
            for r in cur:
                yield JournalEntry(
                    chunk_no=r[0],
                    call_no=r[1],
                    kind=r[2],
                    collection=r[3],
                    batch_id=r[4],
                    ids=orjson.loads(r[5]),
                    existed=orjson.loads(r[6]),
                    committed=bool(r[7]),
                )

    # -- maintenance --------------------------------------------------------------------

    def purge(self, statuses: Iterable[WorkflowStatus], before: float) -> list[str | None]:
        """Delete finished workflows (and their journal) finished before ``before``.

        Returns the items files to remove (after the commit).
        """
        values = [s.value for s in statuses]
        marks = ", ".join("?" for _ in values)
        with self.write() as conn:
            rows = conn.execute(
                f"SELECT workflow_id, items_file FROM workflows WHERE status IN ({marks}) "
                "AND finished_at IS NOT NULL AND finished_at < ?",
                [*values, before],
            ).fetchall()
            for r in rows:
                conn.execute("DELETE FROM journal WHERE workflow_id = ?", (r[0],))
                conn.execute("DELETE FROM workflows WHERE workflow_id = ?", (r[0],))
        return [r[1] for r in rows]

    def aggregates(self) -> dict[str, Any]:
        by_status = {
            r[0]: r[1]
            for r in self._query("SELECT status, COUNT(*) FROM workflows GROUP BY status")
        }
        by_type = {
            r[0]: r[1]
            for r in self._query(
                "SELECT workflow_type, COUNT(*) FROM workflows GROUP BY workflow_type"
            )
        }
        total_items = self._query("SELECT COALESCE(SUM(items_processed), 0) FROM workflows")[0][0]
        done = self._query(
            "SELECT COUNT(*), COALESCE(SUM(finished_at - started_at), 0), "
            "COALESCE(SUM(items_processed), 0) FROM workflows WHERE status = ? "
            "AND started_at IS NOT NULL AND finished_at IS NOT NULL",
            (WorkflowStatus.COMPLETED.value,),
        )[0]
        retries = self._query(
            "SELECT COALESCE(SUM(attempts), 0), "
            "COALESCE(SUM(chunk_failures > 0 AND status = ?), 0) FROM workflows",
            (WorkflowStatus.PENDING.value,),
        )[0]
        return {
            "by_status": by_status,
            "by_type": by_type,
            "items_processed": int(total_items),
            "attempts": int(retries[0]),
            "waiting_retry": int(retries[1]),
            "completed": int(done[0]),
            "completed_seconds": float(done[1]),
            "completed_items": int(done[2]),
        }

    def check(self) -> list[str]:
        """Problems in the database and the staged items files; never raises for damage."""
        problems: list[str] = []
        try:
            rows = self._query("PRAGMA integrity_check")
            problems += [f"{self.path}: {r[0]}" for r in rows if r[0] != "ok"]
            files = self._query(
                "SELECT workflow_id, items_file, items_sha256, chunk_index FROM workflows "
                "WHERE items_file IS NOT NULL"
            )
        except (IntegrityError, SchemaVersionError) as exc:  # others are not damage: raised
            return [*problems, str(exc)]
        for wid, name, sha, index_blob in files:
            problems += self._check_items(wid, name, sha, index_blob)
        return problems

    def orphans(self, older_than: float) -> list[Path]:
        """Items files no workflow names, last modified before ``older_than`` (epoch)."""
        referenced = {r[0] for r in self._query("SELECT items_file FROM workflows")}
        return self.items.orphans(referenced, older_than)

    def _check_items(self, wid: str, name: str, sha: str | None, index_blob: bytes) -> list[str]:
        problems = self.items.check(wid, name, sha)
        try:
            orjson.loads(index_blob)
        except orjson.JSONDecodeError:
            problems.append(f"{self.path}: chunk index of workflow {wid!r} is damaged")
        return problems
