"""``sqlite3`` errors typed by their SQLite result code (not their message).

Only real damage is ``IntegrityError``: a corrupt page or a file that is not a database (and
SQLite's generic error, which on our own schema means a table or index is missing). Everything
the environment causes is a ``StorageError`` with an errno and no repair advice: permission
(CANTOPEN, READONLY, PERM, AUTH: the real errno comes from trying to open the files), I/O
errors, a full disk, too many open files, a read-only file system, busy or locked databases.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from app.core.errors import IntegrityError, StorageError

_ERRNO = {
    sqlite3.SQLITE_FULL: errno.ENOSPC,
    sqlite3.SQLITE_IOERR: errno.EIO,
    sqlite3.SQLITE_NOMEM: errno.ENOMEM,
    sqlite3.SQLITE_BUSY: errno.EBUSY,
    sqlite3.SQLITE_LOCKED: errno.EBUSY,
    sqlite3.SQLITE_PROTOCOL: errno.EBUSY,
    sqlite3.SQLITE_NOLFS: errno.EFBIG,
    sqlite3.SQLITE_TOOBIG: errno.EFBIG,
}
_CANNOT_OPEN = (
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_AUTH,
)


def probe_errno(path: Path, *, write: bool) -> int | None:
    """The errno the OS gives when opening the database's files (or creating them in its
    folder) the way SQLite does; None if every open works now."""
    flags = os.O_RDWR if write else os.O_RDONLY
    targets = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    try:
        for target in targets:
            if target.exists():
                os.close(os.open(target, flags | os.O_NOFOLLOW))
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        os.close(folder)
    except OSError as exc:
        return exc.errno
    if write and not os.access(path.parent, os.W_OK):
        return errno.EACCES
    return None


_OPEN_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.EACCES, errno.EPERM, errno.EROFS)


def classify(exc: sqlite3.Error, path: Path, what: str, repair: str = "") -> StorageError:
    """The typed error for ``exc`` raised on the database at ``path``."""
    text = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None) or "no SQLite code"
    damage = IntegrityError(f"{path}: {what} damaged ({name}: {text}){repair}")
    if code is None:
        if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
            return StorageError(f"{path}: {what} cannot be used ({text})")
        if "locked" in text or "busy" in text:  # raised without a code by some versions
            return StorageError(f"{path}: {what} is busy ({text})", errno=errno.EBUSY)
        return damage
    primary = code & 0xFF
    err: int | None
    if primary in _CANNOT_OPEN:
        write = primary != sqlite3.SQLITE_CANTOPEN
        err = probe_errno(path, write=write)
        if err is None and not write:
            err = probe_errno(path, write=True)
        if err in (errno.EISDIR, errno.ELOOP, errno.ENOTDIR):
            return damage  # a folder or a link where the database file should be
        if err is None and write:
            err = errno.EACCES
    elif primary in _ERRNO:
        err = _ERRNO[primary]
        if primary == sqlite3.SQLITE_IOERR:  # the OS's reason when it is one we can see
            seen = probe_errno(path, write=True)
            err = seen if seen in _OPEN_ERRNOS else err
    else:
        return damage
    reason = os.strerror(err) if err is not None else "cannot open"
    return StorageError(f"{path}: {what}: {reason} ({name}: {text})", errno=err)
