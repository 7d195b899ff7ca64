"""``PgTracker``: the workflow tracker of a PostgreSQL store (the ``WorkflowTracker`` contract).

It behaves exactly as the embedded ``app.formats.tracker.TrackerDB`` (same rows, same state
machine from ``app.core.workflow_types``, every state change one transaction), with what many
hosts sharing one database need (PERSISTENCE_LAYER_STRATEGY.md section 11, "Tracker"):

- **claims** use the queue pattern: a ``MATERIALIZED`` CTE picks the next pending workflow
  (priority, then age, among those whose retry time has come on the database clock)
  ``FOR UPDATE SKIP LOCKED`` and the same statement moves it to ``processing`` under the
  claimer's owner token, so two workers never get the same workflow and never wait for each
  other;
- **heartbeats** are taken from the database clock (``clock_timestamp()``): every host judges
  liveness on one clock. A caller's ``Stamp`` only contributes its age on its own steady clock
  (0 for a fresh reading), so a claim stamped in the past looks that old.
  ``recover_stale`` hands back rows whose heartbeat is older than ``stale_after`` on that
  clock, skipping rows another transaction holds (a chunk committing right now is alive);
- **exactly once**: every call runs in ``Database.transaction()``, which joins the ambient
  transaction of ``Backend.atomic()``, so a chunk's journal notes, its record writes and its
  ``chunk_done`` commit together (``app.managers.workflows.runner``);
- **staged items** go to the store's files URL (``app.backends.postgres.tracker_items``).

The tables are created by the first write (``tracker_base``); reads of a database without them
answer empty and create nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from app.backends.postgres import tracker_sql as q
from app.backends.postgres.tracker_base import (
    Row,
    chunk_index_of,
    fetch_dict,
    fetch_row,
    stamp_age,
)
from app.backends.postgres.tracker_maint import TrackerMaintenance
from app.core.clock import Stamp
from app.core.errors import ConflictError, IntegrityError, NotFoundError
from app.core.workflow_types import WorkflowStatus, check_transition
from app.formats.staged_items import ChunkIndex, StagedItems
from app.formats.tracker import merge_errors

__all__ = ["PgTracker", "stamp_age"]


def _locked_state(conn: Any, params: dict[str, Any]) -> tuple[Any, ...]:
    """``(status, owner, errors)`` of the workflow ``params["wid"]``, its row locked for the
    caller's transaction; ``NotFoundError`` when there is no such workflow."""
    row: tuple[Any, ...] | None = conn.execute(q.LOCK_ROW, params).fetchone()
    if row is None:
        raise NotFoundError(f"workflow {params['wid']!r} not found")
    return row


