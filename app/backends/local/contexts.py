"""``LocalContexts``: the embedded backend's catalogue of contexts.

See docs/api.md, "Opening a store" and "Contexts".

The store directory holds ``ctxstore.json`` (the marker: the store's format version), a lock
file and ``contexts/``, one folder per context (a context is a folder with a ``context.json`` or
any other file, ``ctxfiles.is_context_folder``). Whole-context operations stage in private dot
folders of ``contexts/`` (``staging``) and are put in place by a rename or an atomic exchange
(``swap``). ``app.managers.store.Store`` keeps the logic and calls this through
``app.backends.protocols.ContextCatalog``. Every name comes from ``app.core.layout``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

import orjson

from app.backends.local.ctxfiles import is_context_folder
from app.backends.local.ctxfiles import layout_problems as folder_problems
from app.backends.local.records.catalog import Catalog
from app.backends.local.staging import holding, staging_folder, sweep
from app.backends.local.swap import fsync_tree, refuse_linked_target, swap_in
from app.core import layout
from app.core.atomic import fsync_dir, write_atomic
from app.core.clock import utc_iso
from app.core.errors import (
    IntegrityError,
    InvalidInput,
    NotFoundError,
    SchemaVersionError,
    StorageError,
    io_error,
)
from app.core.locks import WriterLock
from app.core.names import child, is_valid_name
from app.core.nofollow import exists_as, open_regular, read_regular
from app.core.version import __version__
from app.formats.sqlindex import check_index_version

FORMAT_VERSION = 1
"""The store format this version reads and writes (``ctxstore.json``'s ``format_version``)."""


def check_marker(path: Path) -> None:
    """``IntegrityError`` for a damaged store description, ``SchemaVersionError`` for a format
    this version does not read."""
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


class LocalContexts:
    """The contexts of the store directory ``root`` (one folder each under ``contexts/``)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._contexts_dir = layout.contexts_dir(root)
        self._lock = WriterLock(root / layout.STORE_LOCK)

    def __repr__(self) -> str:
        return f"LocalContexts({str(self._root)!r})"

    @property
    def root(self) -> Path:
        return self._root

    @property
    def contexts_dir(self) -> Path:
        return self._contexts_dir

    @property
    def writer_lock(self) -> WriterLock:
        return self._lock

    # -- the store ------------------------------------------------------------------------

    def open(self, *, create: bool) -> None:
        root = self._root
        marker = layout.marker(root)
        if not marker.is_file():
            if root.exists() and not root.is_dir():
                raise InvalidInput(f"root: {root} exists and is not a directory")
            if not create:
                raise NotFoundError(f"no store at {root}")
            try:
                root.mkdir(parents=True, exist_ok=True)
                with self._lock.hold():
                    if not marker.is_file():
                        meta = {
                            "format_version": FORMAT_VERSION,
                            "created_at": utc_iso(),
                            "created_by": f"ctxstore {__version__}",
                        }
                        write_atomic(marker, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
            except OSError as exc:
                raise io_error("creating store", root, exc) from exc
        check_marker(marker)
        if create:  # open_store(create=False) never writes (docs/api.md, "Guarantees")
            with contextlib.suppress(OSError):
                self._contexts_dir.mkdir(exist_ok=True)

    def sweep(self) -> None:
        with contextlib.suppress(StorageError):  # leftovers of killed operations only
            sweep(self._contexts_dir)

    def check(self) -> None:
        exists_as(self._contexts_dir, "dir")

    def check_versions(self) -> None:
        for name in self.names():
            check_index_version(self._contexts_dir / name / layout.index_name(name))

    # -- contexts -------------------------------------------------------------------------

    def names(self) -> list[str]:
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

    def _path(self, name: str) -> Path:
        return child(self._contexts_dir, name, "name")

    def exists(self, name: str) -> bool:
        return layout.catalog(self._path(name)).is_file()

    def present(self, name: str) -> bool:
        path = self._path(name)
        return path.is_dir() and is_context_folder(path)

    def folder(self, name: str) -> Path:
        path = self._path(name)
        if path.is_symlink():  # never used through a link (nothing may be written there)
            raise IntegrityError(f"{path}: the context folder is a symbolic link")
        return path

    def create(self, name: str) -> None:
        path = self._path(name)
        if self.present(name):
            return
        try:
            path.mkdir(parents=True, exist_ok=True)
            fsync_dir(self._contexts_dir)
        except OSError as exc:
            raise io_error("creating", path, exc) from exc
        write_atomic(layout.catalog(path), Catalog.initial(name))

    def drop(self, name: str, release: Callable[[], AbstractContextManager[None]]) -> None:
        path = self._path(name)
        if path.is_symlink():  # a planted link: removed, its target left alone
            try:
                path.unlink()
                fsync_dir(self._contexts_dir)
            except OSError as exc:
                raise io_error("dropping", path, exc) from exc
            return
        if not self.present(name):  # damaged ones can be dropped
            raise NotFoundError(f"context {name!r} not found in {self._root}")
        with holding(path):  # the folder keeps its lock under the swept name it gets
            dropped = f"{layout.staging_prefix('dropped')}{name}-{os.urandom(4).hex()}"
            trash = self._contexts_dir / dropped
            with release():
                try:
                    os.replace(path, trash)
                    fsync_dir(self._contexts_dir)
                except OSError as exc:
                    raise io_error("dropping", path, exc) from exc
            shutil.rmtree(trash, ignore_errors=True)  # a sweep removes it if killed here

    # -- whole contexts ---------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self, purpose: str) -> Iterator[Path]:
        with staging_folder(self._contexts_dir, purpose) as path:
            yield path

    def catalog_document(self, name: str) -> bytes:
        path = layout.catalog(self.folder(name))
        try:
            return read_regular(path)
        except FileNotFoundError:
            raise NotFoundError(f"{path}: context description missing") from None

    def layout_problems(self, name: str) -> list[str]:
        return folder_problems(self.folder(name), name)

    def copy_log(self, name: str, collection: str, fh: IO[bytes]) -> int:
        return copy_log_file(self.folder(name) / layout.log_name(collection), fh)

    def install(
        self, name: str, staged: Path, *, replace: bool, forget: Callable[[], None]
    ) -> None:
        target = self._path(name)
        refuse_linked_target(target)  # never swap with, or merge into, a link
        try:
            fsync_tree(staged)
            if not replace:
                os.rename(staged, target)
                fsync_dir(self._contexts_dir)
                return
            if not layout.catalog(target).is_file():
                raise NotFoundError(f"context {name!r} not found in {self._root}")
            forget()
            swap_in(staged, target, name)
        except OSError as exc:
            raise io_error("installing context", target, exc) from exc


def copy_stream(src: IO[bytes], fh: IO[bytes], chunk: int = 4 << 20) -> int:
    """Copy ``src`` to ``fh`` to its end; returns the bytes copied."""
    done = 0
    while data := src.read(chunk):
        fh.write(data)
        done += len(data)
    return done


def copy_log_file(path: Path, fh: IO[bytes]) -> int:
    """Copy the log file ``path`` (never through a link) to ``fh``; returns the bytes;
    ``NotFoundError`` when it is missing."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise NotFoundError(f"{path}: the collection's log is missing") from None
    try:
        with os.fdopen(fd, "rb", closefd=False) as src:
            return copy_stream(src, fh)
    except OSError as exc:
        raise io_error("copying", path, exc) from exc
    finally:
        os.close(fd)


__all__ = ["FORMAT_VERSION", "LocalContexts", "check_marker", "copy_log_file", "copy_stream"]
