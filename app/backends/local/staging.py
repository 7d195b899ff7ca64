"""Staging folders inside a store and the sweep of those a killed process left behind.

Whole-context operations work in private folders of ``<root>/contexts`` whose names start with
a dot (never listed as contexts): ``.import-*``, ``.export-*``, ``.save-*``, ``.merge-*``, and
the old content of a context on its way out (``.dropped-*``, ``.replaced-*``). A process killed
mid-way leaves its folder behind; ``sweep`` removes such leftovers, never one still in use.

"In use" is a ``flock`` on the folder itself (a directory can be locked like a file), held by
the operation from the folder's creation to its removal, so it covers the long unlocked part of
an import (extracting and indexing before the store lock is taken). The lock dies with the
process, so a folder whose lock can be taken (non-blocking) belongs to nobody.

Creation races a sweep: a sweeper may see the folder between ``mkdir`` and ``flock``. The
creator therefore takes the lock non-blocking too and, once it has it, checks that the folder
it locked is still the one at the path; on either failure it lets the folder go (the sweeper
removes it) and starts again under a new name. A sweeper removes a folder only while holding
its lock, so the creator either locks first (the sweeper skips the folder) or finds it gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from app.core.errors import StorageError, io_error
from app.core.layout import STAGING_PURPOSES, staging_prefix

PREFIXES = tuple(staging_prefix(p) for p in STAGING_PURPOSES)
CREATE_ATTEMPTS = 100


class Leftover(NamedTuple):
    """A folder ``sweep`` removed (or, in a dry run, would remove) and its size in bytes."""

    path: Path
    bytes: int


def _lock(path: Path) -> int | None:
    """An fd holding an exclusive ``flock`` on the folder ``path``; None when another holder
    has it or the folder is gone (or is not a plain folder: links are never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symbolic link
            return None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _same(fd: int, path: Path) -> bool:
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _create_locked(base: Path, purpose: str) -> tuple[Path, int]:
    for _ in range(CREATE_ATTEMPTS):
        path = base / f"{staging_prefix(purpose)}{os.urandom(8).hex()}"
        path.mkdir(mode=0o700)
        fd = _lock(path)
        if fd is None:
            continue  # a sweeper locked it first and removes it
        if _same(fd, path):
            return path, fd
        os.close(fd)
    raise StorageError(f"could not create a staging folder in {base}: swept away each time")


@contextlib.contextmanager
def staging_folder(base: Path, purpose: str) -> Iterator[Path]:
    """A fresh private folder ``<base>/.<purpose>-<hex>``, locked while the block runs and
    removed afterwards unless it was renamed away (then the lock follows it, harmlessly)."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        path, fd = _create_locked(base, purpose)
    except OSError as exc:
        raise io_error("creating a staging directory in", base, exc) from exc
    try:
        yield path
    finally:
        try:
            # after an exchange with a live context, ``path`` holds that context's old content
            if os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def holding(path: Path) -> Iterator[None]:
    """Hold the folder ``path``'s lock (waiting for it) while the block runs: a folder about
    to be renamed to a swept name (a context being dropped) keeps it under the new name."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
    except OSError as exc:
        raise io_error("locking", path, exc) from exc
    try:
        yield
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def sweep(contexts: Path, *, dry_run: bool = False) -> list[Leftover]:
    """Remove (``dry_run``: only list) the staging folders of ``contexts`` that no running
    operation holds. Cheap when there are none: one listing of ``contexts``. Folders that
    cannot be removed (a read-only store) are left and not reported."""
    try:
        entries = [e for e in os.scandir(contexts) if e.name.startswith(PREFIXES)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise io_error("listing", contexts, exc) from exc
    out: list[Leftover] = []
    for entry in sorted(entries, key=lambda e: e.name):
        path = Path(entry.path)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                continue
            fd = _lock(path)
        except OSError:
            continue
        if fd is None:
            continue
        try:
            if not _same(fd, path):
                continue
            size = _size(path)
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
                if path.exists():
                    continue
            out.append(Leftover(path, size))
        finally:
            os.close(fd)
    return out


__all__ = ["PREFIXES", "Leftover", "holding", "staging_folder", "sweep"]
