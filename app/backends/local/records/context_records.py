"""``LocalRecords``: the embedded backend's ``Records`` of one context (docs/api.md, "Records").

The context's folder holds ``context.json`` (the catalogue, ``Catalog``), one JSONL batch log
per collection (``CollectionLog``; the truth) and one SQLite index derived from the logs
(``SqliteIndex``). A batch is durable once its log write is fsync'd; the index is then updated
in one transaction (and caught up from the logs after a crash: ``ready``). Writers hold the
context's ``WriterLock`` (a ``flock`` file in the folder); readers never take it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, NamedTuple

from pydantic import BaseModel

from app.backends.local.ctxfiles import check_layout, layout_problems
from app.backends.local.records.catalog import Catalog
from app.backends.local.records.collection import CollectionLog
from app.backends.local.records.logio import copy_bytes, refuse_taken, spooled, verified_batches
from app.backends.local.records.rebuild import rebuild_index
from app.backends.local.staging import staging_folder
from app.core.atomic import fsync_dir
from app.core.errors import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    StorageError,
    environmental,
    io_error,
)
from app.core.filters import Predicate, compile_order, compile_where, predicate
from app.core.indexes import Indexes
from app.core.layout import CATALOG_FILE, LOG_SUFFIX, SPOOL_PURPOSE, collection_of, index_name
from app.core.layout import log_name as layout_log_name
from app.core.locks import WriterLock
from app.core.names import child, is_valid_name
from app.core.nofollow import link_problems
from app.core.schemas import CompactionReport, LatestCommit, RecordVersion
from app.core.spool import SizedIterable
from app.formats.sqlindex import BatchRow, SqliteIndex

READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
ALL_ROWS = compile_where(None)[0]
COMMIT_ORDER = compile_order(None)


class QueryPlan(NamedTuple):
    """A filter and an order compiled to SQL for the index (``CompiledQuery``)."""

    where_sql: str
    params: tuple[Any, ...]
    order_sql: str
    check: Predicate | None


def damage_only(exc: Exception) -> str:
    """The problem ``exc`` reports; an I/O, permission or EMFILE error is raised instead."""
    raise_instead = environmental(exc)
    if raise_instead is not None:
        raise raise_instead from exc
    return str(exc)


class LocalRecords:
    """The record collections of the context ``name`` kept in the folder ``path``."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self.writer_lock = WriterLock(path / ".lock")
        self.index = SqliteIndex(path / index_name(name))
        self._catalog = Catalog(path / CATALOG_FILE, name)
        self._logs: dict[str, CollectionLog] = {}
        self._ready = False
        self._ready_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalRecords({str(self.path)!r})"

    # -- internals ----------------------------------------------------------------------

    def _log(self, collection: str) -> CollectionLog:
        log = self._logs.get(collection)
        if log is None:
            path = child(self.path, collection, "collection", LOG_SUFFIX)
            log = CollectionLog(collection, path, self.index, self._catalog)
            self._logs[collection] = log
        return log

    def _recover_all(self) -> None:
        """Catch the index up with every log and cut torn tails (caller holds the lock)."""
        check_layout(self.path, self.name)
        self._catalog.check()
        names = self.collections()
        if names and not self.index.path.exists():  # new here (an import), or deleted
            rebuild_index(self.index, [self._log(n) for n in names])  # in bulk, then renamed
        if not self.index.is_initialised():
            self.index.initialise()
        for name in names:
            self._log(name).recover(create=False)

    def _caught_up(self) -> bool:
        """True when the index covers every log exactly, found without the lock and without
        writing anything (so a read of a store that cannot be written works); False when
        recovery is needed. ``IntegrityError`` for damaged context files."""
        check_layout(self.path, self.name)
        self._catalog.check()
        if not self.index.path.is_file() or not self.index.is_initialised():
            return False
        return all(self._log(name).caught_up() for name in self.collections())

    def _recover_locked(self) -> None:
        try:
            with self.writer_lock.hold():
                self._recover_all()
        except StorageError as exc:
            if type(exc) is not StorageError or exc.errno not in READ_ONLY_ERRNOS:
                raise
            raise StorageError(
                f"{self.index.path}: the index of context {self.name!r} is behind its logs "
                f"and cannot be brought up to date here ({exc}); open the store once where it "
                "can be written to catch the index up",
                errno=exc.errno,
            ) from exc

    # -- readiness and locking ----------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self._ready

    def ready(self) -> None:
        if self._ready:
            if not self.index.replaced():
                return
            # another process rebuilt the index or swapped the context directory (import,
            # save_context): drop connections to the old file and recover against the new one
            self.index.invalidate()
            self._ready = False
        with self._ready_guard:
            if not self._ready:
                if not self._caught_up():
                    self._recover_locked()
                self._ready = True

    def ready_if_idle(self) -> bool:
        if self._ready:
            return True
        try:
            with self._ready_guard:
                if not self._caught_up():
                    with self.writer_lock.hold(timeout=0):
                        self._recover_all()
                self._ready = True
        except ConflictError:
            return False
        return True

    def spool_folder(self) -> AbstractContextManager[Path]:
        # beside the context's folder (``.spool-*`` in the contexts folder, also for a staged
        # copy, whose folder sits there too): swept by ``open_store`` after a kill
        return staging_folder(self.path.parent, SPOOL_PURPOSE)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer lock against the files now at ``path``: if another process swapped
        the context directory (overwrite import, ``save_context``) or rebuilt the index since
        this process last looked, follow it before writing (the lock itself is always the one
        at ``path``, see ``WriterLock``)."""
        with self.writer_lock.hold():
            if self.index.replaced():
                self.index.invalidate()
                self._ready = False
                self._recover_all()
                self._ready = True
            yield

    @contextlib.contextmanager
    def _verifying(self) -> Iterator[None]:
        """The writer lock for a consistent verify; on a read-only file system, where no
        writer can exist and the lock file cannot be opened for writing, no lock is needed."""
        held = contextlib.ExitStack()
        try:
            held.enter_context(self.writer_lock.hold())
        except StorageError as exc:
            if type(exc) is not StorageError or exc.errno != errno.EROFS:
                raise
        with held:
            yield

    # -- catalogue ----------------------------------------------------------------------

    def schema(self, collection: str) -> type[BaseModel] | None:
        return self._catalog.schema(collection)

    def define(self, collection: str, schema: type[BaseModel] | None, indexes: Indexes) -> None:
        all_indexes = self._catalog.define(collection, schema, indexes)
        self._log(collection).recover(create=True)
        self.index.ensure_indexes(collection, all_indexes)

    def collections(self) -> list[str]:
        try:
            names = os.listdir(self.path)
        except OSError as exc:  # EMFILE, EACCES...: not damage
            raise io_error("listing", self.path, exc) from exc
        return sorted(c for c in map(collection_of, names) if c is not None and is_valid_name(c))

    def has(self, collection: str) -> bool:
        return self._log(collection).recover(create=False) is not None

    # -- writing ------------------------------------------------------------------------

    def append(
        self,
        collection: str,
        batch_id: str,
        ids: SizedIterable[str],
        records: SizedIterable[bytes],
        digest: str | None,
    ) -> BatchRow:
        return self._log(collection).append(batch_id, ids, records, digest)

    def delete(
        self, collection: str, batch_id: str, ids: Sequence[str], digest: str | None
    ) -> BatchRow:
        return self._log(collection).delete(batch_id, ids, digest)

    def batch(self, batch_id: str) -> BatchRow | None:
        return self.index.batch(batch_id)

    def request_digest(self, batch: BatchRow) -> str | None:
        return self._log(batch.collection).request_digest(batch)

    def compact(self, collection: str) -> CompactionReport:
        return self._log(collection).compact()

    # -- reading the index ---------------------------------------------------------------

    def get(self, collection: str, record_id: str) -> str | None:
        return self.index.get(collection, record_id)

    def existing(self, collection: str, ids: Sequence[str]) -> list[str]:
        return self.index.existing(collection, list(ids))

    def compile(self, where: Any, order_by: Any) -> QueryPlan:
        where_sql, params = compile_where(where)
        return QueryPlan(
            where_sql,
            tuple(params),
            compile_order(order_by),
            predicate(where) if where else None,
        )

    def query(
        self, collection: str, plan: QueryPlan, limit: int | None, offset: int
    ) -> list[dict[str, Any]]:
        return self.index.select(
            collection, plan.where_sql, plan.params, plan.order_sql, limit, offset
        )

    def stream(self, collection: str, plan: QueryPlan) -> Iterator[dict[str, Any]]:
        """Matching records; a whole collection in commit order is read from its log
        (``CollectionLog.stream_all``), anything else from the index."""
        if plan.where_sql == ALL_ROWS and not plan.params and plan.order_sql == COMMIT_ORDER:
            return self._log(collection).stream_all()
        return self.index.stream(collection, plan.where_sql, plan.params, plan.order_sql)

    def count(self, collection: str, plan: QueryPlan) -> int:
        return self.index.count(collection, plan.where_sql, plan.params)

    def select_ids(self, collection: str, plan: QueryPlan) -> list[str]:
        return self.index.select_ids(collection, plan.where_sql, plan.params)

    def damaged(self, collection: str) -> IntegrityError:
        return IntegrityError(
            f"{self.index.path}: the index of {collection!r} is damaged (a row does not match "
            "its lookup); repair it with rebuild_index()"
        )

    # -- reading the log -----------------------------------------------------------------

    def history(self, collection: str, ids: Iterable[str]) -> dict[str, list[RecordVersion]]:
        return self._log(collection).versions(ids)

    def latest_commits(self, collection: str, ids: Iterable[str]) -> dict[str, LatestCommit]:
        with self.writer_lock.hold():
            return self._log(collection).latest_commits(ids)

    def current_records(self, collection: str) -> list[dict[str, Any]]:
        with self.writer_lock.hold():
            return list(self._log(collection).current_records())

    def write_compacted(self, collection: str, fh: IO[bytes]) -> int:
        log = self._log(collection)
        if log.recover(create=False) is None:
            raise NotFoundError(f"collection {collection!r} not found in {self.name!r}")
        return log.write_compacted(fh)[1]

    def write_log(self, collection: str, fh: IO[bytes]) -> int:
        self.ready()
        with self.writer_lock.hold():
            log = self._log(collection)
            end = log.recover(create=False)  # cuts a torn tail: only committed batches go
            if end is None:
                raise NotFoundError(f"collection {collection!r} not found in {self.name!r}")
            return copy_bytes(log.log.path, end, fh)

    def ingest_log(self, collection: str, fh: IO[bytes]) -> int:
        self.ready()
        with self.writer_lock.hold():
            log = self._log(collection)
            end = log.recover(create=False)
            if end is not None and end > log.log.header().length:
                raise ConflictError(
                    f"{log.log.path}: collection {collection!r} is not empty; a log is only "
                    "ingested into an empty collection"
                )
            where = str(log.log.path)
            with spooled(fh, self.path, layout_log_name(collection)) as path:
                batches = 0
                for batch in verified_batches(path, where):
                    if self.index.batch(batch.batch_id) is not None:
                        raise refuse_taken(where, batch.batch_id)
                    batches += 1
                try:
                    os.replace(path, log.log.path)
                    fsync_dir(self.path)
                except OSError as exc:
                    raise io_error("writing", log.log.path, exc) from exc
            log.recover(create=False)  # a new generation: indexed aside, swapped in
            return batches

    # -- maintenance ---------------------------------------------------------------------

    def missing_logs(self) -> list[str]:
        self.ready()  # the index exists and is caught up (it may never have been used)
        unlogged = set(self.index.collection_names()) - set(self.collections())
        return [
            f"{self.index.path}: indexes collection {name!r}, which has no log"
            for name in sorted(unlogged)
        ]

    def verify(
        self, others: Callable[[], tuple[list[str], list[str]]]
    ) -> tuple[list[str], list[str]]:
        problems: list[str] = layout_problems(self.path, self.name)
        checked: list[str] = []
        try:
            self.ready()
        except Exception as exc:  # damage found while recovering is reported, not raised
            problem = damage_only(exc)
            if problem not in problems:
                problems.append(problem)
        with self._verifying():
            for name in self.collections():
                log_path = self._log(name).log.path
                checked.append(str(log_path))
                if not log_path.is_symlink() and log_path.is_file():
                    problems += self._log(name).verify()
            try:
                problems += [f"{self.index.path}: {p}" for p in self.index.integrity_check()]
                problems += self.missing_logs()
            except Exception as exc:
                problems.append(damage_only(exc))
            checked.append(str(self.index.path))
            more_problems, more_checked = others()
            problems += more_problems
            checked += more_checked
            problems += [p for p in link_problems(self.path) if p not in problems]
        return problems, checked

    def rebuild(self, *, replace: bool = False) -> None:
        """``replace``: put the new file in place of the old one instead of copying it in
        (``ctxstore upgrade``: the old file is of a version this one never writes to)."""
        with self.writer_lock.hold():
            rebuild_index(self.index, [self._log(n) for n in self.collections()], replace=replace)
            self._recover_all()
            self._ready = True

    def release(self) -> bool:
        return self.index.close_idle()

    def close(self) -> None:
        self.index.close()
        self._ready = False
