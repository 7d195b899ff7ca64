"""One SQLite database file used from many threads: what the index and the tracker share.

A connection per thread (``check_same_thread=False`` so ``close`` may close them all), closed
when its thread ends, so a process holds a bounded number of files whatever the number of
threads it has run; ``close_if_idle`` lets an owner (the store's bounded set of open contexts)
release every connection while no thread is inside an operation. WAL, a long busy timeout,
``user_version`` checked on every connect (unknown -> ``SchemaVersionError``), ``BEGIN
IMMEDIATE`` write transactions (DEFERRED ones fail with "database is locked" under concurrent
writers). ``sqlite3`` errors are typed by their SQLite result code (``app.formats.sqlerrors``):
only real corruption is ``IntegrityError``; permission, I/O, disk-full, EMFILE, read-only and
lock errors are ``StorageError`` with an errno. A failed first use (disk full while creating
the schema...) is not remembered: the next use tries again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from app.core.errors import SchemaVersionError, StorageError
from app.formats.sqlerrors import classify

BUSY_TIMEOUT_S = 60.0


class _Held:
    """A thread's connection, kept in its ``threading.local``: freed with the thread's local
    storage when the thread ends, and then closed."""

    __slots__ = ("conn", "epoch", "owner")

    def __init__(self, conn: sqlite3.Connection, epoch: int, owner: SqliteFile) -> None:
        self.conn = conn
        self.epoch = epoch
        self.owner = weakref.ref(owner)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            owner = self.owner()
            if owner is not None:
                owner._forget(self.conn)
            else:
                self.conn.close()


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
        # re-entrant: a connection's finaliser (_Held.__del__) may run inside a guarded block
        self._guard = threading.RLock()
        self._busy = 0  # threads inside an operation (``errors`` blocks), see close_if_idle
        self._initialised = False
        self._init_lock = threading.RLock()  # not _guard: first use may wait on SQLite locks
        self._ino: int | None = None

    # -- hooks ----------------------------------------------------------------------------

    def _configure(self, conn: sqlite3.Connection) -> None:
        """Per-connection settings of a subclass (row factory...)."""

    def _first_use(self, conn: sqlite3.Connection) -> None:
        """Called with the first connection this object opens (again after a failure)."""

    # -- connections ----------------------------------------------------------------------

    def damaged(self, exc: sqlite3.Error) -> StorageError:
        """The typed error for a ``sqlite3`` error: ``IntegrityError`` only for damage."""
        return classify(exc, self.path, self.WHAT, self.REPAIR)

    def check_version(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, self.VERSION):
            raise SchemaVersionError(
                f"{self.path}: {self.WHAT} version {version} is unknown (this is "
                f"{self.VERSION}){self.UNKNOWN_VERSION_HINT}"
            )

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self.damaged(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self.check_version(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.SYNCHRONOUS}")
            conn.execute("PRAGMA cell_size_check=ON")
            self._configure(conn)
        except sqlite3.Error as exc:
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
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and held.epoch == self._epoch:
            return held.conn
        if held is not None:
            self._forget(held.conn)
        epoch = self._epoch
        conn = self._connect()
        with self._guard:
            self._all.append(conn)
        self._local.held = _Held(conn, epoch, self)
        if not self._initialised:
            try:
                with self._init_lock:
                    if not self._initialised:
                        self._first_use(conn)
                        self._initialised = True
            except BaseException:
                # not remembered: the next use opens a new connection and tries again
                self._local.held = None
                raise
        return conn

    def _forget(self, conn: sqlite3.Connection) -> None:
        with self._guard:
            if conn in self._all:
                self._all.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    @property
    def open_connections(self) -> int:
        """How many connections this object holds open now."""
        return len(self._all)

    def invalidate(self) -> None:
        """Close this thread's connection; the others reconnect on their next use (safe while
        other threads are reading)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            self._local.held = None  # its finaliser closes the connection
            self._forget(held.conn)
        self._epoch += 1

    def close(self) -> None:
        """Close every connection this object opened (threads reconnect on next use)."""
        with self._guard:
            self._close_all()

    def close_if_idle(self) -> bool:
        """Close every connection if no thread is inside an operation on this file (between
        operations a thread reconnects on its next use); False if one is."""
        with self._guard:
            if self._busy:
                return False
            self._close_all()
            return True

    def _close_all(self) -> None:
        conns, self._all = self._all, []
        self._epoch += 1
        self._initialised = False
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn ``sqlite3`` errors raised in the block into typed storage errors; while a
        thread is inside, ``close_if_idle`` leaves the connections open."""
        with self._guard:
            self._busy += 1
        try:
            yield
        except sqlite3.Error as exc:
            raise self.damaged(exc) from exc
        finally:
            with self._guard:
                self._busy -= 1

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed on success, rolled back otherwise."""
        with self.errors():
            conn = self.conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
