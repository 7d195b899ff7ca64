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
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import orjson
from pydantic import BaseModel

from app.backends.local.records.catalog import _import_schema, _schema_path
from app.backends.local.records.collection import new_generation
from app.backends.local.records.logio import spooled, verified_batches
from app.backends.local.staging import staging_folder
from app.backends.postgres.connect import Database
from app.backends.postgres.filters import compile_order_pg, compile_where_pg
from app.backends.postgres.records import logread, maintenance
from app.backends.postgres.records.apply import (
    delete_ids,
    insert_batch,
    load_log,
    next_seq,
    stage_rows,
    survivors,
    upsert_staged,
)
from app.backends.postgres.records.bodies import read_log, write_body
from app.backends.postgres.records.tables import (
    DDL,
    DDL_LOCK,
    PART,
    VERSION,
    index_name,
    index_sql,
    write_key,
)
from app.backends.postgres.schema import ensure_schema
from app.core.clock import utc_iso
from app.core.errors import ConflictError, IntegrityError, InvalidInput, NotFoundError, StorageError
from app.core.filters import Predicate, predicate
from app.core.indexes import Indexes
from app.core.layout import SPOOL_PURPOSE
from app.core.locks import Lock
from app.core.schemas import (
    BUILTIN_INDEXES,
    BUILTIN_SCHEMAS,
    CompactionReport,
    LatestCommit,
    RecordVersion,
)
from app.core.spool import SizedIterable
from app.formats.batchlog import BatchLog, CommitMeta

if TYPE_CHECKING:
    import psycopg

FETCH = 2000
BASE = "FROM ctxstore_records WHERE context = %s AND collection = %s"
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


class PgPlan(NamedTuple):
    """A filter and an order compiled to PostgreSQL (``CompiledQuery``)."""

    where_sql: str
    params: tuple[Any, ...]
    order_sql: str
    check: Predicate | None


def _tie_order(order_sql: str) -> str:
    """Ties in commit order: ``seq`` then ``pos``, in the direction of the last key."""
    return order_sql + (', "pos" DESC' if order_sql.endswith("DESC") else ', "pos" ASC')


