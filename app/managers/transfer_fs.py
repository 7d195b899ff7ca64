"""File-system helpers of whole-context transfer: staging directories inside the store,
snapshot copies (hard links for files that are only ever replaced by rename), hashing, and the
(as atomic as the kernel allows) swap of a staged directory with a live context.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.atomic import fsync_dir
from app.core.errors import NotFoundError, io_error
from app.core.names import child

if TYPE_CHECKING:
    from app.managers.store import Store

HASH_CHUNK = 4 << 20
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def contexts_dir(store: Store) -> Path:
    return store.root / "contexts"


@contextlib.contextmanager
def staging(store: Store, purpose: str) -> Iterator[Path]:
    """A fresh private directory ``<root>/contexts/.<purpose>-<hex>``, locked while in use
    (``app.managers.staging``), removed afterwards unless it was renamed away. Dot names are
    never listed as contexts."""
    from app.managers.staging import staging_folder

    with staging_folder(contexts_dir(store), purpose) as path:
        yield path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise io_error("reading", path, exc) from exc
    return digest.hexdigest()


def hash_files(paths: Sequence[Path], threads: int = 2) -> list[tuple[int, str]]:
    """``(size, sha256)`` of each path, hashed on a small thread pool (hashlib drops the GIL)."""

    def one(p: Path) -> tuple[int, str]:
        return p.stat().st_size, sha256_file(p)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(one, paths))


def relative_files(root: Path) -> list[str]:
    """Regular files below ``root`` as sorted POSIX relative paths, skipping dot names
    (locks, temp files) and anything that is not a plain file or directory."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d))
        )
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            if f.startswith(".") or os.path.islink(full) or not os.path.isfile(full):
                continue
            out.append(Path(os.path.relpath(full, root)).as_posix())
    return sorted(out)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same file system), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        try:
            shutil.copy2(src, dst)
        except OSError as exc:
            raise io_error("copying", src, exc) from exc


def snapshot_tree(src: Path, dst: Path) -> list[str]:
    """Link every file of ``src`` into ``dst`` (files there are only ever replaced by
    rename, so a link is a consistent snapshot); returns their relative paths."""
    files = relative_files(src) if src.is_dir() else []
    for rel in files:
        link_or_copy(src / rel, dst / rel)
    return files


def copy_file(src: Path, dst: Path) -> None:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    except OSError as exc:
        raise io_error("copying", src, exc) from exc


def fsync_tree(root: Path) -> None:
    """fsync every file and directory below ``root`` (before it is renamed into place)."""
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with ``renameat2(RENAME_EXCHANGE)``; False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def forget(store: Store, name: str) -> None:
    """Close and drop the store's cached ``Context`` of ``name`` (its files were swapped)."""
    with store._guard:
        ctx = store._open.pop(name, None)
    if ctx is not None:
        ctx.close()


def install(store: Store, name: str, staged: Path, *, replace: bool) -> None:
    """Make ``staged`` the context ``name``: a rename when it is new; with ``replace`` an
    atomic exchange with the live directory (two renames where the kernel cannot exchange).
    The caller holds the store lock and, when replacing, the context's writer lock."""
    base = contexts_dir(store)
    target = child(base, name, "name")
    try:
        fsync_tree(staged)
        if not replace:
            os.rename(staged, target)
            fsync_dir(base)
            return
        if not (target / "context.json").is_file():
            raise NotFoundError(f"context {name!r} not found in {store.root}")
        forget(store, name)
        if _exchange(staged, target):
            fsync_dir(base)  # ``staged`` now holds the old content; the caller removes it
            return
        trash = base / f".replaced-{name}-{os.urandom(4).hex()}"
        os.rename(target, trash)
        try:
            os.rename(staged, target)
        except OSError:
            os.rename(trash, target)
            raise
        fsync_dir(base)
        shutil.rmtree(trash, ignore_errors=True)
    except OSError as exc:
        raise io_error("installing context", target, exc) from exc
