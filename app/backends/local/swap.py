"""Putting a staged context folder in place: a rename when the context is new, else an atomic
exchange with the live folder (``renameat2(RENAME_EXCHANGE)``; two renames where the kernel
cannot exchange). Used by the embedded context catalogue only (``app.backends.local.contexts``).

Everything staged is fsynced first, so what becomes visible is durable; nothing here follows a
symbolic link (the live side being a link is refused, ``app.core.nofollow``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

from app.core.atomic import fsync_dir
from app.core.layout import staging_prefix
from app.core.nofollow import refuse_links

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


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


def exchange(a: Path, b: Path) -> bool:
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


def refuse_linked_target(target: Path) -> None:
    """``IntegrityError`` if ``target`` exists and it or anything below it is a link (never
    swap with, or merge into, a link)."""
    if os.path.lexists(target):
        refuse_links(target)


def swap_in(staged: Path, target: Path, name: str) -> None:
    """Replace the folder ``target`` by ``staged``: afterwards ``staged`` holds the old content
    (the caller removes it) when the kernel exchanges; else the old content is renamed aside
    and removed here. ``staged`` was fsynced (``fsync_tree``)."""
    base = target.parent
    if exchange(staged, target):
        fsync_dir(base)
        return
    trash = base / f"{staging_prefix('replaced')}{name}-{os.urandom(4).hex()}"
    os.rename(target, trash)
    try:
        os.rename(staged, target)
    except OSError:
        os.rename(trash, target)
        raise
    fsync_dir(base)
    shutil.rmtree(trash, ignore_errors=True)


__all__ = ["exchange", "fsync_tree", "refuse_linked_target", "swap_in"]