class PgRecords:
    """The record collections of context ``name`` in the database ``db``; ``folder`` is the
    context's local working folder (spools beside it); ``lock`` its writer lock, the one the
    context's other parts hold too (``PgContexts.context_lock``)."""

    def __init__(self, db: Database, name: str, folder: Path, lock: Lock) -> None:
        self._db = db
        self.name = name
        self.path = folder
        self.writer_lock: Lock = lock
        self._ready = False
        self._schemas: dict[str, type[BaseModel]] = {}
        self._indexed: set[str] = set()

    def __repr__(self) -> str:
        return f"PgRecords({self._db.where()!r}, {self.name!r})"

    def where(self) -> str:
        """How errors name the context's records (the URL without its password)."""
        return f"{self._db.where()} (context {self.name!r})"

    # -- the database -------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """One transaction (joining the caller's, if one is open in this thread)."""
        import psycopg

        try:
            with self._db.transaction() as conn:
                yield conn
        except psycopg.errors.UntranslatableCharacter as exc:
            raise InvalidInput(f"records: {str(exc).strip()}") from None
        except psycopg.Error as exc:
            text = str(exc).strip() or type(exc).__name__
            raise StorageError(f"{doing} at {self.where()}: {text}") from None

    @contextlib.contextmanager
    def write_transaction(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """A write transaction holding the context's write key until it ends."""
        with self.transaction(doing) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (write_key(self.name),))
            yield conn

    def snapshot(self, sql: str, args: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """The rows of ``sql`` from one REPEATABLE READ snapshot, fetched ``FETCH`` at a time
        through a server-side cursor on a connection of their own (flat memory; the caller
        may write while iterating)."""
        import psycopg

        try:
            with self._db.session() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                with conn.cursor(name="ctxstore_stream") as cur:
                    cur.itersize = FETCH
                    cur.execute(sql, list(args))
                    while rows := cur.fetchmany(FETCH):
                        yield from rows
        except psycopg.Error as exc:
            text = str(exc).strip() or type(exc).__name__
            raise StorageError(f"reading {self.where()}: {text}") from None

    # -- readiness and locking ----------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self._ready

    def ready(self) -> None:
        """The index is the table itself, always up to date: only the tables are made sure
        of (once per process and context)."""
        if self._ready:
            return
        with self.transaction("opening the records") as conn:
            ensure_schema(conn, PART, DDL, VERSION)
        self._ready = True

    def ready_if_idle(self) -> bool:
        self.ready()
        return True

    def writing(self) -> AbstractContextManager[None]:
        return self.writer_lock.hold()

    @contextlib.contextmanager
    def spool_folder(self) -> Iterator[Path]:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{parent}: cannot create the working folder ({exc})") from exc
        with staging_folder(parent, SPOOL_PURPOSE) as folder:
            yield folder

    # -- catalogue ----------------------------------------------------------------------

    def _row(self, conn: Any, collection: str) -> tuple[Any, ...] | None:
        found: tuple[Any, ...] | None = conn.execute(
            "SELECT schema, indexes, generation FROM ctxstore_collections"
            " WHERE context = %s AND collection = %s",
            (self.name, collection),
        ).fetchone()
        return found

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

    def _ensure_collection(self, conn: Any, collection: str, generation: str | None = None) -> None:
        conn.execute(
            "INSERT INTO ctxstore_collections (context, collection, generation)"
            " VALUES (%s, %s, %s) ON CONFLICT (context, collection) DO NOTHING",
            (self.name, collection, generation or new_generation()),
        )

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
        self._ensure_indexes(BUILTIN_INDEXES.get(collection, ()))
        at = utc_iso()
        meta = CommitMeta(batch_id, "append", at, len(records), "", None, digest)
        with self.write_transaction(f"appending to {collection!r}") as conn:
            self._ensure_collection(conn, collection)
            seq = next_seq(conn)
            body = write_body(conn, seq, meta, records, ())
            insert_batch(conn, seq, self.name, collection, meta, body.digest, body.size)
            rows = (
                (rid, seq, pos, data)
                for pos, (rid, data) in enumerate(zip(ids, records, strict=True))
            )
            stage_rows(conn, rows)
            upsert_staged(conn, self.name, collection)
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

    # -- reading the index ---------------------------------------------------------------

    def get(self, collection: str, record_id: str) -> str | None:
        self.ready()
        with self.transaction("reading a record") as conn:
            row = conn.execute(
                f"SELECT raw {BASE} AND id = %s", (self.name, collection, record_id)
            ).fetchone()
        return None if row is None else bytes(row[0]).decode()

    def existing(self, collection: str, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        self.ready()
        with self.transaction("reading records") as conn:
            found = {
                r[0]
                for r in conn.execute(
                    f"SELECT id {BASE} AND id = ANY(%s)", (self.name, collection, list(ids))
                )
            }
        return [i for i in ids if i in found]

    def compile(self, where: Any, order_by: Any) -> PgPlan:
        where_sql, params = compile_where_pg(where)
        return PgPlan(
            where_sql,
            tuple(params),
            _tie_order(compile_order_pg(order_by)),
            predicate(where) if where else None,
        )

    def _select(self, collection: str, plan: PgPlan) -> tuple[str, list[Any]]:
        sql = f"SELECT raw {BASE} AND {plan.where_sql} ORDER BY {plan.order_sql}"
        return sql, [self.name, collection, *plan.params]

    def query(
        self, collection: str, plan: PgPlan, limit: int | None, offset: int
    ) -> list[dict[str, Any]]:
        self.ready()
        sql, args = self._select(collection, plan)
        sql += " LIMIT %s OFFSET %s"
        with self.transaction("querying records") as conn:
            rows = conn.execute(sql, [*args, limit, offset]).fetchall()
        loads = orjson.loads
        return [loads(r[0]) for r in rows]

    def stream(self, collection: str, plan: PgPlan) -> Iterator[dict[str, Any]]:
        self.ready()
        sql, args = self._select(collection, plan)
        loads = orjson.loads
        return (loads(r[0]) for r in self.snapshot(sql, args))

    def count(self, collection: str, plan: PgPlan) -> int:
        self.ready()
        with self.transaction("counting records") as conn:
            row = conn.execute(
                f"SELECT count(*) {BASE} AND {plan.where_sql}",
                [self.name, collection, *plan.params],
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def select_ids(self, collection: str, plan: PgPlan) -> list[str]:
        self.ready()
        with self.transaction("selecting records") as conn:
            rows = conn.execute(
                f"SELECT id {BASE} AND {plan.where_sql} ORDER BY seq, pos",
                [self.name, collection, *plan.params],
            ).fetchall()
        return [str(r[0]) for r in rows]

    def damaged(self, collection: str) -> IntegrityError:
        return IntegrityError(
            f"{self.where()}: the index of {collection!r} is damaged (a row does not match "
            "its lookup); repair it with rebuild_index()"
        )

    # -- reading the log -----------------------------------------------------------------

    @contextlib.contextmanager
    def log_file(self, collection: str) -> Iterator[Path | None]:
        """The collection's log read back into a local batch-log file (None: no log); damage
        found in it is named as the collection's log in the database, not as the file."""
        self.ready()
        with self.spool_folder() as folder:
            fd, name = tempfile.mkstemp(dir=folder)
            path = Path(name)
            with self.transaction("reading the log") as conn, os.fdopen(fd, "wb") as fh:
                row = self._row(conn, collection)
                if row is not None:
                    read_log(conn, self.name, collection, row[2], fh)
            try:
                yield None if row is None else path
            except IntegrityError as exc:
                where = f"{self.where()}: the log of {collection!r}"
                raise IntegrityError(str(exc).replace(str(path), where)) from None

    def write_log(self, collection: str, fh: IO[bytes]) -> int:
        self.ready()
        with self.transaction("reading the log") as conn:
            row = self._row(conn, collection)
            if row is None:
                raise NotFoundError(f"collection {collection!r} not found in {self.name!r}")
            return read_log(conn, self.name, collection, row[2], fh)

    def history(self, collection: str, ids: Iterable[str]) -> dict[str, list[RecordVersion]]:
        wanted = list(ids)
        with self.log_file(collection) as path:
            if path is None:
                return {rid: [] for rid in wanted}
            return logread.versions(path, collection, wanted)

    def latest_commits(self, collection: str, ids: Iterable[str]) -> dict[str, LatestCommit]:
        wanted = list(ids)
        with self.writer_lock.hold(), self.log_file(collection) as path:
            return {} if path is None else logread.latest_commits(path, wanted)

    def current_records(self, collection: str) -> list[dict[str, Any]]:
        with self.writer_lock.hold(), self.log_file(collection) as path:
            return [] if path is None else list(logread.current_records(path))

    def write_compacted(self, collection: str, fh: IO[bytes]) -> int:
        with self.log_file(collection) as path:
            if path is None:
                raise NotFoundError(f"collection {collection!r} not found in {self.name!r}")
            return logread.write_compacted(path, fh, new_generation())[1]

    # -- whole collections ----------------------------------------------------------------

    def ingest_log(self, collection: str, fh: IO[bytes]) -> int:
        self.ready()
        where = f"{self.where()} collection {collection!r}"
        with self.spool_folder() as folder, spooled(fh, folder, "ingest") as path:
            for _ in verified_batches(path, where):
                pass
            generation = BatchLog(path).header().generation
            self._ensure_indexes(BUILTIN_INDEXES.get(collection, ()))
            with self.write_transaction(f"ingesting {collection!r}") as conn:
                taken = conn.execute(
                    "SELECT 1 FROM ctxstore_batches WHERE context = %s AND collection = %s LIMIT 1",
                    (self.name, collection),
                ).fetchone()
                if taken is not None:
                    raise ConflictError(
                        f"{where}: the collection is not empty; a log is only ingested into "
                        "an empty collection"
                    )
                self._ensure_collection(conn, collection)
                conn.execute(
                    "UPDATE ctxstore_collections SET generation = %s"
                    " WHERE context = %s AND collection = %s",
                    (generation, self.name, collection),
                )
                return load_log(conn, self.name, collection, path, None)

    def compact(self, collection: str) -> CompactionReport:
        with self.log_file(collection) as path:
            if path is None:
                return CompactionReport(
                    collection=collection,
                    records_before=0,
                    records_after=0,
                    bytes_before=0,
                    bytes_after=0,
                )
            bytes_before = path.stat().st_size
            latest, before = survivors(path)
            generation = None
            new = path
            if before != len(latest):  # superseded versions or tombstones to drop
                generation = new_generation()
                new = path.with_name(path.name + ".compacted")
                with open(new, "wb") as fh:
                    logread.write_compacted(path, fh, generation)
            with self.write_transaction(f"compacting {collection!r}") as conn:
                seqs = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT seq FROM ctxstore_batches WHERE context = %s AND collection = %s"
                        " ORDER BY seq",
                        (self.name, collection),
                    )
                ]
                load_log(conn, self.name, collection, new, seqs)
                if generation is not None:
                    conn.execute(
                        "UPDATE ctxstore_collections SET generation = %s"
                        " WHERE context = %s AND collection = %s",
                        (generation, self.name, collection),
                    )
            return CompactionReport(
                collection=collection,
                records_before=before,
                records_after=len(latest),
                bytes_before=bytes_before,
                bytes_after=new.stat().st_size,
            )

    # -- maintenance ---------------------------------------------------------------------

    def missing_logs(self) -> list[str]:
        self.ready()
        with self.transaction("checking the records") as conn:
            rows = conn.execute(
                "SELECT DISTINCT collection FROM ctxstore_records r WHERE context = %s"
                " AND NOT EXISTS (SELECT 1 FROM ctxstore_collections c"
                "  WHERE c.context = r.context AND c.collection = r.collection)",
                (self.name,),
            ).fetchall()
        return [
            f"{self.where()}: the index holds collection {str(r[0])!r}, which has no log"
            for r in sorted(rows)
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
