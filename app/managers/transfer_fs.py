"""File-system helpers of whole-context transfer: staging directories inside the store,
snapshot copies (hard links for files that are only ever replaced by rename), hashing, and the
(as atomic as the kernel allows) swap of a staged directory with a live context.

Nothing here follows a symbolic link (``app.core.nofollow``): a link anywhere in a context
that is exported, merged into or overwritten is damage (``IntegrityError`` naming it). The
hashes export computes for its manifest are compared with the SHA-256 each embedding shard
and model file has on record, so an export never packs a damaged file (its archive would
fail its own import).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.atomic import fsync_dir
from app.core.errors import IntegrityError, NotFoundError, io_error
from app.core.names import child
from app.core.nofollow import exists_as, open_regular, refuse_links, tree_files

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


def sha256_file(path: Path) -> tuple[int, str]:
    """``(size, sha256)`` of the regular file ``path`` (never through a link), read in big
    buffers with ``readinto`` so that hashlib releases the GIL while it hashes."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    try:
        fd = open_regular(path)
    except FileNotFoundError as exc:
        raise io_error("reading", path, exc) from exc
    try:
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as fh:
            size = 0
            while n := fh.readinto(view):
                digest.update(view[:n])
                size += n
    except OSError as exc:
        raise io_error("reading", path, exc) from exc
    finally:
        view.release()
        os.close(fd)
    return size, digest.hexdigest()


def hash_files(
    paths: Sequence[Path],
    threads: int = 2,
    *,
    expected: Mapping[Path, tuple[int, str]] | None = None,
) -> list[tuple[int, str]]:
    """``(size, sha256)`` of each path, hashed on a small thread pool (hashlib drops the GIL).
    A path in ``expected`` must be among ``paths`` and have that ``(size, sha256)``:
    otherwise ``IntegrityError`` naming it (the file is missing or damaged; nothing may be
    written from it)."""
    want = expected or {}
    missing = sorted(set(want) - set(paths))
    if missing:
        raise IntegrityError(
            f"{missing[0]}: on record but missing (refusing to write an archive that would "
            "not import)" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
        )

    def one(p: Path) -> tuple[int, str]:
        got = sha256_file(p)
        record = want.get(p)
        if record is not None and got != record:
            what = "size" if got[0] != record[0] else "SHA-256"
            raise IntegrityError(
                f"{p}: {what} differs from the store's record (the file is damaged; "
                "refusing to write an archive that would not import)"
            )
        return got

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(one, paths))


def recorded_digests(root: Path) -> dict[Path, tuple[int, str]]:
    """``(size, sha256)`` on record for every embedding shard and model file of the context
    (or staged copy) at ``root``, read from the checksummed ``metadata.json`` and model
    records there; damaged records raise ``IntegrityError`` naming them."""
    from app.managers.embeddings import recorded_files as embedding_files
    from app.managers.models import recorded_files as model_files

    out: dict[Path, tuple[int, str]] = {}
    for part, listing in (("embeddings", embedding_files), ("models", model_files)):
        for rel, record in listing(root / part).items():
            out[root / part / rel] = record
    return out


def relative_files(root: Path) -> list[str]:
    """Regular files below ``root`` as sorted POSIX relative paths, skipping dot names
    (locks, temp files); a link or special file raises ``IntegrityError`` naming it."""
    return tree_files(root)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same file system), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        copy_file(src, dst)


def snapshot_tree(src: Path, dst: Path) -> list[str]:
    """Link every file of ``src`` into ``dst`` (files there are only ever replaced by
    rename, so a link is a consistent snapshot); returns their relative paths. ``src`` or
    anything below it being a symbolic link (or ``src`` a file) is damage."""
    files = relative_files(src) if exists_as(src, "dir") else []
    for rel in files:
        link_or_copy(src / rel, dst / rel)
    return files


def copy_file(src: Path, dst: Path) -> None:
    """Copy the regular file ``src`` (never through a link) to ``dst``."""
    try:
        fd = open_regular(src)
    except FileNotFoundError as exc:
        raise io_error("copying", src, exc) from exc
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(fd, "rb", closefd=False) as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, HASH_CHUNK)
    except OSError as exc:
        raise io_error("copying", src, exc) from exc
    finally:
        os.close(fd)


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
    if os.path.lexists(target):  # the live side: never swap with, or merge into, a link
        refuse_links(target)
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
