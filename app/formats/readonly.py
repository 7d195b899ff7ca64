"""Opening SQLite files of a store this process cannot write (read-only file system, or no
write permission on the folder) without writing anything.

SQLite in WAL mode needs the ``-shm`` file: where the folder cannot be written, a database
with no ``-wal`` file is opened ``immutable=1`` (nothing to merge, no shared memory needed); one
with a ``-wal`` and ``-shm`` left by a writer is opened ``mode=ro`` (reads the WAL too); one with
a ``-wal`` but no ``-shm`` cannot be read correctly without writing, and neither can a missing
database: both raise ``StorageError`` (EROFS). Never an ``immutable`` open while a WAL exists:
it would ignore the WAL and answer from stale pages.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from urllib.parse import quote

from app.core.errors import StorageError


def writable(folder: Path) -> bool:
    """True when this process may create files in ``folder`` (``access`` reports a read-only
    file system as well as missing permission; root passes permission checks)."""
    return os.access(folder, os.W_OK)


def read_only_errno(folder: Path) -> int:
    """EROFS on a read-only file system, EACCES otherwise (no write permission)."""
    try:
        return errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
    except OSError:
        return errno.EACCES


def sqlite_target(path: Path) -> tuple[str | Path, bool]:
    """``(database, uri)`` for ``sqlite3.connect``: the path itself where its folder is
    writable, else a read-only URI; ``StorageError`` when it cannot be read without writing."""
    folder = path.parent
    if writable(folder):
        return path, False
    code = read_only_errno(folder)
    why = "read-only file system" if code == errno.EROFS else "no write permission"
    if not path.is_file():
        raise StorageError(f"{path}: missing and cannot be created ({why})", errno=code)
    wal = Path(f"{path}-wal")
    uri = f"file:{quote(str(path))}"
    if wal.exists() and wal.stat().st_size > 0:
        if not Path(f"{path}-shm").exists():
            raise StorageError(
                f"{path}: has a write-ahead log to merge and cannot be read here ({why}); "
                "open the store once where it can be written",
                errno=code,
            )
        return f"{uri}?mode=ro", True
    return f"{uri}?immutable=1", True