class PgTracker(TrackerMaintenance):
    """The workflow rows, claims, journal and staged items of one PostgreSQL store
    (plumbing: ``tracker_base``; journal and maintenance: ``tracker_maint``)."""

    # -- staged items -----------------------------------------------------------------------

    def stage_items(self, workflow_id: str, lines: Iterable[bytes], chunk_size: int) -> StagedItems:
        return self.items.stage(workflow_id, lines, chunk_size)

    def read_chunk(self, items_file: str, index: ChunkIndex, chunk_no: int) -> list[bytes]:
        rows = self._read(
            f"SELECT items_sha256 FROM {q.WORKFLOWS} WHERE items_file = %(name)s",
            {"name": items_file},
        )
        if not rows or rows[0]["items_sha256"] is None:
            raise IntegrityError(f"{self.items.where(items_file)}: no workflow names these items")
        return self.items.read_chunk(items_file, rows[0]["items_sha256"], index, chunk_no)

    def discard_items(self, items_file: str | None) -> None:
        self.items.discard(items_file)

    def _check_staged(self, name: str | None) -> None:
        """The commit re-checks that the staged object exists (never name a missing file)."""
        if name is not None and not self.items.exists(name):
            raise IntegrityError(f"{self.items.where(name)}: staged items file is missing")

    # -- rows -------------------------------------------------------------------------------

    def insert(self, row: Row, index: ChunkIndex) -> None:
        unknown = set(row) - q.COLUMNS
        if unknown:
            raise ValueError(f"unknown workflow columns: {sorted(unknown)}")
        self._check_staged(row.get("items_file"))
        cols = [*row, "chunk_index"]
        values = {**row, "chunk_index": orjson.dumps(index)}
        sql = (
            f"INSERT INTO {q.WORKFLOWS} ({', '.join(cols)}) "  # names from q.COLUMNS
            f"VALUES ({', '.join(f'%({c})s' for c in cols)}) ON CONFLICT DO NOTHING"
        )
        with self._write() as conn:
            inserted = conn.execute(sql, values).rowcount
        if inserted != 1:
            raise ConflictError(f"workflow_id: {row['workflow_id']!r} already exists")

    def exists(self, workflow_id: str) -> bool:
        return bool(
            self._read(
                f"SELECT 1 FROM {q.WORKFLOWS} WHERE workflow_id = %(wid)s", {"wid": workflow_id}
            )
        )

    def get(self, workflow_id: str) -> Row:
        return self._one(workflow_id)

    def chunk_index(self, workflow_id: str) -> ChunkIndex:
        rows = self._read(
            f"SELECT chunk_index FROM {q.WORKFLOWS} WHERE workflow_id = %(wid)s",
            {"wid": workflow_id},
        )
        if not rows:
            raise NotFoundError(f"workflow {workflow_id!r} not found")
        return chunk_index_of(rows[0]["chunk_index"])

    def list_rows(
        self,
        *,
        status: str | None,
        workflow_type: str | None,
        context: str | None,
        limit: int,
        offset: int,
    ) -> list[Row]:
        clauses = ["TRUE"]
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        for column, value in (
            ("status", status),
            ("workflow_type", workflow_type),
            ("context", context),
        ):
            if value is not None:
                clauses.append(f"{column} = %({column})s")  # our column names only
                params[column] = value
        return self._read(
            f"SELECT {q.SUMMARY} FROM {q.WORKFLOWS} WHERE {' AND '.join(clauses)} "
            "ORDER BY created_at DESC, workflow_id LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )

    def batch_ids(self, workflow_id: str) -> list[str]:
        return [r["batch_id"] for r in self._read(q.BATCH_IDS, {"wid": workflow_id})]

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
        unknown = set(fields) - q.COLUMNS
        if unknown:
            raise ValueError(f"unknown workflow columns: {sorted(unknown)}")
        params: dict[str, Any] = {"wid": workflow_id}
        with self._write() as conn:
            row = _locked_state(conn, params)
            status, owner, old_errors = row
            old = WorkflowStatus(status)
            if if_owner is not None and (owner != if_owner or old != WorkflowStatus.PROCESSING):
                return None
            if expect is not None and old not in set(expect):
                raise ConflictError(f"workflow {workflow_id!r} is {old.value}")
            if new is not None:
                check_transition(old, new)
                fields["status"] = new.value
            if errors:
                fields["errors"] = merge_errors(old_errors, errors)
            sets = [f"{column} = %(f_{column})s" for column in fields]  # names from q.COLUMNS
            params.update({f"f_{column}": value for column, value in fields.items()})
            if errors or extra_errors:
                sets.append("error_count = error_count + %(more)s")
                params["more"] = len(errors) + extra_errors
            if sets:
                conn.execute(
                    f"UPDATE {q.WORKFLOWS} SET {', '.join(sets)} WHERE workflow_id = %(wid)s",
                    params,
                )
            return fetch_row(conn, workflow_id)

    def claim(
        self,
        workflow_id: str | None,
        owner: str,
        worker: str,
        now: Stamp,
        types: Sequence[str] = (),
    ) -> Row | None:
        params: dict[str, Any] = {
            "owner": owner,
            "worker": worker,
            "wall": now.wall,
            "age": stamp_age(now),
            "pending": q.PENDING,
            "processing": q.PROCESSING,
        }
        with self._write() as conn:
            if workflow_id is None:
                params["types"] = list(types)
                return fetch_dict(conn, q.CLAIM_NEXT, params)
            params["wid"] = workflow_id
            found = conn.execute(q.LOCK_ROW, params).fetchone()
            if found is None:
                raise NotFoundError(f"workflow {workflow_id!r} not found")
            check_transition(found[0], WorkflowStatus.PROCESSING)
            return fetch_dict(conn, q.CLAIM_ONE, params)

    def cancel(self, workflow_id: str, now: float) -> Row:
        params: dict[str, Any] = {"wid": workflow_id, "now": now}
        with self._write() as conn:
            row = _locked_state(conn, params)
            old = WorkflowStatus(row[0])
            check_transition(old, WorkflowStatus.CANCELLED)
            if old == WorkflowStatus.PROCESSING:
                sql = (
                    "UPDATE ctxstore_workflows SET cancel_requested = 1 WHERE workflow_id = %(wid)s"
                )
            else:
                params["cancelled"] = WorkflowStatus.CANCELLED.value
                sql = (
                    "UPDATE ctxstore_workflows SET status = %(cancelled)s, cancel_requested = 1,"
                    " finished_at = %(now)s WHERE workflow_id = %(wid)s"
                )
            conn.execute(sql, params)
            out = fetch_row(conn, workflow_id)
        assert out is not None
        return out

    def recover_stale(self, stale_after: float, now: Stamp) -> list[str]:
        params: dict[str, Any] = {"processing": q.PROCESSING, "stale_after": stale_after}
        with self._write() as conn:
            rows = conn.execute(q.STALE, params).fetchall()
            for wid, cancel in rows:
                new = WorkflowStatus.CANCELLED if cancel else WorkflowStatus.PENDING
                check_transition(WorkflowStatus.PROCESSING, new)
                conn.execute(
                    "UPDATE ctxstore_workflows SET status = %(new)s, owner = NULL,"
                    " finished_at = CASE WHEN %(cancel)s THEN %(wall)s ELSE finished_at END"
                    " WHERE workflow_id = %(wid)s",
                    {"new": new.value, "cancel": bool(cancel), "wall": now.wall, "wid": wid},
                )
        return [str(r[0]) for r in rows]

    def heartbeat(self, workflow_id: str, owner: str, now: Stamp) -> bool:
        params = {
            "wid": workflow_id,
            "owner": owner,
            "age": stamp_age(now),
            "processing": q.PROCESSING,
        }
        with self._write() as conn:
            return bool(conn.execute(q.HEARTBEAT, params).rowcount == 1)

    def plan(
        self, workflow_id: str, owner: str, staged: StagedItems, chunk_size: int, now: Stamp
    ) -> bool:
        self._check_staged(staged.name)
        params = {
            "wid": workflow_id,
            "owner": owner,
            "name": staged.name,
            "sha": staged.sha256,
            "count": staged.count,
            "chunks": len(staged.index),
            "index": orjson.dumps(staged.index),
            "age": stamp_age(now),
            "processing": q.PROCESSING,
        }
        with self._write() as conn:
            return bool(conn.execute(q.PLAN, params).rowcount == 1)

    def chunk_done(
        self, workflow_id: str, owner: str, chunk_no: int, items: int, now: Stamp
    ) -> Row | None:
        params = {
            "wid": workflow_id,
            "owner": owner,
            "chunk": chunk_no,
            "next": chunk_no + 1,
            "items": items,
            "age": stamp_age(now),
            "processing": q.PROCESSING,
        }
        with self._write() as conn:
            row = fetch_dict(conn, q.CHUNK_DONE, params)
            if row is not None:
                conn.execute(q.JOURNAL_COMMITTED, params)
            return row

    def attempt_failed(
        self, workflow_id: str, owner: str, error: str, retry_in: float | None, now: float
    ) -> Row | None:
        params: dict[str, Any] = {"wid": workflow_id}
        with self._write() as conn:
            row = _locked_state(conn, params)
            status, held_by, old_errors = row
            if held_by != owner or status != q.PROCESSING:
                return None
            new = WorkflowStatus.FAILED if retry_in is None else WorkflowStatus.PENDING
            check_transition(WorkflowStatus.PROCESSING, new)
            params.update(
                new=new.value,
                errors=merge_errors(old_errors, [error]),
                retry=retry_in is not None,
                retry_in=retry_in or 0.0,
                now=now,
            )
            return fetch_dict(conn, q.ATTEMPT_FAILED, params)

    def pending_types(self) -> dict[str, int]:
        rows = self._read(q.PENDING_TYPES, {"pending": q.PENDING})
        return {r["workflow_type"]: int(r["n"]) for r in rows}

    def close(self) -> None:
        """Nothing to close: the connection pool is the backend's (``PostgresBackend.close``),
        shared with the records of every context."""
