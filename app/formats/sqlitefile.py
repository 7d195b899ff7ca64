"""One SQLite database file used from many threads: what the index and the tracker share.

A connection per thread (``check_same_thread=False`` so ``close`` may close them all), WAL,
a long busy timeout, ``user_version`` checked on every connect (unknown -> ``SchemaVersionError``),
``sqlite3`` errors turned into ``IntegrityError`` (damage) or ``StorageError`` (busy), and
``BEGIN IMMEDIATE`` write transactions (DEFERRED ones fail with "database is locked" under
concurrent writers).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from app.core.errors import IntegrityError, SchemaVersionError, StorageError
from app.formats.readonly import sqlite_target

BUSY_TIMEOUT_S = 60.0


class SqliteFile:
    VERSION: ClassVar[int] = 1
    SYNCHRONOUS: ClassVar[str] = "NORMAL"
    WHAT: ClassVar[str] = "database"
    REPAIR: ClassVar[str] = ""
    UNKNOWN_VERSION_HINT: ClassVar[str] = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._epoch = 0
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._ino: int | None = None

    # -- hooks ----------------------------------------------------------------------------

    def _configure(self, conn: sqlite3.Connection) -> None:
        """Per-connection settings of a subclass (row factory...)."""

    def _first_use(self, conn: sqlite3.Connection) -> None:
        """Called with the first connection this object opens."""

    # -- connections ----------------------------------------------------------------------

    def damaged(self, exc: sqlite3.DatabaseError) -> StorageError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StorageError(f"{self.path}: {text}")
        # a full disk or a failing write is not damage: typed, with an errno, no repair advice
        primary = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if primary == sqlite3.SQLITE_FULL:
            return StorageError(f"{self.path}: {text}", errno=errno.ENOSPC)
        if primary == sqlite3.SQLITE_READONLY:  # a store opened where it cannot be written
            return StorageError(f"{self.path}: {text}", errno=errno.EROFS)
        if primary == sqlite3.SQLITE_IOERR:
            return StorageError(f"{self.path}: {text}", errno=errno.EIO)
        return IntegrityError(f"{self.path}: {self.WHAT} damaged ({text}){self.REPAIR}")

    def check_version(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, self.VERSION):
            raise SchemaVersionError(
                f"{self.path}: {self.WHAT} version {version} is unknown (this is "
                f"{self.VERSION}){self.UNKNOWN_VERSION_HINT}"
            )

    def _connect(self) -> sqlite3.Connection:
        target, uri = sqlite_target(self.path)  # read-only URI where the folder is read-only
        try:
            conn = sqlite3.connect(
                target,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
                uri=uri,
            )
        except sqlite3.DatabaseError as exc:
            raise self.damaged(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self.check_version(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.SYNCHRONOUS}")
            conn.execute("PRAGMA cell_size_check=ON")
            self._configure(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self.damaged(exc) from exc
        except BaseException:
            conn.close()
            raise
        with contextlib.suppress(OSError):
            self._ino = os.stat(self.path).st_ino
        return conn

    def replaced(self) -> bool:
        """True when the file this object has connected to was replaced or removed since (by
        another process): connections then read a deleted file and must be renewed."""
        if self._ino is None:
            return False
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, or again after ``invalidate``)."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and getattr(local, "epoch", -1) == self._epoch:
            return conn
        if conn is not None:
            self._forget(conn)
        conn = self._connect()
        with self._guard:
            first = not self._all
            self._all.append(conn)
        local.conn, local.epoch = conn, self._epoch
        if first:
            self._first_use(conn)
        return conn

    def _forget(self, conn: sqlite3.Connection) -> None:
        with self._guard:
            if conn in self._all:
                self._all.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def invalidate(self) -> None:
        """Close this thread's connection; the others reconnect on their next use (safe while
        other threads are reading)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._forget(conn)
            self._local.conn = None
        self._epoch += 1

    def close(self) -> None:
        """Close every connection this object opened (threads reconnect on next use)."""
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
        self._epoch += 1

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn ``sqlite3`` errors raised in the block into typed storage errors."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise self.damaged(exc) from exc

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed on success, rolled back otherwise."""
        conn = self.conn()
        with self.errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
