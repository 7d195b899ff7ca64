"""``Store`` and ``open_store``: a store, its contexts and the whole-store operations.

The store's catalogue of contexts (marker, listing, create, drop, staging, install) is its
backend's ``ContextCatalog`` (``app.backends.protocols``); ``Store`` keeps the logic: the
public API's contracts and errors, the open contexts and their LRU, and the lock order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

import icontract

from app.backends.local import LocalBackend
from app.backends.local.contexts import FORMAT_VERSION
from app.backends.protocols import Access, Backend, ContextCatalog
from app.backends.registry import backend_for, scheme_of
from app.backends.upgrade import create_current
from app.core import layout
from app.core.contracts import EXPENSIVE, ensure, invariant, require
from app.core.errors import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    SchemaVersionError,
    StorageError,
)
from app.core.locks import Lock
from app.core.maintenance_types import GcReport
from app.core.rules import ContextName, Flag, OnConflict, UserPath, checked
from app.core.schemas import IntegrityReport
from app.core.transfer_types import ContextState, Manifest
from app.core.workflow_types import WorkflowStatus
from app.managers.access import AuditLog, TokenManager
from app.managers.buffer import close_buffers
from app.managers.context import Context
from app.managers.maintenance.gc import GRACE, collect
from app.managers.stats import store_stats
from app.managers.transfer import export_context, import_context, load_context, save_context
from app.managers.workflows import WorkflowManager

MAX_OPEN_CONTEXTS = 32
"""Contexts of one ``Store`` whose index stays open between uses (about 3 files each): the
least recently used beyond this are closed (and reopen on their next use)."""


def given_root(root: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    """The root as given, or ``$CTXSTORE_ROOT``, or ``storage``: a directory or a URL."""
    if root is None:
        return os.environ.get("CTXSTORE_ROOT") or "storage"
    return root


@checked
def resolve_root(root: UserPath | None) -> Path:
    """The absolute store folder: ``root``, else ``$CTXSTORE_ROOT``, else ``./storage``."""
    root = given_root(root)
    return Path(root).expanduser().absolute()


@invariant(lambda self: not self._closed or not self._open, "a closed store holds no open context")
class Store(icontract.DBC):
    """A store holding named contexts and a workflow tracker."""

    def __init__(self, backend: Backend) -> None:
        """The store kept by ``backend`` (its catalogue of contexts, records, tracker, files
        and documents); ``open_store`` checks or creates it first."""
        self.backend = backend
        self._catalog: ContextCatalog = backend.catalog()
        self.root = self._catalog.root
        self._trust_dir = layout.trust_dir(self.root)
        self._open: dict[str, Context] = {}
        self._guard = threading.Lock()
        self._closed = False
        self.max_open_contexts = MAX_OPEN_CONTEXTS
        self._recent: OrderedDict[int, Context] = OrderedDict()  # open indexes, LRU first
        self._last: Context | None = None
        self._recent_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @ensure(lambda self: not self._open, "no context stays open")
    def close(self) -> None:
        """Flush this store's append buffers, release index connections and the tracker."""
        close_buffers(self.root)  # accepted buffer items are written first (docs/api.md)
        with self._guard:
            for ctx in self._open.values():
                ctx.close()
            self._open.clear()
        with self._recent_guard:
            self._recent.clear()
            self._last = None
        wf = self.__dict__.get("workflows")
        if wf is not None:
            wf.close()
        access = self.__dict__.get("_access")
        if access is not None:
            access.close()
        self.backend.close()
        self._closed = True

    @icontract.snapshot(lambda self: self.contexts(), name="contexts", enabled=EXPENSIVE)
    @ensure(lambda self, OLD: self.contexts() == OLD.contexts, "recovery adds or hides no context")
    def recover(self) -> None:
        """Check every context's index version and recover those no writer is busy with
        (torn log tails cut, indexes caught up). Busy ones recover on first use. Each context
        is closed again afterwards (``open_store`` does not call this: contexts open and
        recover lazily, on first use, so opening a store holds no context's files)."""
        self.check_versions()
        for name in self.contexts():
            ctx = self.context(name, create=False)
            try:
                ctx.recover_if_idle()
            except SchemaVersionError:
                raise
            except StorageError:  # damage or a read-only store: raised on use, listed by verify
                continue
            finally:
                ctx.release()

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    @ensure(lambda self: not self._closed, "returns only while the store is open")
    def check_open(self) -> None:
        """``StorageError`` if the store was closed (open it again with ``open_store``)."""
        if self._closed:
            raise StorageError(
                f"{self.backend.url}: the store is closed; open it again with open_store()"
            )

    @icontract.snapshot(lambda self: len(self._open), name="opened", enabled=EXPENSIVE)
    @ensure(lambda self, OLD: len(self._open) == OLD.opened, "checking versions opens no context")
    def check_versions(self) -> None:
        """``SchemaVersionError`` if a context's index was written by an unknown version (each
        index is opened read-only and closed again)."""
        self._catalog.check_versions()

    def _touch(self, ctx: Context) -> None:
        """Called by a context of this store at the start of each operation: keeps at most
        ``max_open_contexts`` contexts' indexes open, closing the least recently used (a
        context some thread is inside stays open until a later call)."""
        if self._last is ctx:
            return
        with self._recent_guard:
            self._last = ctx
            recent = self._recent
            recent[id(ctx)] = ctx
            recent.move_to_end(id(ctx))
            excess = len(recent) - self.max_open_contexts
            if excess <= 0:
                return
            for key, old in list(recent.items())[:excess]:
                if old.release():
                    del recent[key]

    def _forget_open(self, ctx: Context) -> None:
        with self._recent_guard:
            self._recent.pop(id(ctx), None)
            if self._last is ctx:
                self._last = None

    # -- contexts -----------------------------------------------------------------------

    @ensure(lambda result: len(set(result)) == len(result), "each context is listed once")
    def contexts(self) -> list[str]:
        """Names of the store's contexts, sorted."""
        return self._catalog.names()

    @checked
    @ensure(lambda name, result: result.name == name, "the context asked for")
    def context(self, name: ContextName = "default", *, create: bool = True) -> Context:
        """Open (and by default create) a context."""
        self.check_open()
        with self._guard:
            catalog = self._catalog
            ctx = self._open.get(name)
            if ctx is not None and catalog.present(name):
                return ctx
            if ctx is not None:  # dropped or replaced by another process: reopened below
                ctx.close()
            path = catalog.folder(name)  # IntegrityError for a link
            # a folder with a context's files but no context.json is a damaged context: it is
            # opened (and raises IntegrityError on use), never silently re-created empty
            if not catalog.present(name):
                if not create:
                    raise NotFoundError(f"context {name!r} not found in {self.backend.url}")
                with catalog.writer_lock.hold():
                    catalog.create(name)
            if ctx is not None:
                self._forget_open(ctx)
            ctx = Context(name, path, self._trust_dir, backend=self.backend)
            ctx.on_use = self._touch
            self._open[name] = ctx
            return ctx

    @checked
    @ensure(lambda self, name: name not in self.contexts(), "the context is gone")
    def drop_context(self, name: ContextName) -> None:
        """Delete a context and everything in it."""
        with self._catalog.writer_lock.hold():
            self._catalog.drop(name, lambda: self._releasing(name))

    @contextlib.contextmanager
    def _releasing(self, name: str) -> Iterator[None]:
        """Around a context's removal: its writer lock held, the context closed, and no
        longer open afterwards."""
        ctx = self.context(name, create=False)
        with ctx.writer_lock.hold():
            ctx.close()
            yield
            with self._guard:
                self._open.pop(name, None)
            self._forget_open(ctx)

    # -- whole-store operations -----------------------------------------------------------

    @cached_property
    def workflows(self) -> WorkflowManager:
        return WorkflowManager(
            layout.workflows_dir(self.root), self, tracker=self.backend.tracker()
        )

    @cached_property
    def _access(self) -> Access:
        return self.backend.access()

    @cached_property
    def tokens(self) -> TokenManager:
        """The HTTP service's bearer tokens (docs/api.md, "Service security")."""
        return TokenManager(self._access)

    @cached_property
    def audit(self) -> AuditLog:
        """The HTTP service's chained audit log (docs/api.md, "Service security")."""
        return AuditLog(self._access)

    @ensure(lambda result: result.ok == (not result.problems), "ok means no problem was found")
    def verify(self) -> IntegrityReport:
        """Verify every context, the workflow tracker and the audit log's chain."""
        problems: list[str] = []
        checked: list[str] = []
        try:
            self._catalog.check()
        except IntegrityError as exc:  # a link or a file where the contexts folder belongs
            return IntegrityReport(ok=False, problems=[str(exc)], checked=checked)
        for name in self.contexts():
            try:
                report = self.context(name, create=False).verify()
            except (IntegrityError, NotFoundError) as exc:
                problems.append(str(exc))
                continue
            problems += report.problems
            checked += report.checked
        wf_problems = self.workflows.verify()
        problems += wf_problems
        checked.append(str(layout.workflows_dir(self.root)))
        try:
            problems += self.audit.verify()
        except StorageError as exc:  # no trust key here, or the access file unreadable
            problems.append(f"{self._access.where()}: the audit log cannot be verified: {exc}")
        checked.append(self._access.where())
        return IntegrityReport(ok=not problems, problems=problems, checked=checked)

    @checked
    @require(
        lambda keep_model_versions: (
            keep_model_versions is None
            or (
                isinstance(keep_model_versions, int)
                and not isinstance(keep_model_versions, bool)
                and keep_model_versions >= 1
            )
        ),
        "keep_model_versions",
        "must be None or a positive integer",
    )
    @require(
        lambda workflows_older_than: (
            workflows_older_than is None
            or (
                isinstance(workflows_older_than, dt.timedelta)
                and workflows_older_than >= dt.timedelta(0)
            )
        ),
        "workflows_older_than",
        "must be None or a non-negative datetime.timedelta",
    )
    @require(
        lambda compact_ratio: (
            compact_ratio is None
            or (
                isinstance(compact_ratio, int | float)
                and not isinstance(compact_ratio, bool)
                and 0 <= compact_ratio < 1
            )
        ),
        "compact_ratio",
        "must be None or a number in [0, 1)",
    )
    @require(
        lambda grace: isinstance(grace, dt.timedelta) and grace >= dt.timedelta(0),
        "grace",
        "must be a non-negative datetime.timedelta",
    )
    @ensure(lambda dry_run, result: result.dry_run == dry_run, "the report says which mode ran")
    def gc(
        self,
        *,
        dry_run: Flag = True,
        keep_model_versions: int | None = None,
        workflows_older_than: dt.timedelta | None = None,
        compact_ratio: float | None = None,
        grace: dt.timedelta = GRACE,
    ) -> GcReport:
        """Remove what the store no longer needs; ``dry_run`` (the default) only reports
        exactly what a real run would remove (docs/api.md, "Garbage collection")."""
        self.check_open()
        return collect(
            self,
            dry_run=dry_run,
            keep_model_versions=keep_model_versions,
            workflows_older_than=workflows_older_than,
            compact_ratio=compact_ratio,
            grace=grace,
        )

    # -- the store's directory (``ContextHost``, used by transfer and workflows) ------------

    @property
    def contexts_dir(self) -> Path:
        """The folder holding one folder per context."""
        return self._catalog.contexts_dir

    @property
    def trust_dir(self) -> Path:
        """The trust marks of pickled models (docs/api.md, "Models")."""
        return self._trust_dir

    @property
    def writer_lock(self) -> Lock:
        """The store's writer lock (held to create, drop and install contexts)."""
        return self._catalog.writer_lock

    @checked
    def exists(self, name: ContextName) -> bool:
        """Whether the context ``name`` exists (its ``context.json`` is a file)."""
        return self._catalog.exists(name)

    @require(
        lambda purpose: purpose in layout.STAGING_PURPOSES,
        "purpose",
        f"must be one of {', '.join(layout.STAGING_PURPOSES)}",
    )
    @contextlib.contextmanager
    def staging(self, purpose: str) -> Iterator[Path]:
        """A fresh private folder ``<contexts>/.<purpose>-<hex>``, locked while in use
        (``app.backends.local.staging``), removed afterwards unless it was installed. Dot
        names are never listed as contexts."""
        with self._catalog.staging(purpose) as path:
            yield path

    @checked
    @ensure(lambda name, result: result.name == name, "a context of that name")
    def open_staged(self, name: ContextName, folder: Path, *, trusted: bool) -> Context:
        """A ``Context`` named ``name`` on the staged folder ``folder`` (close it after use);
        untrusted: an empty private trust folder inside ``folder``. A staged copy is a local
        folder on every backend (``LocalBackend.at``)."""
        trust = self._trust_dir if trusted else folder / layout.NO_TRUST_DIR
        return Context(name, folder, trust, backend=LocalBackend.at(name, folder))

    @checked
    @ensure(lambda self, name: self.exists(name), "the context is in place")
    def install(self, name: ContextName, staged: Path, *, replace: bool) -> None:
        """Make ``staged`` the context ``name``: a rename when it is new; with ``replace`` an
        atomic exchange with the live directory (two renames where the kernel cannot exchange;
        ``staged`` then holds the old content, removed by its staging block). The caller holds
        ``writer_lock`` and, when replacing, the live context's writer lock."""
        self._catalog.install(name, staged, replace=replace, forget=lambda: self.forget(name))

    @checked
    @ensure(lambda self, name: name not in self._open, "the context is no longer open")
    def forget(self, name: ContextName) -> None:
        """Close and drop the open ``Context`` of ``name`` (its files were replaced)."""
        with self._guard:
            ctx = self._open.pop(name, None)
        if ctx is not None:
            ctx.close()
            self._forget_open(ctx)

    # -- whole contexts (app.managers.transfer) ------------------------------------------

    @checked
    @ensure(lambda name, result: result.context == name, "the manifest names the context")
    def save_context(self, name: ContextName, state: ContextState | Mapping[str, Any]) -> Manifest:
        """Replace a context's content by ``state`` (docs/api.md, "Whole contexts")."""
        return save_context(self, name, state)

    @checked
    @ensure(lambda result: isinstance(result, ContextState), "the context's content")
    def load_context(self, name: ContextName) -> ContextState:
        """The whole content of a context (docs/api.md, "Whole contexts")."""
        return load_context(self, name)

    @checked
    def export_context(self, name: ContextName, dest: UserPath) -> Manifest:
        """Write a consistent snapshot of a context to a ``.tar.gz`` with a manifest."""
        return export_context(self, name, Path(dest))

    @checked
    def import_context(
        self, src: UserPath, *, name: ContextName | None = None, on_conflict: OnConflict = "fail"
    ) -> Manifest:
        """Import an archive written by ``export_context`` after checking all of it."""
        return import_context(self, Path(src), name=name, on_conflict=on_conflict)

    @ensure(lambda result: "contexts" in result and "bytes" in result, "stats cover contexts")
    def stats(self) -> dict[str, Any]:
        """Sizes and counts per context and part."""
        local = isinstance(self.backend, LocalBackend)
        return store_stats(self, self._workflow_metrics(), where=self.backend.url, local=local)

    def _workflow_metrics(self) -> dict[str, Any]:
        """The tracker's metrics; a store that never ran a workflow has no tracker, and reading
        stats must not create one (reads never write, docs/api.md "Guarantees"); a server
        backend's tracker reads create nothing."""
        if not isinstance(self.backend, LocalBackend) or layout.tracker(self.root).is_file():
            return self.workflows.metrics()
        return {
            "by_status": {s.value: 0 for s in WorkflowStatus},
            "by_type": {},
            "total": 0,
            "items_processed": 0,
            "completed_items": 0,
            "mean_duration_s": None,
            "items_per_s": None,
        }


@checked
def open_store(
    root: UserPath | None = None, *, create: Flag = True, files: UserPath | None = None
) -> Store:
    """Open the store at ``root`` (default ``$CTXSTORE_ROOT`` or ``./storage``): a directory,
    or a URL served by a registered backend (``app.backends.registry``); a ``postgresql://``
    store keeps its files under ``files`` (default ``$CTXSTORE_FILES``; docs/api.md,
    "Scale out")."""
    given = given_root(root)
    if scheme_of(given) is None:
        given = resolve_root(given)
    # a URL reaches its registered backend; the registry raises InvalidInput (argument root,
    # password redacted) for a scheme no backend of this version serves
    backend = backend_for(given, None if files is None else os.fspath(files))
    try:
        backend.catalog().open(create=create)
        if create:
            create_current(backend)  # every part's tables, at this version (PostgreSQL)
        store = Store(backend)
        store.check_versions()  # contexts open, and recover, on first use
        backend.catalog().sweep()  # leftovers of killed operations (never live ones)
    except BaseException:
        backend.close()
        raise
    return store


__all__ = ["FORMAT_VERSION", "ConflictError", "Store", "open_store"]
