"""``Context``: the record-store API of one named context (docs/api.md, "Records"),
with its contracts.

Validation, encoding (``app.core.codec``), idempotency decisions, receipts and filter
re-checks live here; storage goes through the backend's ``Records`` (``app.backends``).
Append path: validate and encode the batch (no lock) -> ``records.writing()`` -> idempotency
check (``records.batch``) -> ``records.append`` (embedded: log write + fsync, then one index
transaction). Reads go straight to the index and never take the lock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import icontract
from pydantic import BaseModel

from app.backends.local import LocalBackend
from app.backends.protocols import Backend, CommittedBatch, CompiledQuery, Records
from app.core.codec import decode, delete_digest, new_id, prepare_batch
from app.core.contracts import FULL, ensure, ensure_full, invariant, require
from app.core.errors import ConflictError, InvalidInput, NotFoundError
from app.core.filters import is_utf8
from app.core.indexes import normalise_indexes
from app.core.layout import INDEX_SUFFIX
from app.core.locks import Lock
from app.core.rules import (
    CollectionName,
    Count,
    FlushInterval,
    Limit,
    Offset,
    RecordId,
    UserBatchId,
    checked,
)
from app.core.schemas import (
    BatchReceipt,
    CompactionReport,
    IntegrityReport,
    LatestCommit,
    RecordVersion,
)
from app.managers.embeddings import EmbeddingStore
from app.managers.models import ModelStore
from app.managers.parts import ContextPart, parts
from app.managers.parts.embeddings import EMBEDDINGS
from app.managers.parts.models import MODELS

if TYPE_CHECKING:
    from app.managers.buffer import AppendBuffer

H = TypeVar("H")

Where = Mapping[str, Any] | None
OrderBy = str | Sequence[str] | None
MAX_PLANS = 512


def _receipt(row: CommittedBatch, duplicate: bool) -> BatchReceipt:
    return BatchReceipt(
        batch_id=row.batch_id,
        collection=row.collection,
        count=row.count,
        duplicate=duplicate,
        committed_at=row.committed_at,
        sha256=row.sha256,
    )


@invariant(lambda self: len(self._plans) <= MAX_PLANS, "the query-plan cache stays bounded")
class Context(icontract.DBC):
    """A named context: record collections, an index, embedding sets and models."""

    def __init__(
        self, name: str, path: Path, trust_dir: Path, *, backend: Backend | None = None
    ) -> None:
        """The context ``name`` in the folder ``path``; ``backend`` keeps its records and
        its parts' files and documents (default: the embedded backend of ``path`` alone)."""
        self.name = name
        self.path = path
        self.backend: Backend = backend if backend is not None else LocalBackend.at(name, path)
        self._trust_dir = trust_dir
        self._records: Records = self.backend.records(name)
        self._lock = self._records.writer_lock
        self._plans: dict[tuple[str, str], CompiledQuery] = {}
        self._parts: dict[str, Any] = {}  # part name -> its handle (``part()``)
        self.on_use: Callable[[Context], None] | None = None  # the store's open-context set

    def __repr__(self) -> str:
        return f"Context({self.name!r}, path={str(self.path)!r})"

    # -- internals ----------------------------------------------------------------------

    def _ensure_ready(self) -> None:
        if self.on_use is not None:
            self.on_use(self)
        self._records.ready()

    @ensure(
        lambda result: all(INDEX_SUFFIX in p or "the index" in p for p in result),
        "problems name the index (its file, or on a server backend the index itself)",
    )
    def missing_logs(self) -> list[str]:
        """A problem for every collection the index holds whose log is gone (its records
        would silently be missing from a copy of the context)."""
        self._ensure_ready()  # the index exists and is caught up (it may never have been used)
        return self._records.missing_logs()

    @ensure(
        lambda self, result: not result or self._records.is_ready,
        "True means the index is caught up",
    )
    def recover_if_idle(self) -> bool:
        """Recover now if no other writer holds the lock (used when a store is opened); a busy
        context is recovered later, on first use. Returns whether it is recovered."""
        return self._records.ready_if_idle()

    def _duplicate(
        self, batch_id: str, collection: str, digest: str | None
    ) -> CommittedBatch | None:
        """The committed batch ``batch_id`` if this request repeats it; ``ConflictError`` if
        the id was committed with another payload (or to another collection).

        The request digest is read from the stored batch only for a repeated id: duplicates
        are rare, so the hot path never reads it. A batch written before digests existed (log
        format 1 without ``"req"``) counts as the same payload: the legacy behaviour."""
        row = self._records.batch(batch_id)
        if row is None:
            return None
        if row.collection != collection:
            raise ConflictError(
                f"batch_id: {batch_id[:80]!r} was already committed to collection "
                f"{row.collection!r}"
            )
        if digest is not None:
            stored = self._records.request_digest(row)
            if stored is not None and stored != digest:
                raise ConflictError(
                    f"batch_id: {batch_id[:80]!r} was already committed with a different "
                    "payload; use a new batch id for new data"
                )
        return row

    # -- writing ------------------------------------------------------------------------

    @checked
    @ensure(
        lambda records, result: (
            len(result.sha256) == 64
            and (result.duplicate or not isinstance(records, Sized) or result.count == len(records))
        ),
        "a receipt names a checksummed batch and counts every record of it",
    )
    def append(
        self,
        collection: CollectionName,
        records: Iterable[Any],
        *,
        batch_id: UserBatchId | None = None,
    ) -> BatchReceipt:
        """Append a batch of records all-or-nothing and durably (docs/api.md, "Records" and
        "Idempotency keys"; a ``batch_id`` starting with ``wf:`` is reserved for workflows)."""
        return self._append(collection, records, batch_id=batch_id)

    def _append(
        self, collection: str, records: Iterable[Any], *, batch_id: str | None
    ) -> BatchReceipt:
        """``append`` without the reserved-namespace check: the entry point of workflows.

        The whole input is consumed (validated, encoded, spooled to disk past
        ``codec.SPOOL_AT``) before the writer lock is taken, so a slow producer never holds
        it; the spool is removed on success and on every failure."""
        self._ensure_ready()
        with prepare_batch(
            records,
            self._records.schema(collection),
            batch_id=batch_id,
            collection=collection,
            spill=self._records.spool_folder,
        ) as prepared:
            bid = batch_id if batch_id is not None else new_id()
            with self._records.writing():
                duplicate = self._duplicate(bid, collection, prepared.digest)
                if duplicate is not None:
                    return _receipt(duplicate, duplicate=True)
                row = self._records.append(
                    collection, bid, prepared.ids, prepared.encoded, prepared.digest
                )
        return _receipt(row, duplicate=False)

    @checked
    @require(
        lambda ids, where: ids is not None or where is not None,
        "ids",
        "give ids, where, or both (delete never removes everything implicitly)",
    )
    @ensure(
        lambda ids, batch_id, result: (
            result >= 0
            and (batch_id is not None or not isinstance(ids, Sized) or result <= len(ids))
        ),
        "a new deletion never counts more records than ids given",
    )
    def delete(
        self,
        collection: CollectionName,
        ids: Iterable[str] | None = None,
        *,
        where: Where = None,
        batch_id: UserBatchId | None = None,
    ) -> int:
        """Soft-delete (tombstone) records by id and/or filter; returns how many existed."""
        return self._delete(collection, ids, where=where, batch_id=batch_id)

    def _delete(
        self,
        collection: str,
        ids: Iterable[str] | None,
        *,
        where: Where,
        batch_id: str | None,
        digest: str | None = None,
    ) -> int:
        """``delete`` without the reserved-namespace check (workflows). ``digest`` overrides
        the request digest (a workflow names the request its handler made)."""
        self._ensure_ready()
        id_list = self._id_list(ids)
        plan = self._plan(where, None)
        if batch_id is not None and digest is None:
            digest = delete_digest(collection, id_list, where)
        bid = batch_id if batch_id is not None else new_id()
        records = self._records
        with records.writing():
            duplicate = self._duplicate(bid, collection, digest)
            if duplicate is not None:
                return duplicate.count
            if not records.has(collection):
                return 0
            if id_list is None:
                targets = records.select_ids(collection, plan)
            else:
                targets = records.existing(collection, list(dict.fromkeys(id_list)))
                if where is not None:
                    keep = set(records.select_ids(collection, plan))
                    targets = [t for t in targets if t in keep]
            if not targets and batch_id is None:
                return 0
            records.delete(collection, bid, targets, digest)
        return len(targets)

    @staticmethod
    def _id_list(ids: Iterable[str] | None) -> list[str] | None:
        if ids is None:
            return None
        if isinstance(ids, str):
            raise InvalidInput("ids: expected an iterable of ids, not a single string")
        out = list(ids)
        if not all(isinstance(i, str) and i and (i.isascii() or is_utf8(i)) for i in out):
            raise InvalidInput("ids: every id must be a non-empty, valid Unicode string")
        return out

    @checked
    @icontract.snapshot(lambda self, collection: self.count(collection), "count", enabled=FULL)
    @ensure_full(
        lambda OLD, result: result.records_after == OLD.count, "compaction keeps every record"
    )
    def compact(self, collection: CollectionName) -> CompactionReport:
        """Rewrite the log without superseded versions and tombstones, atomically."""
        self._ensure_ready()
        with self._records.writing():
            return self._records.compact(collection)

    @checked
    @require(
        lambda schema: (
            schema is None or (isinstance(schema, type) and issubclass(schema, BaseModel))
        ),
        "schema",
        "must be None or a pydantic model class",
    )
    @ensure(lambda self, name: name in self.collections(), "the collection exists")
    def define_collection(
        self,
        name: CollectionName,
        *,
        schema: type[BaseModel] | None = None,
        indexes: Sequence[str | Sequence[str]] = (),
    ) -> None:
        """Create a collection (if needed) with a schema and indexed fields."""
        from app.core.schemas import BUILTIN_SCHEMAS

        if schema is not None and name in BUILTIN_SCHEMAS:
            raise InvalidInput(f"schema: {name!r} is a built-in collection with a fixed schema")
        specs = normalise_indexes(indexes)
        self._ensure_ready()
        with self._records.writing():
            self._records.define(name, schema, specs)

    # -- reading ------------------------------------------------------------------------

    @checked
    @ensure(lambda record_id, result: result.get("id") == record_id, "the record asked for")
    def get(self, collection: CollectionName, record_id: RecordId) -> dict[str, Any]:
        """The latest version of a record; ``NotFoundError`` if absent or deleted."""
        self._ensure_ready()
        data = self._records.get(collection, record_id)
        if data is None:
            raise NotFoundError(f"record {record_id[:80]!r} not found in {collection!r}")
        record = decode(data)
        if record.get("id") != record_id:
            raise self._records.damaged(collection)
        return record

    def _plan(self, where: Where, order_by: OrderBy) -> CompiledQuery:
        """The compiled form of a filter and an order (cached by their ``repr``: compiling
        costs more than the rest of a small indexed query)."""
        try:
            key = (repr(where), repr(order_by))
        except RecursionError:  # absurdly deep: compile refuses it with InvalidInput
            key = ("", "")
        plan = self._plans.get(key) if key[0] else None
        if plan is None:
            plan = self._records.compile(where, order_by)
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            if key[0]:
                self._plans[key] = plan
        return plan

    def _rechecked(
        self,
        collection: str,
        records: Iterable[dict[str, Any]],
        check: Callable[[Mapping[str, Any]], bool],
    ) -> Iterator[dict[str, Any]]:
        """Records as they come, after checking each really matches the filter: a damaged
        expression index could otherwise hand back rows that do not match."""
        for record in records:
            if not check(record):
                raise self._records.damaged(collection)
            yield record

    @checked
    @ensure(
        lambda limit, result: limit is None or len(result) <= limit,
        "a query never returns more than its limit",
    )
    def query(
        self,
        collection: CollectionName,
        where: Where = None,
        *,
        order_by: OrderBy = None,
        limit: Limit | None = None,
        offset: Offset = 0,
    ) -> list[dict[str, Any]]:
        """Records matching ``where``, in ``order_by`` (default: commit) order."""
        plan = self._plan(where, order_by)
        self._ensure_ready()
        records = self._records.query(collection, plan, limit, offset)
        if plan.check is not None and not all(map(plan.check, records)):
            raise self._records.damaged(collection)
        return records

    @checked
    @ensure(lambda result: isinstance(result, Iterator), "an iterator over the records")
    def iter(
        self, collection: CollectionName, where: Where = None, *, order_by: OrderBy = None
    ) -> Iterator[dict[str, Any]]:
        """Stream matching records with flat memory."""
        plan = self._plan(where, order_by)
        self._ensure_ready()
        records = self._records.stream(collection, plan)
        return records if plan.check is None else self._rechecked(collection, records, plan.check)

    @checked
    @ensure(lambda result: result >= 0, "a count is never negative")
    def count(self, collection: CollectionName, where: Where = None) -> int:
        plan = self._plan(where, None)
        self._ensure_ready()
        return self._records.count(collection, plan)

    @checked
    @ensure(lambda result: isinstance(result, list), "the matching ids, as a list")
    @ensure_full(lambda result: len(set(result)) == len(result), "each id once")
    def matching_ids(self, collection: CollectionName, where: Where = None) -> list[str]:
        """Ids of the current records of ``collection`` matching ``where``, in commit order
        (the candidates of a filtered embedding search, docs/api.md "Embeddings")."""
        plan = self._plan(where, None)
        self._ensure_ready()
        return self._records.select_ids(collection, plan)

    @checked
    @ensure(lambda result: isinstance(result, list), "the existing ids, as a list")
    def existing(self, collection: CollectionName, ids: Iterable[str]) -> list[str]:
        """Those of ``ids`` that currently exist (not deleted), in the given order."""
        id_list = self._id_list(ids) or []
        self._ensure_ready()
        return self._records.existing(collection, id_list)

    @checked
    @ensure(
        lambda result: all(a.position < b.position for a, b in itertools.pairwise(result)),
        "history is oldest first",
    )
    def history(self, collection: CollectionName, record_id: RecordId) -> list[RecordVersion]:
        """Every version and deletion of a record still in the log, oldest first."""
        self._ensure_ready()
        return self._records.history(collection, [record_id])[record_id]

    @checked
    @ensure(lambda result: isinstance(result, dict), "versions by id")
    def history_many(
        self, collection: CollectionName, record_ids: Iterable[str]
    ) -> dict[str, list[RecordVersion]]:
        """``history`` of many records in one pass over the log."""
        id_list = self._id_list(record_ids) or []
        self._ensure_ready()
        return self._records.history(collection, id_list)

    @ensure(lambda result: len(set(result)) == len(result), "each collection is listed once")
    def collections(self) -> list[str]:
        self._ensure_ready()
        return self._records.collections()

    # -- maintenance --------------------------------------------------------------------

    @ensure(lambda result: result.ok == (not result.problems), "ok means no problem was found")
    def verify(self) -> IntegrityReport:
        """Check every file of the context; reports damage, never raises for it."""
        if self.on_use is not None:
            self.on_use(self)

        def other_parts() -> tuple[list[str], list[str]]:
            problems: list[str] = []
            checked_parts: list[str] = []
            for part in parts():
                checked_parts.append(str(self.path / part.folder))
                problems += part.verify(self)
            return problems, checked_parts

        problems, checked_files = self._records.verify(other_parts)
        return IntegrityReport(ok=not problems, problems=problems, checked=checked_files)

    @ensure(lambda self: self._records.is_ready, "the new index is caught up with every log")
    def rebuild_index(self) -> None:
        """Rebuild the index from the logs (repairs any damage to the index)."""
        self._records.rebuild()

    # -- other parts --------------------------------------------------------------------

    @ensure(lambda self, part, result: self._parts.get(part.name) is result, "one handle a part")
    def part(self, part: ContextPart[H]) -> H:
        """The handle of ``part`` in this context (opened on first use, then kept)."""
        handle: H | None = self._parts.get(part.name)
        if handle is None:
            handle = self._parts.setdefault(part.name, part.open(self))  # one, if threads race
        return handle

    @property
    def embeddings(self) -> EmbeddingStore:
        """The context's embedding sets (docs/api.md, "Embeddings")."""
        return self.part(EMBEDDINGS)

    @property
    def models(self) -> ModelStore:
        """The context's models (docs/api.md, "Models")."""
        return self.part(MODELS)

    @checked
    def buffer(
        self,
        collection: CollectionName,
        *,
        max_pending: Count = 100_000,
        flush_every: Count = 1000,
        flush_interval: FlushInterval = 1.0,
    ) -> AppendBuffer:
        """A non-blocking, thread-safe append buffer flushing through ``append``."""
        from app.managers.buffer import AppendBuffer

        return AppendBuffer(
            self,
            collection,
            max_pending=max_pending,
            flush_every=flush_every,
            flush_interval=flush_interval,
        )

    # -- for other managers of this package (transfer, workflows) -------------------------

    @property
    def trust_dir(self) -> Path:
        """The store's trust folder (trust marks of pickled models, docs/api.md "Models")."""
        return self._trust_dir

    @property
    def writer_lock(self) -> Lock:
        """The context's writer lock (re-entrant); hold it for a consistent snapshot."""
        return self._lock

    @checked
    @ensure(lambda result: result >= 0, "a count of records written")
    def write_compacted_log(self, collection: CollectionName, fh: IO[bytes]) -> int:
        """Write a compacted copy of a collection's log to ``fh`` (the live log is untouched);
        returns the number of records written. Takes the writer lock."""
        self._ensure_ready()
        with self._records.writing():
            return self._records.write_compacted(collection, fh)

    @checked
    @ensure(lambda result: isinstance(result, list), "the current records")
    def records_from_log(self, collection: CollectionName) -> list[dict[str, Any]]:
        """Every current record in commit order, read from the log (the truth), not from the
        index: what copies a whole collection uses (docs/api.md, "Guarantees"). Takes the
        writer lock."""
        self._ensure_ready()
        return self._records.current_records(collection)

    @checked
    @ensure(lambda result: isinstance(result, dict), "the latest commit by id")
    def latest_commits(
        self, collection: CollectionName, ids: Iterable[str]
    ) -> dict[str, LatestCommit]:
        """For each of ``ids`` the log holds: its ``LatestCommit`` (commit time of its latest
        entry, deleted),
        read from the log (the truth), not from the index. Takes the writer lock."""
        id_list = self._id_list(ids) or []
        self._ensure_ready()
        return self._records.latest_commits(collection, id_list)

    @ensure(lambda result: isinstance(result, bool), "answers whether every file was closed")
    def release(self) -> bool:
        """Close this process's index connections no thread is using (they reopen on next
        use, without recovering again); returns whether none is left open."""
        return self._records.release()

    @ensure(lambda self: not self._records.is_ready, "a closed context recovers again on next use")
    def close(self) -> None:
        """Release this process's index connections."""
        self._records.close()
