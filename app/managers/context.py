"""``Context``: the record-store API of one named context (SPEC section 4), with its contracts.

Append path: validate and encode the batch (no lock) -> take the context's writer lock ->
idempotency check -> ``CollectionLog.commit`` (log write + fsync, then one index transaction).
Reads go straight to the SQLite index (CRC-checked rows) and never take the lock.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, TypeVar

import icontract
from pydantic import BaseModel

from app.backends.local import LocalBackend
from app.backends.local.ctxfiles import check_layout, layout_problems
from app.backends.local.records import Catalog, CollectionLog
from app.backends.protocols import Backend
from app.core.codec import decode, delete_digest, new_id, prepare_batch
from app.core.contracts import (
    FULL,
    ensure,
    ensure_full,
    invariant,
    is_non_negative_int,
    is_positive_int,
    require,
    valid_name,
)
from app.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    StorageError,
    environmental,
    io_error,
)
from app.core.filters import Predicate, compile_order, compile_where, is_utf8, predicate
from app.core.indexes import normalise_indexes
from app.core.layout import CATALOG_FILE, INDEX_SUFFIX, LOG_SUFFIX, collection_of, index_name
from app.core.locks import WriterLock
from app.core.names import child, is_valid_name
from app.core.nofollow import link_problems
from app.core.schemas import BatchReceipt, CompactionReport, IntegrityReport, RecordVersion
from app.formats.sqlindex import BatchRow, SqliteIndex
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
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


class QueryPlan(NamedTuple):
    where_sql: str
    params: tuple[Any, ...]
    order_sql: str
    check: Predicate | None


RESERVED_PREFIX = "wf:"


MAX_FLUSH_INTERVAL = 86_400.0


def _seconds_ok(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 < value <= MAX_FLUSH_INTERVAL
    )


def _batch_id_ok(batch_id: object) -> bool:
    return batch_id is None or (
        isinstance(batch_id, str) and 0 < len(batch_id) <= 256 and is_utf8(batch_id)
    )


def check_user_batch_id(batch_id: str | None, argument: str = "batch_id") -> None:
    """``InvalidInput`` for a batch id in the namespace reserved for workflows (SPEC 16)."""
    if isinstance(batch_id, str) and batch_id.startswith(RESERVED_PREFIX):
        raise InvalidInput(
            f"{argument}: ids starting with {RESERVED_PREFIX!r} are reserved for workflows"
        )


def _damage_only(exc: Exception) -> str:
    """The problem ``exc`` reports; an I/O, permission or EMFILE error is raised instead."""
    raise_instead = environmental(exc)
    if raise_instead is not None:
        raise raise_instead from exc
    return str(exc)


def _receipt(row: BatchRow, duplicate: bool) -> BatchReceipt:
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
        self._lock = WriterLock(path / ".lock")
        self._index = SqliteIndex(path / index_name(name))
        self._catalog = Catalog(path / CATALOG_FILE, name)
        self._logs: dict[str, CollectionLog] = {}
        self._ready = False
        self._ready_guard = threading.Lock()
        self._plans: dict[tuple[str, str], QueryPlan] = {}
        self._parts: dict[str, Any] = {}  # part name -> its handle (``part()``)
        self.on_use: Callable[[Context], None] | None = None  # the store's open-context set

    def __repr__(self) -> str:
        return f"Context({self.name!r}, path={str(self.path)!r})"

    # -- internals ----------------------------------------------------------------------

    def _log(self, collection: str) -> CollectionLog:
        log = self._logs.get(collection)
        if log is None:
            path = child(self.path, collection, "collection", LOG_SUFFIX)
            log = CollectionLog(collection, path, self._index, self._catalog)
            self._logs[collection] = log
        return log

    def _recover_all(self) -> None:
        """Catch the index up with every log and cut torn tails (caller holds the lock)."""
        check_layout(self.path, self.name)
        self._catalog.check()
        if not self._index.is_initialised():
            self._index.initialise()
        for name in self._log_names():
            self._log(name).recover(create=False)

    def _caught_up(self) -> bool:
        """True when the index covers every log exactly, found without the lock and without
        writing anything (so a read of a store that cannot be written works, SPEC 22); False
        when recovery is needed. ``IntegrityError`` for damaged context files."""
        check_layout(self.path, self.name)
        self._catalog.check()
        if not self._index.path.is_file() or not self._index.is_initialised():
            return False
        return all(self._log(name).caught_up() for name in self._log_names())

    def _recover_locked(self) -> None:
        try:
            with self._lock.hold():
                self._recover_all()
        except StorageError as exc:
            if type(exc) is not StorageError or exc.errno not in READ_ONLY_ERRNOS:
                raise
            raise StorageError(
                f"{self._index.path}: the index of context {self.name!r} is behind its logs "
                f"and cannot be brought up to date here ({exc}); open the store once where it "
                "can be written to catch the index up",
                errno=exc.errno,
            ) from exc

    def _ensure_ready(self) -> None:
        if self.on_use is not None:
            self.on_use(self)
        if self._ready:
            if not self._index.replaced():
                return
            # another process rebuilt the index or swapped the context directory (import,
            # save_context): drop connections to the old file and recover against the new one
            self._index.invalidate()
            self._plans.clear()
            self._ready = False
        with self._ready_guard:
            if not self._ready:
                if not self._caught_up():
                    self._recover_locked()
                self._ready = True

    @ensure(lambda result: all(INDEX_SUFFIX in p for p in result), "problems name the index")
    def missing_logs(self) -> list[str]:
        """A problem for every collection the index holds whose log is gone (its records
        would silently be missing from a copy of the context)."""
        self._ensure_ready()  # the index exists and is caught up (it may never have been used)
        unlogged = set(self._index.collection_names()) - set(self._log_names())
        return [
            f"{self._index.path}: indexes collection {name!r}, which has no log"
            for name in sorted(unlogged)
        ]

    @contextlib.contextmanager
    def _verifying(self) -> Iterator[None]:
        """The writer lock for a consistent verify; on a read-only file system, where no
        writer can exist and the lock file cannot be opened for writing, no lock is needed."""
        held = contextlib.ExitStack()
        try:
            held.enter_context(self._lock.hold())
        except StorageError as exc:
            if type(exc) is not StorageError or exc.errno != errno.EROFS:
                raise
        with held:
            yield

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the writer lock against the files now at ``path``: if another process swapped
        the context directory (overwrite import, ``save_context``) or rebuilt the index since
        this process last looked, follow it before writing (the lock itself is always the one
        at ``path``, see ``WriterLock``)."""
        with self._lock.hold():
            if self._index.replaced():
                self._index.invalidate()
                self._plans.clear()
                self._ready = False
                self._recover_all()
                self._ready = True
            yield

    @ensure(lambda self, result: not result or self._ready, "True means the index is caught up")
    def recover_if_idle(self) -> bool:
        """Recover now if no other writer holds the lock (used when a store is opened); a busy
        context is recovered later, on first use. Returns whether it is recovered."""
        if self._ready:
            return True
        try:
            with self._ready_guard:
                if not self._caught_up():
                    with self._lock.hold(timeout=0):
                        self._recover_all()
                self._ready = True
        except ConflictError:
            return False
        return True

    def _log_names(self) -> list[str]:
        try:
            names = os.listdir(self.path)
        except OSError as exc:  # EMFILE, EACCES...: not damage
            raise io_error("listing", self.path, exc) from exc
        return sorted(c for c in map(collection_of, names) if c is not None and is_valid_name(c))

    def _duplicate(self, batch_id: str, collection: str, digest: str | None) -> BatchRow | None:
        """The committed batch ``batch_id`` if this request repeats it; ``ConflictError`` if
        the id was committed with another payload (or to another collection).

        The request digest is read from the batch's commit line in the log (the index row
        gives its offsets): duplicates are rare, so the hot path never reads it. A commit line
        written before digests existed (log format 1 without ``"req"``) counts as the same
        payload: the legacy behaviour."""
        row = self._index.batch(batch_id)
        if row is None:
            return None
        if row.collection != collection:
            raise ConflictError(
                f"batch_id: {batch_id[:80]!r} was already committed to collection "
                f"{row.collection!r}"
            )
        if digest is not None:
            stored = self._log(collection).request_digest(row)
            if stored is not None and stored != digest:
                raise ConflictError(
                    f"batch_id: {batch_id[:80]!r} was already committed with a different "
                    "payload; use a new batch id for new data"
                )
        return row

    # -- writing ------------------------------------------------------------------------

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    @require(
        lambda batch_id: _batch_id_ok(batch_id),
        "batch_id",
        "must be None or 1-256 characters of valid Unicode",
    )
    @ensure(
        lambda records, result: (
            len(result.sha256) == 64
            and (result.duplicate or not isinstance(records, Sized) or result.count == len(records))
        ),
        "a receipt names a checksummed batch and counts every record of it",
    )
    def append(
        self, collection: str, records: Iterable[Any], *, batch_id: str | None = None
    ) -> BatchReceipt:
        """Append a batch of records all-or-nothing and durably; see SPEC 4 and 16 (a
        ``batch_id`` starting with ``wf:`` is reserved for workflows)."""
        check_user_batch_id(batch_id)
        return self._append(collection, records, batch_id=batch_id)

    def _append(
        self, collection: str, records: Iterable[Any], *, batch_id: str | None
    ) -> BatchReceipt:
        """``append`` without the reserved-namespace check: the entry point of workflows."""
        self._ensure_ready()
        prepared = prepare_batch(
            records,
            self._catalog.schema(collection),
            batch_id=batch_id,
            collection=collection,
        )
        bid = batch_id if batch_id is not None else new_id()
        with self._writing():
            duplicate = self._duplicate(bid, collection, prepared.digest)
            if duplicate is not None:
                return _receipt(duplicate, duplicate=True)
            log = self._log(collection)
            row = log.append(bid, prepared.ids, prepared.encoded, prepared.digest)
        return _receipt(row, duplicate=False)

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    @require(
        lambda batch_id: _batch_id_ok(batch_id),
        "batch_id",
        "must be None or 1-256 characters of valid Unicode",
    )
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
        collection: str,
        ids: Iterable[str] | None = None,
        *,
        where: Where = None,
        batch_id: str | None = None,
    ) -> int:
        """Soft-delete (tombstone) records by id and/or filter; returns how many existed."""
        check_user_batch_id(batch_id)
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
        where_sql, params = compile_where(where)
        if batch_id is not None and digest is None:
            digest = delete_digest(collection, id_list, where)
        bid = batch_id if batch_id is not None else new_id()
        with self._writing():
            duplicate = self._duplicate(bid, collection, digest)
            if duplicate is not None:
                return duplicate.count
            log = self._log(collection)
            if log.recover(create=False) is None:
                return 0
            if id_list is None:
                targets = self._index.select_ids(collection, where_sql, params)
            else:
                targets = self._index.existing(collection, list(dict.fromkeys(id_list)))
                if where is not None:
                    keep = set(self._index.select_ids(collection, where_sql, params))
                    targets = [t for t in targets if t in keep]
            if not targets and batch_id is None:
                return 0
            log.delete(bid, targets, digest)
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

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    @icontract.snapshot(lambda self, collection: self.count(collection), "count", enabled=FULL)
    @ensure_full(
        lambda OLD, result: result.records_after == OLD.count, "compaction keeps every record"
    )
    def compact(self, collection: str) -> CompactionReport:
        """Rewrite the log without superseded versions and tombstones, atomically."""
        self._ensure_ready()
        with self._writing():
            return self._log(collection).compact()

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(
        lambda schema: (
            schema is None or (isinstance(schema, type) and issubclass(schema, BaseModel))
        ),
        "schema",
        "must be None or a pydantic model class",
    )
    def define_collection(
        self,
        name: str,
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
        with self._writing():
            all_indexes = self._catalog.define(name, schema, specs)
            self._log(name).recover(create=True)
            self._index.ensure_indexes(name, all_indexes)

    # -- reading ------------------------------------------------------------------------

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    @require(
        lambda record_id: (
            isinstance(record_id, str) and 0 < len(record_id) <= 256 and is_utf8(record_id)
        ),
        "record_id",
        "must be a non-empty string of at most 256 characters",
    )
    def get(self, collection: str, record_id: str) -> dict[str, Any]:
        """The latest version of a record; ``NotFoundError`` if absent or deleted."""
        self._ensure_ready()
        data = self._index.get(collection, record_id)
        if data is None:
            raise NotFoundError(f"record {record_id[:80]!r} not found in {collection!r}")
        record = decode(data)
        if record.get("id") != record_id:
            raise self._damaged_index(collection)
        return record

    def _damaged_index(self, collection: str) -> IntegrityError:
        return IntegrityError(
            f"{self._index.path}: the index of {collection!r} is damaged (a row does not match "
            "its lookup); repair it with rebuild_index()"
        )

    def _plan(self, where: Where, order_by: OrderBy) -> QueryPlan:
        """The compiled form of a filter and an order (cached by their ``repr``: compiling
        costs more than the rest of a small indexed query)."""
        try:
            key = (repr(where), repr(order_by))
        except RecursionError:  # absurdly deep: compile_where refuses it with InvalidInput
            key = ("", "")
        plan = self._plans.get(key) if key[0] else None
        if plan is None:
            where_sql, params = compile_where(where)
            plan = QueryPlan(
                where_sql,
                tuple(params),
                compile_order(order_by),
                predicate(where) if where else None,
            )
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            if key[0]:
                self._plans[key] = plan
        return plan

    def _rechecked(
        self, collection: str, records: Iterable[dict[str, Any]], check: Predicate
    ) -> Iterator[dict[str, Any]]:
        """Records as they come, after checking each really matches the filter: a damaged
        expression index could otherwise hand back rows that do not match."""
        for record in records:
            if not check(record):
                raise self._damaged_index(collection)
            yield record

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    @require(
        lambda limit: limit is None or (is_non_negative_int(limit) and limit < 2**63),
        "limit",
        "must be an int in [0, 2**63)",
    )
    @require(
        lambda offset: is_non_negative_int(offset) and offset < 2**63,
        "offset",
        "must be an int in [0, 2**63)",
    )
    @ensure(
        lambda limit, result: limit is None or len(result) <= limit,
        "a query never returns more than its limit",
    )
    def query(
        self,
        collection: str,
        where: Where = None,
        *,
        order_by: OrderBy = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Records matching ``where``, in ``order_by`` (default: commit) order."""
        plan = self._plan(where, order_by)
        self._ensure_ready()
        records = self._index.select(
            collection, plan.where_sql, plan.params, plan.order_sql, limit, offset
        )
        if plan.check is not None and not all(map(plan.check, records)):
            raise self._damaged_index(collection)
        return records

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    def iter(
        self, collection: str, where: Where = None, *, order_by: OrderBy = None
    ) -> Iterator[dict[str, Any]]:
        """Stream matching records with flat memory."""
        plan = self._plan(where, order_by)
        self._ensure_ready()
        records = self._index.stream(collection, plan.where_sql, plan.params, plan.order_sql)
        return records if plan.check is None else self._rechecked(collection, records, plan.check)

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    @ensure(lambda result: result >= 0, "a count is never negative")
    def count(self, collection: str, where: Where = None) -> int:
        where_sql, params = compile_where(where)
        self._ensure_ready()
        return self._index.count(collection, where_sql, params)

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    def existing(self, collection: str, ids: Iterable[str]) -> list[str]:
        """Those of ``ids`` that currently exist (not deleted), in the given order."""
        id_list = self._id_list(ids) or []
        self._ensure_ready()
        return self._index.existing(collection, id_list)

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    @require(
        lambda record_id: isinstance(record_id, str) and 0 < len(record_id) <= 256,
        "record_id",
        "must be a non-empty string of at most 256 characters",
    )
    @ensure(
        lambda result: all(a.position < b.position for a, b in itertools.pairwise(result)),
        "history is oldest first",
    )
    def history(self, collection: str, record_id: str) -> list[RecordVersion]:
        """Every version and deletion of a record still in the log, oldest first."""
        self._ensure_ready()
        return self._log(collection).versions([record_id])[record_id]

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    def history_many(
        self, collection: str, record_ids: Iterable[str]
    ) -> dict[str, list[RecordVersion]]:
        """``history`` of many records in one pass over the log."""
        id_list = self._id_list(record_ids) or []
        self._ensure_ready()
        return self._log(collection).versions(id_list)

    @ensure(lambda result: len(set(result)) == len(result), "each collection is listed once")
    def collections(self) -> list[str]:
        self._ensure_ready()
        return self._log_names()

    # -- maintenance --------------------------------------------------------------------

    @ensure(lambda result: result.ok == (not result.problems), "ok means no problem was found")
    def verify(self) -> IntegrityReport:
        """Check every file of the context; reports damage, never raises for it."""
        problems: list[str] = layout_problems(self.path, self.name)
        checked: list[str] = []
        try:
            self._ensure_ready()
        except Exception as exc:  # damage found while recovering is reported, not raised
            problem = _damage_only(exc)
            if problem not in problems:
                problems.append(problem)
        with self._verifying():
            for name in self._log_names():
                checked.append(str(self._log(name).log.path))
                if not self._log(name).log.path.is_symlink() and self._log(name).log.path.is_file():
                    problems += self._log(name).verify()
            try:
                problems += [f"{self._index.path}: {p}" for p in self._index.integrity_check()]
                problems += self.missing_logs()
            except Exception as exc:
                problems.append(_damage_only(exc))
            checked.append(str(self._index.path))
            for part in parts():
                checked.append(str(self.path / part.folder))
                problems += part.verify(self)
            problems += [p for p in link_problems(self.path) if p not in problems]  # SPEC 22
        return IntegrityReport(ok=not problems, problems=problems, checked=checked)

    @ensure(lambda self: self._ready, "the new index is caught up with every log")
    def rebuild_index(self) -> None:
        """Rebuild the SQLite index from the logs (repairs any damage to the index)."""
        from app.backends.local.records import rebuild_index

        with self._lock.hold():
            rebuild_index(self._index, [self._log(n) for n in self._log_names()])
            self._recover_all()
            self._ready = True

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

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    @require(lambda max_pending: is_positive_int(max_pending), "max_pending", "must be an int > 0")
    @require(lambda flush_every: is_positive_int(flush_every), "flush_every", "must be an int > 0")
    @require(
        lambda flush_interval: _seconds_ok(flush_interval),
        "flush_interval",
        f"must be a number of seconds in (0, {MAX_FLUSH_INTERVAL:g}]",
    )
    def buffer(
        self,
        collection: str,
        *,
        max_pending: int = 100_000,
        flush_every: int = 1000,
        flush_interval: float = 1.0,
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
    def writer_lock(self) -> WriterLock:
        """The context's writer lock (re-entrant); hold it for a consistent snapshot."""
        return self._lock

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    def write_compacted_log(self, collection: str, fh: IO[bytes]) -> int:
        """Write a compacted copy of a collection's log to ``fh`` (the live log is untouched);
        returns the number of records written. Takes the writer lock."""
        self._ensure_ready()
        with self._writing():
            log = self._log(collection)
            if log.recover(create=False) is None:
                raise NotFoundError(f"collection {collection!r} not found in {self.name!r}")
            return log.write_compacted(fh)[1]

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    def records_from_log(self, collection: str) -> list[dict[str, Any]]:
        """Every current record in commit order, read from the log (the truth), not from the
        index: what copies a whole collection uses (SPEC 22). Takes the writer lock."""
        self._ensure_ready()
        with self._lock.hold():
            return list(self._log(collection).current_records())

    @require(lambda collection: valid_name(collection, "collection"), "collection", "invalid")
    def latest_commits(self, collection: str, ids: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """For each of ``ids`` the log holds: ``(commit time of its latest entry, deleted)``,
        read from the log (the truth), not from the index. Takes the writer lock."""
        id_list = self._id_list(ids) or []
        self._ensure_ready()
        with self._lock.hold():
            return self._log(collection).latest_commits(id_list)

    @ensure(lambda result: isinstance(result, bool), "answers whether every file was closed")
    def release(self) -> bool:
        """Close this process's index connections no thread is using (they reopen on next
        use, without recovering again); returns whether none is left open."""
        return self._index.close_idle()

    @ensure(lambda self: not self._ready, "a closed context recovers again on next use")
    def close(self) -> None:
        """Release this process's index connections."""
        self._index.close()
        self._ready = False
