"""``PgRecords``: the ``Records`` of one context kept in PostgreSQL (docs/api.md, "Records").

Tables in ``tables``. Write path: the caller holds ``writing()`` (the context's writer lock,
a session advisory lock shared with the context's other parts: ``PgContexts.context_lock``);
each batch is then ONE transaction that also takes ``pg_advisory_xact_lock`` on the context's
write key (so two writers serialise even if one forgot the writer lock), draws the batch's
``seq``, COPYs its body parts, inserts its row (the unique ``(context, batch_id)`` makes a
repeat impossible) and COPYs its records into the current-version table. Readers run single
statements (or, for ``stream``, one REPEATABLE READ transaction on a server-side cursor), so
they never see part of a batch and never wait for a writer.

"The log" is the batch bodies in commit order: history, compaction, ``write_log``,
verification and rebuilding read it back into a local batch-log file and use the embedded
backend's own reader on it (``logread``, ``maintenance``).

``PgRecords`` is assembled from ``base.PgBase`` (connection, transactions, readiness),
``reads.IndexReads`` (the index's reads) and ``logs.LogCalls`` (reads of the log, whole
collections); here: the catalogue of collections, the write path and maintenance.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel

from app.backends.local.records.catalog import _import_schema, _schema_path
from app.backends.postgres.records import maintenance
from app.backends.postgres.records.apply import (
    delete_ids,
    insert_batch,
    next_seq,
    put_rows,
)
from app.backends.postgres.records.base import PgBase
from app.backends.postgres.records.bodies import write_body
from app.backends.postgres.records.logs import LogCalls
from app.backends.postgres.records.reads import IndexReads, PgPlan
from app.backends.postgres.records.tables import (
    DDL_LOCK,
    index_name,
    index_sql,
)
from app.core.clock import utc_iso
from app.core.errors import InvalidInput
from app.core.indexes import Indexes
from app.core.schemas import (
    BUILTIN_INDEXES,
    BUILTIN_SCHEMAS,
)
from app.core.spool import SizedIterable
from app.formats.batchlog import CommitMeta

BATCH_COLUMNS = "batch_id, collection, kind, n, sha256, committed_at, seq, req"


@dataclass(frozen=True, slots=True)
class PgBatch:
    """A committed batch (``CommittedBatch``): its receipt, ``seq`` and request digest."""

    batch_id: str
    collection: str
    kind: str
    count: int
    sha256: str
    committed_at: str
    seq: int
    req: str | None


class _Placed:
    """``(id, seq, pos, record)`` of each record of a batch, re-iterable (each pass reads the
    ids and records again: a spooled batch is never held)."""

    def __init__(self, seq: int, ids: SizedIterable[str], records: SizedIterable[bytes]) -> None:
        self._seq, self._ids, self._records = seq, ids, records

    def __iter__(self) -> Iterator[tuple[str, int, int, bytes]]:
        seq = self._seq
        for pos, (rid, data) in enumerate(zip(self._ids, self._records, strict=True)):
            yield rid, seq, pos, data


class PgRecords(IndexReads, LogCalls, PgBase):
    """The record collections of context ``name`` in the database ``db``; ``folder`` is the
    context's local working folder (spools beside it); ``lock`` its writer lock, the one the
    context's other parts hold too (``PgContexts.context_lock``)."""

    # -- catalogue ----------------------------------------------------------------------

    def schema(self, collection: str) -> type[BaseModel] | None:
        builtin = BUILTIN_SCHEMAS.get(collection)
        if builtin is not None:
            return builtin
        local = self._schemas.get(collection)
        if local is not None:
            return local
        self.ready()
        with self.transaction("reading the catalogue") as conn:
            row = self._row(conn, collection)
        path = None if row is None else row[0]
        if path is None:
            return None
        schema = _import_schema(path)
        if schema is None:
            raise InvalidInput(
                f"collection: the schema {path!r} of {collection!r} is not loaded in this "
                "process; import its module or call define_collection() with the class first"
            )
        self._schemas[collection] = schema
        return schema

    def _indexes(self, collection: str, defined: Any) -> Indexes:
        base = BUILTIN_INDEXES.get(collection, ())
        extra = tuple(tuple(i) for i in (defined or []) if tuple(i) not in base)
        return base + extra

    def _ensure_indexes(self, specs: Iterable[Sequence[str]]) -> None:
        missing = [tuple(s) for s in specs if index_name(s) not in self._indexed]
        if not missing:
            return
        with self.transaction("creating indexes") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
            for spec in missing:
                found = conn.execute("SELECT to_regclass(%s)", (index_name(spec),)).fetchone()
                if found is None or found[0] is None:
                    conn.execute(index_sql(spec))
        self._indexed.update(index_name(s) for s in missing)

    def define(self, collection: str, schema: type[BaseModel] | None, indexes: Indexes) -> None:
        self.ready()
        with self.write_transaction(f"defining {collection!r}") as conn:
            self._ensure_collection(conn, collection)
            row = self._row(conn, collection)
            assert row is not None
            known = [tuple(i) for i in row[1] or []]
            merged = [list(i) for i in known + [i for i in indexes if i not in known]]
            path = row[0] if schema is None else _schema_path(schema)
            conn.execute(
                "UPDATE ctxstore_collections SET schema = %s, indexes = %s::jsonb"
                " WHERE context = %s AND collection = %s",
                (path, orjson.dumps(merged).decode(), self.name, collection),
            )
        if schema is not None:
            self._schemas[collection] = schema
        self._ensure_indexes(self._indexes(collection, merged))

    def collections(self) -> list[str]:
        self.ready()
        with self.transaction("listing collections") as conn:
            rows = conn.execute(
                "SELECT collection FROM ctxstore_collections WHERE context = %s"
                ' ORDER BY collection COLLATE "C"',
                (self.name,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def has(self, collection: str) -> bool:
        self.ready()
        with self.transaction("reading the catalogue") as conn:
            return self._row(conn, collection) is not None

    # -- writing ------------------------------------------------------------------------

    def append(
        self,
        collection: str,
        batch_id: str,
        ids: SizedIterable[str],
        records: SizedIterable[bytes],
        digest: str | None,
    ) -> PgBatch:
        self.ready()
        at = utc_iso()
        meta = CommitMeta(batch_id, "append", at, len(records), "", None, digest)
        with self.write_transaction(f"appending to {collection!r}") as conn:
            self._ensure_collection(conn, collection)
            seq = next_seq(conn)
            body = write_body(conn, seq, meta, records, ())
            insert_batch(conn, seq, self.name, collection, meta, body.digest, body.size)
            put_rows(conn, self.name, collection, _Placed(seq, ids, records))
        return PgBatch(batch_id, collection, "append", len(records), body.digest, at, seq, digest)

    def delete(
        self, collection: str, batch_id: str, ids: Sequence[str], digest: str | None
    ) -> PgBatch:
        self.ready()
        at = utc_iso()
        meta = CommitMeta(batch_id, "delete", at, len(ids), "", None, digest)
        with self.write_transaction(f"deleting from {collection!r}") as conn:
            self._ensure_collection(conn, collection)
            seq = next_seq(conn)
            body = write_body(conn, seq, meta, (), ids)
            insert_batch(conn, seq, self.name, collection, meta, body.digest, body.size)
            delete_ids(conn, self.name, collection, ids)
        return PgBatch(batch_id, collection, "delete", len(ids), body.digest, at, seq, digest)

    def batch(self, batch_id: str) -> PgBatch | None:
        self.ready()
        with self.transaction("reading a batch") as conn:
            row = conn.execute(
                f"SELECT {BATCH_COLUMNS} FROM ctxstore_batches"
                " WHERE context = %s AND batch_id = %s",
                (self.name, batch_id),
            ).fetchone()
        return None if row is None else PgBatch(*row)

    def request_digest(self, batch: PgBatch) -> str | None:
        return batch.req

    # -- maintenance ---------------------------------------------------------------------

    def missing_logs(self) -> list[str]:
        self.ready()
        with self.transaction("checking the records") as conn:
            rows = conn.execute(
                "SELECT DISTINCT collection, 'index' FROM ctxstore_records r WHERE context = %s"
                " AND NOT EXISTS (SELECT 1 FROM ctxstore_collections c"
                "  WHERE c.context = r.context AND c.collection = r.collection)"
                " UNION SELECT DISTINCT collection, 'batches' FROM ctxstore_batches b"
                " WHERE context = %s AND NOT EXISTS (SELECT 1 FROM ctxstore_collections c"
                "  WHERE c.context = b.context AND c.collection = b.collection)",
                (self.name, self.name),
            ).fetchall()
        holders = {"index": "the index", "batches": "the index's batch table"}
        return [
            f"{self.where()}: {holders[kind]} holds collection {str(name)!r}, which has no log"
            for name, kind in sorted(rows)
        ]

    def verify(self, others: maintenance.OtherChecks) -> tuple[list[str], list[str]]:
        self.ready()
        with self.writer_lock.hold():
            problems, checked = maintenance.verify(self)
            problems += self.missing_logs()
            more_problems, more_checked = others()
        return problems + more_problems, checked + more_checked

    def rebuild(self) -> None:
        self.ready()
        with self.writer_lock.hold():
            maintenance.rebuild(self)
        self._ready = True

    def release(self) -> bool:
        return True  # the database pool is the store's, shared by its contexts

    def close(self) -> None:
        self._ready = False


__all__ = ["PgBatch", "PgPlan", "PgRecords"]
