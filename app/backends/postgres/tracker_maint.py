"""The write journal and the maintenance of ``PgTracker``: purge, orphans, metrics, checks.

The same rows and answers as the embedded ``app.formats.tracker.TrackerDB``: one journal row
per record-store call of a chunk, written before the call (inside the chunk's unit of work on a
server backend, so it commits or rolls back with the chunk's writes), the first note of a call
winning.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from app.backends.postgres import tracker_sql as q
from app.backends.postgres.tracker_base import TrackerBase, chunk_index_of
from app.backends.postgres.tracker_items import items_size
from app.core.errors import IntegrityError, SchemaVersionError
from app.core.workflow_types import WorkflowStatus
from app.formats.tracker import JournalEntry


class TrackerMaintenance(TrackerBase):
    """Journal and maintenance calls of the ``WorkflowTracker`` contract."""

    # -- the write journal ------------------------------------------------------------------

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
        params = {
            "wid": workflow_id,
            "chunk": chunk_no,
            "call": call_no,
            "kind": kind,
            "collection": collection,
            "batch": batch_id,
            "ids": orjson.dumps(list(ids)),
            "existed": orjson.dumps(list(existed)),
        }
        with self._write() as conn:
            conn.execute(q.JOURNAL_ADD, params)
            if call_no > 0:
                conn.execute(q.JOURNAL_EARLIER, params)

    def journal(self, workflow_id: str) -> Iterator[JournalEntry]:
        for r in self._read(q.JOURNAL_READ, {"wid": workflow_id}):
            yield JournalEntry(
                chunk_no=r["chunk_no"],
                call_no=r["call_no"],
                kind=r["kind"],
                collection=r["collection"],
                batch_id=r["batch_id"],
                ids=orjson.loads(r["ids"]),
                existed=orjson.loads(r["existed"]),
                committed=bool(r["committed"]),
            )

    # -- maintenance ------------------------------------------------------------------------

    def purge(self, statuses: Iterable[WorkflowStatus], before: float) -> list[str | None]:
        params: dict[str, Any] = {"statuses": [s.value for s in statuses], "before": before}
        with self._write() as conn:
            rows = conn.execute(q.PURGE, params).fetchall()
            conn.execute(q.PURGE_JOURNAL, {"ids": [r[0] for r in rows]})
        return [r[1] for r in rows]

    def orphans(self, older_than: float) -> list[Path]:
        referenced = {
            r["items_file"]
            for r in self._read(f"SELECT items_file FROM {q.WORKFLOWS}")
            if r["items_file"] is not None
        }
        return self.items.orphans(referenced, older_than)

    def aggregates(self) -> dict[str, Any]:
        by_status = self._read(f"SELECT status, count(*) AS n FROM {q.WORKFLOWS} GROUP BY status")
        by_type = self._read(
            f"SELECT workflow_type, count(*) AS n FROM {q.WORKFLOWS} GROUP BY workflow_type"
        )
        total = self._read(f"SELECT COALESCE(sum(items_processed), 0) AS n FROM {q.WORKFLOWS}")
        done = self._read(
            "SELECT count(*) AS n, COALESCE(sum(finished_at - started_at), 0) AS s,"
            f" COALESCE(sum(items_processed), 0) AS i FROM {q.WORKFLOWS}"
            " WHERE status = %(completed)s AND started_at IS NOT NULL"
            " AND finished_at IS NOT NULL",
            {"completed": WorkflowStatus.COMPLETED.value},
        )
        retries = self._read(
            "SELECT COALESCE(sum(attempts), 0) AS a,"
            " count(*) FILTER (WHERE chunk_failures > 0 AND status = %(pending)s) AS w"
            f" FROM {q.WORKFLOWS}",
            {"pending": q.PENDING},
        )
        return {
            "attempts": int(retries[0]["a"]) if retries else 0,
            "waiting_retry": int(retries[0]["w"]) if retries else 0,
            "by_status": {r["status"]: int(r["n"]) for r in by_status},
            "by_type": {r["workflow_type"]: int(r["n"]) for r in by_type},
            "items_processed": int(total[0]["n"]) if total else 0,
            "completed": int(done[0]["n"]) if done else 0,
            "completed_seconds": float(done[0]["s"]) if done else 0.0,
            "completed_items": int(done[0]["i"]) if done else 0,
        }

    def check(self) -> list[str]:
        """Problems in the tracker rows and their staged items, each naming the tracker (its
        ``path``) and the object concerned; never raises for damage."""
        try:
            rows = self._read(
                f"SELECT workflow_id, items_file, items_sha256, chunk_index FROM {q.WORKFLOWS}"
                " WHERE items_file IS NOT NULL ORDER BY workflow_id"
            )
        except (IntegrityError, SchemaVersionError) as exc:
            return [f"{self.path}: {exc}"]
        problems: list[str] = []
        for r in rows:
            wid, name = r["workflow_id"], r["items_file"]
            try:
                index = chunk_index_of(r["chunk_index"])
            except (ValueError, TypeError):
                problems.append(f"{self.path}: chunk index of workflow {wid!r} is damaged")
                continue
            problems += self.items.check(wid, name, r["items_sha256"], items_size(index))
        return [p if p.startswith(str(self.path)) else f"{self.path}: {p}" for p in problems]
