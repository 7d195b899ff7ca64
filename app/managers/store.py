"""``Store`` and ``open_store``: the store directory, its format version and its contexts."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

import icontract
import orjson

from app.backends.local import LocalBackend
from app.backends.local.ctxfiles import is_context_folder
from app.backends.local.records.catalog import Catalog
from app.backends.local.staging import holding, staging_folder, sweep
from app.backends.local.swap import fsync_tree, refuse_linked_target, swap_in
from app.backends.protocols import Backend
from app.backends.registry import backend_for, scheme_of
from app.core import layout
from app.core.atomic import fsync_dir, write_atomic
from app.core.clock import utc_iso
from app.core.contracts import EXPENSIVE, ensure, invariant, require
from app.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    SchemaVersionError,
    StorageError,
    io_error,
)
from app.core.locks import Lock, WriterLock
from app.core.names import child, is_valid_name
from app.core.nofollow import exists_as
from app.core.rules import ContextName, Flag, OnConflict, UserPath, checked
from app.core.schemas import IntegrityReport
from app.core.transfer_types import ContextState, Manifest
from app.core.version import __version__
from app.core.workflow_types import WorkflowStatus
from app.formats.sqlindex import check_index_version
from app.managers.buffer import close_buffers
from app.managers.context import Context
from app.managers.stats import store_stats
from app.managers.transfer import export_context, import_context, load_context, save_context
from app.managers.workflows import WorkflowManager

FORMAT_VERSION = 1
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


def _check_marker(path: Path) -> None:
    try:
        meta = orjson.loads(path.read_bytes())
        version = meta["format_version"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise IntegrityError(f"{path}: damaged store description") from None
    except OSError as exc:
        raise io_error("reading", path, exc) from exc
    if not isinstance(version, int) or isinstance(version, bool):
        raise IntegrityError(f"{path}: format_version must be an integer")
    if version > FORMAT_VERSION or version < 1:
        raise SchemaVersionError(
            f"{path}: store format {version} is unknown (this ctxstore reads {FORMAT_VERSION})"
        )


@invariant(lambda self: not self._closed or not self._open, "a closed store holds no open context")
class Store(icontract.DBC):
    """A store directory holding named contexts and a workflow tracker."""

    def __init__(self, root: Path, backend: Backend | None = None) -> None:
        """The store at ``root``; ``backend`` keeps its records, tracker, files and documents
        (default: the embedded ``LocalBackend`` of ``root``)."""
        self.root = root
        self.backend: Backend = backend if backend is not None else LocalBackend(root)
        self._contexts_dir = layout.contexts_dir(root)
        self._trust_dir = layout.trust_dir(root)
        self._lock = WriterLock(root / layout.STORE_LOCK)
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
            raise StorageError(f"{self.root}: the store is closed; open it again with open_store()")

    @icontract.snapshot(lambda self: len(self._open), name="opened", enabled=EXPENSIVE)
    @ensure(lambda self, OLD: len(self._open) == OLD.opened, "checking versions opens no context")
    def check_versions(self) -> None:
        """``SchemaVersionError`` if a context's index was written by an unknown version (each
        index is opened read-only and closed again)."""
        for name in self.contexts():
            check_index_version(self._contexts_dir / name / layout.index_name(name))

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
        if not self._contexts_dir.is_dir():
            return []
        try:
            entries = os.listdir(self._contexts_dir)
        except OSError as exc:  # EMFILE, EACCES...: not damage
            raise io_error("listing", self._contexts_dir, exc) from exc
        return sorted(
            name
            for name in entries
            if is_valid_name(name) and is_context_folder(self._contexts_dir / name)
        )

    @checked
    @ensure(lambda name, result: result.name == name, "the context asked for")
    def context(self, name: ContextName = "default", *, create: bool = True) -> Context:
        """Open (and by default create) a context."""
        self.check_open()
        with self._guard:
            ctx = self._open.get(name)
            if ctx is not None and ctx.path.is_dir() and is_context_folder(ctx.path):
                return ctx
            if ctx is not None:  # dropped or replaced by another process: reopened below
                ctx.close()
            path = child(self._contexts_dir, name, "name")
            if path.is_symlink():  # never used through a link (nothing may be written there)
                raise IntegrityError(f"{path}: the context folder is a symbolic link")
            # a folder with a context's files but no context.json is a damaged context: it is
            # opened (and raises IntegrityError on use), never silently re-created empty
            if not layout.catalog(path).is_file() and not (
                path.is_dir() and is_context_folder(path)
            ):
                if not create:
                    raise NotFoundError(f"context {name!r} not found in {self.root}")
                self._create_context(name, path)
            if ctx is not None:
                self._forget_open(ctx)
            ctx = Context(name, path, self._trust_dir, backend=self.backend)
            ctx.on_use = self._touch
            self._open[name] = ctx
            return ctx

    def _create_context(self, name: str, path: Path) -> None:
        with self._lock.hold():
            if layout.catalog(path).is_file() or (path.is_dir() and is_context_folder(path)):
                return
            try:
                path.mkdir(parents=True, exist_ok=True)
                fsync_dir(self._contexts_dir)
            except OSError as exc:
                raise io_error("creating", path, exc) from exc
            write_atomic(layout.catalog(path), Catalog.initial(name))

    @checked
    @ensure(lambda self, name: name not in self.contexts(), "the context is gone")
    def drop_context(self, name: ContextName) -> None:
        """Delete a context and everything in it."""
        path = child(self._contexts_dir, name, "name")
        with self._lock.hold():
            if path.is_symlink():  # a planted link: removed, its target left alone
                try:
                    path.unlink()
                    fsync_dir(self._contexts_dir)
                except OSError as exc:
                    raise io_error("dropping", path, exc) from exc
                return
            if not (path.is_dir() and is_context_folder(path)):  # damaged ones can be dropped
                raise NotFoundError(f"context {name!r} not found in {self.root}")
            ctx = self.context(name, create=False)
            with holding(path), ctx.writer_lock.hold():
                ctx.close()
                dropped = f"{layout.staging_prefix('dropped')}{name}-{os.urandom(4).hex()}"
                trash = self._contexts_dir / dropped
                try:
                    os.replace(path, trash)
                    fsync_dir(self._contexts_dir)
                except OSError as exc:
                    raise io_error("dropping", path, exc) from exc
                with self._guard:
                    self._open.pop(name, None)
                self._forget_open(ctx)
                shutil.rmtree(trash, ignore_errors=True)  # a sweep removes it if killed here

    # -- whole-store operations -----------------------------------------------------------

    @cached_property
    def workflows(self) -> WorkflowManager:
        return WorkflowManager(
            layout.workflows_dir(self.root), self, tracker=self.backend.tracker()
        )

    @ensure(lambda result: result.ok == (not result.problems), "ok means no problem was found")
    def verify(self) -> IntegrityReport:
        """Verify every context and the workflow tracker."""
        problems: list[str] = []
        checked: list[str] = []
        try:
            exists_as(self._contexts_dir, "dir")
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
        return IntegrityReport(ok=not problems, problems=problems, checked=checked)

    # -- the store's directory (``ContextHost``, used by transfer and workflows) ------------

    @property
    def contexts_dir(self) -> Path:
        """The folder holding one folder per context."""
        return self._contexts_dir

    @property
    def trust_dir(self) -> Path:
        """The trust marks of pickled models (docs/api.md, "Models")."""
        return self._trust_dir

    @property
    def writer_lock(self) -> Lock:
        """The store's writer lock (held to create, drop and install contexts)."""
        return self._lock

    @checked
    def exists(self, name: ContextName) -> bool:
        """Whether the context ``name`` exists (its ``context.json`` is a file)."""
        return layout.catalog(child(self._contexts_dir, name, "name")).is_file()

    @require(
        lambda purpose: purpose in layout.STAGING_PURPOSES,
        "purpose",
        f"must be one of {', '.join(layout.STAGING_PURPOSES)}",
    )
    @contextlib.contextmanager
    def staging(self, purpose: str) -> Iterator[Path]:
        """A fresh private folder ``<contexts>/.<purpose>-<hex>``, locked while in use
        (``app.managers.staging``), removed afterwards unless it was installed. Dot names are
        never listed as contexts."""
        with staging_folder(self._contexts_dir, purpose) as path:
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
        target = child(self._contexts_dir, name, "name")
        refuse_linked_target(target)  # never swap with, or merge into, a link
        try:
            fsync_tree(staged)
            if not replace:
                os.rename(staged, target)
                fsync_dir(self._contexts_dir)
                return
            if not layout.catalog(target).is_file():
                raise NotFoundError(f"context {name!r} not found in {self.root}")
            self.forget(name)
            swap_in(staged, target, name)
        except OSError as exc:
            raise io_error("installing context", target, exc) from exc

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
        return store_stats(self, self._workflow_metrics())

    def _workflow_metrics(self) -> dict[str, Any]:
        """The tracker's metrics; a store that never ran a workflow has no tracker, and reading
        stats must not create one (reads never write, docs/api.md "Guarantees")."""
        if layout.tracker(self.root).is_file():
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
def open_store(root: UserPath | None = None, *, create: Flag = True) -> Store:
    """Open the store at ``root`` (default ``$CTXSTORE_ROOT`` or ``./storage``): a directory,
    or a URL served by a registered backend (``app.backends.registry``)."""
    given = given_root(root)
    if scheme_of(given) is not None:
        # a server backend; the registry raises InvalidInput (password redacted) for a scheme
        # no backend of this version serves
        backend = backend_for(given)
        raise InvalidInput(
            f"root: {backend.url}: this version of ctxstore opens stores in a directory only",
            argument="root",
        )
    path = resolve_root(given)
    marker = layout.marker(path)
    if not marker.is_file():
        if path.exists() and not path.is_dir():
            raise InvalidInput(f"root: {path} exists and is not a directory")
        if not create:
            raise NotFoundError(f"no store at {path}")
        try:
            path.mkdir(parents=True, exist_ok=True)
            with WriterLock(path / layout.STORE_LOCK).hold():
                if not marker.is_file():
                    meta = {
                        "format_version": FORMAT_VERSION,
                        "created_at": utc_iso(),
                        "created_by": f"ctxstore {__version__}",
                    }
                    write_atomic(marker, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            raise io_error("creating store", path, exc) from exc
    _check_marker(marker)
    if create:  # open_store(create=False) never writes (docs/api.md, "Guarantees")
        with contextlib.suppress(OSError):
            layout.contexts_dir(path).mkdir(exist_ok=True)
    store = Store(path, backend_for(path))
    store.check_versions()  # contexts open, and recover, on first use
    with contextlib.suppress(StorageError):  # leftovers of killed operations (never live ones)
        sweep(layout.contexts_dir(path))
    return store


__all__ = ["FORMAT_VERSION", "ConflictError", "Store", "open_store"]
