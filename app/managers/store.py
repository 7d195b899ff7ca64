"""``Store`` and ``open_store``: the store directory, its format version and its contexts."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import threading
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import icontract
import orjson

from app.core.atomic import fsync_dir, write_atomic
from app.core.contracts import EXPENSIVE, ensure, invariant, require, valid_name
from app.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    SchemaVersionError,
    StorageError,
    io_error,
)
from app.core.locks import WriterLock
from app.core.names import child, is_valid_name
from app.core.nofollow import exists_as
from app.core.schemas import IntegrityReport
from app.formats.sqlindex import check_index_version
from app.managers.buffer import close_buffers
from app.managers.context import Context
from app.managers.ctxfiles import is_context_folder
from app.managers.records.catalog import Catalog
from app.managers.staging import holding, sweep

if TYPE_CHECKING:
    from app.managers.workflows import WorkflowManager

FORMAT_VERSION = 1
MARKER = "ctxstore.json"
MAX_OPEN_CONTEXTS = 32
"""Contexts of one ``Store`` whose index stays open between uses (about 3 files each): the
least recently used beyond this are closed (and reopen on their next use)."""


def _version() -> str:
    from app import __version__

    return __version__


def _path_ok(value: object) -> bool:
    """A file-system path a user gave: a str or path-like without NUL."""
    try:
        text = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return isinstance(text, str) and "\0" not in text and text != ""


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    if root is None:
        root = os.environ.get("CTXSTORE_ROOT") or "storage"
    if not _path_ok(root):
        raise InvalidInput("root: must be a non-empty path without NUL characters")
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

    def __init__(self, root: Path) -> None:
        self.root = root
        self._contexts_dir = root / "contexts"
        self._trust_dir = root / "trust"
        self._lock = WriterLock(root / ".store.lock")
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
        close_buffers(self.root)  # SPEC 22: accepted buffer items are written first
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
            check_index_version(self._contexts_dir / name / f"{name}.sqlite")

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

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @ensure(lambda name, result: result.name == name, "the context asked for")
    def context(self, name: str = "default", *, create: bool = True) -> Context:
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
            if not (path / "context.json").is_file() and not (
                path.is_dir() and is_context_folder(path)
            ):
                if not create:
                    raise NotFoundError(f"context {name!r} not found in {self.root}")
                self._create_context(name, path)
            if ctx is not None:
                self._forget_open(ctx)
            ctx = Context(name, path, self._trust_dir)
            ctx.on_use = self._touch
            self._open[name] = ctx
            return ctx

    def _create_context(self, name: str, path: Path) -> None:
        with self._lock.hold():
            if (path / "context.json").is_file() or (path.is_dir() and is_context_folder(path)):
                return
            try:
                path.mkdir(parents=True, exist_ok=True)
                fsync_dir(self._contexts_dir)
            except OSError as exc:
                raise io_error("creating", path, exc) from exc
            write_atomic(path / "context.json", Catalog.initial(name))

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @ensure(lambda self, name: name not in self.contexts(), "the context is gone")
    def drop_context(self, name: str) -> None:
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
            with holding(path), ctx._lock.hold():
                ctx.close()
                trash = self._contexts_dir / f".dropped-{name}-{os.urandom(4).hex()}"
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
        from app.managers.workflows import WorkflowManager

        return WorkflowManager(self.root / "workflows", self)

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
        checked.append(str(self.root / "workflows"))
        return IntegrityReport(ok=not problems, problems=problems, checked=checked)

    # -- whole contexts (implemented in app.managers.transfer) ---------------------------

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    def save_context(self, name: str, state: Any) -> Any:
        """Replace a context's content by ``state`` (an ``app.ContextState``)."""
        from app.managers.transfer import save_context

        return save_context(self, name, state)

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    def load_context(self, name: str) -> Any:
        """The whole content of a context as an ``app.ContextState``."""
        from app.managers.transfer import load_context

        return load_context(self, name)

    @require(lambda name: valid_name(name, "name"), "name", "invalid")
    @require(lambda dest: _path_ok(dest), "dest", "must be a non-empty path without NUL")
    def export_context(self, name: str, dest: str | os.PathLike[str]) -> Any:
        """Write a consistent snapshot of a context to a ``.tar.gz`` with a manifest."""
        from app.managers.transfer import export_context

        return export_context(self, name, Path(dest))

    @require(lambda name: name is None or valid_name(name, "name"), "name", "invalid")
    @require(lambda src: _path_ok(src), "src", "must be a non-empty path without NUL")
    @require(
        lambda on_conflict: on_conflict in ("fail", "overwrite", "merge", "skip"),
        "on_conflict",
        "must be one of fail, overwrite, merge, skip",
    )
    def import_context(
        self, src: str | os.PathLike[str], *, name: str | None = None, on_conflict: str = "fail"
    ) -> Any:
        """Import an archive written by ``export_context`` after checking all of it."""
        from app.managers.transfer import import_context

        return import_context(self, Path(src), name=name, on_conflict=on_conflict)

    @ensure(lambda result: "contexts" in result and "bytes" in result, "stats cover contexts")
    def stats(self) -> dict[str, Any]:
        """Sizes and counts per context and part."""
        from app.managers.stats import store_stats

        return store_stats(self)


@require(lambda create: isinstance(create, bool), "create", "must be a bool")
def open_store(root: str | os.PathLike[str] | None = None, *, create: bool = True) -> Store:
    """Open the store at ``root`` (default ``$CTXSTORE_ROOT`` or ``./storage``)."""
    path = resolve_root(root)
    marker = path / MARKER
    if not marker.is_file():
        if path.exists() and not path.is_dir():
            raise InvalidInput(f"root: {path} exists and is not a directory")
        if not create:
            raise NotFoundError(f"no store at {path}")
        try:
            path.mkdir(parents=True, exist_ok=True)
            with WriterLock(path / ".store.lock").hold():
                if not marker.is_file():
                    meta = {
                        "format_version": FORMAT_VERSION,
                        "created_at": dt.datetime.now(dt.UTC).isoformat(),
                        "created_by": f"ctxstore {_version()}",
                    }
                    write_atomic(marker, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            raise io_error("creating store", path, exc) from exc
    _check_marker(marker)
    if create:  # open_store(create=False) never writes (SPEC 22)
        with contextlib.suppress(OSError):
            (path / "contexts").mkdir(exist_ok=True)
    store = Store(path)
    store.check_versions()  # contexts open, and recover, on first use
    with contextlib.suppress(StorageError):  # leftovers of killed operations (never live ones)
        sweep(path / "contexts")
    return store


__all__ = ["FORMAT_VERSION", "ConflictError", "Store", "open_store"]
