"""One SQLite database file used from many threads: what the index and the tracker share.

Connections: one per thread (``check_same_thread=False`` so another thread may close it), held
in a per-thread slot. The number of files a process holds stays bounded whatever the number of
threads and files it has used: a thread's connection is closed when the thread ends (its slot
is freed with the thread's local storage); when more than ``MAX_IDLE_CONNECTIONS`` connections
are open in the process, an operation closes its thread's connection as it ends; and an owner
(the store's bounded set of open contexts) can close every connection no thread is using
(``close_idle``). A thread reconnects on its next use. WAL, a long busy timeout,
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
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from app.core.errors import SchemaVersionError, StorageError
from app.core.version import UPGRADE_COMMAND
from app.formats.readonly import sqlite_target
from app.formats.sqlerrors import classify

BUSY_TIMEOUT_S = 60.0
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
MAX_IDLE_CONNECTIONS = 64
"""Connections (about 2 files each) the process keeps open between operations; beyond this an
operation closes its thread's connection when it ends."""


def file_version(path: object) -> int | None:
    """The ``user_version`` of the SQLite file at ``path``, opened read-only (None when it
    cannot be read: missing, not a database, damaged)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60.0)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return None


class _Count:
    """Connections open in this process (all ``SqliteFile`` objects)."""

    lock = threading.Lock()
    open = 0

    @classmethod
    def add(cls, n: int) -> None:
        with cls.lock:
            cls.open += n


class _Slot:
    """A thread's connection to one file and how deep the thread is inside operations on it.
    Lives in the thread's ``threading.local``: freed, and its connection closed, when the
    thread ends. Fields change under the owner's guard."""

    __slots__ = ("__weakref__", "conn", "depth", "epoch", "owner")

    def __init__(self, owner: SqliteFile) -> None:
        self.conn: sqlite3.Connection | None = None
        self.epoch = -1
        self.depth = 0
        self.owner = weakref.ref(owner)

    def drop(self) -> None:
        """Close the connection (caller holds the owner's guard, or the slot is dying)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            _Count.add(-1)
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            owner = self.owner()
            if owner is None:
                self.drop()
            else:
                with owner._guard:
                    self.drop()


class SqliteFile:
    VERSION: ClassVar[int] = 1
    SYNCHRONOUS: ClassVar[str] = "NORMAL"
    CHECKPOINT_PAGES: ClassVar[int] = 0
    """``wal_autocheckpoint`` of every connection (0: SQLite's default, 1000 pages): a commit
    that leaves a longer WAL checkpoints it (two fsyncs, and every page copied back)."""
    WRITE_CACHE_KIB: ClassVar[int] = 0
    """Page cache a connection keeps once it has written (0: SQLite's default, 2 MiB): a
    writer's transactions then dirty pages in memory instead of spilling them to the WAL
    mid-transaction, and the next one finds the pages it needs; reading connections keep
    the default."""
    WHAT: ClassVar[str] = "database"
    REPAIR: ClassVar[str] = ""
    UNKNOWN_VERSION_HINT: ClassVar[str] = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._epoch = 0
        self._slots: weakref.WeakSet[_Slot] = weakref.WeakSet()
        # re-entrant: a slot's finaliser may run while this thread holds it
        self._guard = threading.RLock()
        self._initialised = False
        self._init_lock = threading.RLock()  # not _guard: first use may wait on SQLite locks
        self._ino: int | None = None

    # -- hooks ----------------------------------------------------------------------------

    def _configure(self, conn: sqlite3.Connection) -> None:
        """Per-connection settings of a subclass (row factory...)."""

    def _first_use(self, conn: sqlite3.Connection) -> None:
        """Called with the first connection this object opens (again after a failure)."""

    def create_schema(
        self,
        conn: sqlite3.Connection,
        schema: str,
        migrate: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """For ``_first_use``: unless the file already has ``VERSION``, run ``schema``
        (statements separated by ``;``) and ``migrate`` and set ``VERSION``, in one write
        transaction. A file at the current version is not written to (a read-only store opens
        for reading)."""
        if conn.execute("PRAGMA user_version").fetchone()[0] == self.VERSION:
            return
        with self.write() as tx:
            self.check_version(tx)
            for statement in schema.split(";"):
                if statement.strip():
                    tx.execute(statement)
            if migrate is not None:
                migrate(tx)
            tx.execute(f"PRAGMA user_version={self.VERSION}")

    # -- connections ----------------------------------------------------------------------

    def damaged(self, exc: sqlite3.Error) -> StorageError:
        """The typed error for a ``sqlite3`` error: ``IntegrityError`` only for damage."""
        return classify(exc, self.path, self.WHAT, self.REPAIR)

    def check_version(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if 0 < version < self.VERSION:
            raise SchemaVersionError(
                f"{self.path}: {self.WHAT} version {version} is older than this ctxstore's "
                f"({self.VERSION}); run `{UPGRADE_COMMAND}` (opening never migrates)"
            )
        if version not in (0, self.VERSION):
            raise SchemaVersionError(
                f"{self.path}: {self.WHAT} version {version} is unknown (this is "
                f"{self.VERSION}){self.UNKNOWN_VERSION_HINT}"
            )

    def _connect(self) -> sqlite3.Connection:
        """A configured connection. SQLite answers "database is locked" to the set-up pragmas
        without calling the busy handler while another connection checkpoints or recovers the
        WAL as it opens or closes; that moment is short, so set-up is retried until the busy
        timeout has passed."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.001
        while True:
            try:
                return self._connect_once()
            except StorageError as exc:
                busy = isinstance(exc.__cause__, sqlite3.Error) and (
                    getattr(exc.__cause__, "sqlite_errorcode", None) in _BUSY_CODES
                )
                if not busy or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _connect_once(self) -> sqlite3.Connection:
        target, uri = sqlite_target(self.path)  # read-only URI where the folder is read-only
        try:
            conn = sqlite3.connect(
                target,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
                uri=uri,
            )
        except sqlite3.Error as exc:
            raise self.damaged(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self.check_version(conn)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.SYNCHRONOUS}")
            if self.CHECKPOINT_PAGES:
                conn.execute(f"PRAGMA wal_autocheckpoint={int(self.CHECKPOINT_PAGES)}")
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

    def _slot(self) -> _Slot:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = _Slot(self)
            with self._guard:
                self._slots.add(slot)
            self._local.slot = slot
        return slot

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, or again after it was closed). Call
        it inside ``errors()`` (or ``write()``): outside, another thread may close it."""
        slot = self._slot()
        conn = slot.conn
        if conn is not None and slot.epoch == self._epoch:
            return conn
        with self._guard:
            slot.drop()
            epoch = self._epoch
        conn = self._connect()
        _Count.add(1)
        with self._guard:
            slot.conn, slot.epoch = conn, epoch
        if not self._initialised:
            try:
                with self._init_lock:
                    if not self._initialised:
                        self._first_use(conn)
                        self._initialised = True
            except BaseException:
                with self._guard:  # not remembered: the next use connects and tries again
                    slot.drop()
                raise
        return conn

    @property
    def open_connections(self) -> int:
        """How many connections this object holds open now."""
        with self._guard:
            return sum(1 for slot in self._slots if slot.conn is not None)

    def invalidate(self) -> None:
        """Close this thread's connection; the others reconnect on their next use (safe while
        other threads are reading)."""
        slot = self._slot()
        with self._guard:
            slot.drop()
            self._epoch += 1

    def close(self) -> None:
        """Close every connection this object opened (threads reconnect on next use)."""
        with self._guard:
            for slot in list(self._slots):
                slot.drop()
            self._epoch += 1
            self._initialised = False

    def close_idle(self) -> bool:
        """Close the connections no thread is inside an operation with (their threads
        reconnect on next use); returns True when none is left open."""
        with self._guard:
            busy = False
            for slot in list(self._slots):
                if slot.depth:
                    busy = busy or slot.conn is not None
                else:
                    slot.drop()
            return not busy

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn ``sqlite3`` errors raised in the block into typed storage errors; marks this
        thread as inside an operation (its connection is not closed by another thread)."""
        slot = self._slot()
        with self._guard:
            slot.depth += 1
        try:
            yield
        except sqlite3.Error as exc:
            raise self.damaged(exc) from exc
        finally:
            with self._guard:
                slot.depth -= 1
                if not slot.depth and _Count.open > MAX_IDLE_CONNECTIONS:
                    slot.drop()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed on success, rolled back otherwise."""
        with self.errors():
            conn = self.conn()
            if self.WRITE_CACHE_KIB:
                conn.execute(f"PRAGMA cache_size=-{int(self.WRITE_CACHE_KIB)}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
