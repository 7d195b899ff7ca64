"""Connections to a store's PostgreSQL database (psycopg 3 + psycopg_pool).

``Database(url)`` owns one small connection pool, opened on first use (so constructing it
connects nothing) and reopened after ``close()``. ``connection()`` lends a pooled connection
(``autocommit`` off: the block is one transaction, committed when it ends normally and rolled
back on an exception; each lent connection is checked first, so the pool survives a server
restart); ``transaction()`` is the same with an explicit ``conn.transaction()`` block and is
RE-ENTRANT per thread: inside an open ``transaction()`` of the same thread, a nested one joins
it on the same connection (as a savepoint), so a unit of work (``Backend.atomic()``: a
workflow chunk's record writes and its completion) commits once, at the end of the outermost
block, or not at all; ``session()`` is a dedicated, unpooled connection for session state such as
``pg_advisory_lock`` that must not leak into the pool. The URL's password never appears in
``where()``, ``repr`` or errors (``app.core.urls.redact``).

Writer locks and transactions meet here (``PgLock``, PERSISTENCE_LAYER_STRATEGY.md 11.3): a
lock taken inside an open transaction is kept until that transaction ends
(``keep_until_end``), so nobody else writes under it while this work is uncommitted; and each
held lock's *fence* key (``add_fence``) is taken shared by every transaction of the holding
thread, so the next holder, which waits for the fence exclusively, never starts while a write
transaction of a dead holder is still committing on the server.

``psycopg`` and ``psycopg_pool`` are imported here lazily, only inside this package.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from app.core.errors import StorageError
from app.core.urls import redact

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

IDLE_SESSIONS = 4
"""Session connections kept for reuse after ``session()`` (each costs a server process)."""
SQL_SHARED_FENCES = "SELECT pg_advisory_xact_lock_shared(k) FROM unnest(%s::bigint[]) AS k"


class Database:
    """One PostgreSQL database named by a ``postgresql://`` URL, with a lazily opened pool."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 30.0):
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._pool: ConnectionPool[Any] | None = None
        self._idle: list[psycopg.Connection[Any]] = []  # kept sessions, see session()
        self._lock = threading.Lock()
        # per thread: .conn (the open transaction's connection), .keep (what is released when
        # it ends), .fences (fence keys of the writer locks this thread holds)
        self._local = threading.local()

    def where(self) -> str:
        """The URL with its password redacted."""
        return redact(self._url)

    def __repr__(self) -> str:
        return f"Database({self.where()!r})"

    def _fail(self, action: str, exc: Exception) -> StorageError:
        # psycopg messages may quote the connection string: keep only the server's message
        # with every occurrence of the raw URL removed.
        text = str(exc).replace(self._url, self.where()).strip() or type(exc).__name__
        return StorageError(f"{action} {self.where()} failed: {text}")

    def lost(self, exc: Exception) -> StorageError:
        """The ``StorageError`` for a server lost while talking to it (URL redacted)."""
        return self._fail("talking to", exc)

    def _get_pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool is None:
                import psycopg
                from psycopg_pool import ConnectionPool, PoolTimeout

                try:  # a server that refuses fails now, not after the pool's patience
                    psycopg.connect(self._url, connect_timeout=10).close()
                except psycopg.OperationalError as exc:
                    raise self._fail("connecting to", exc) from None

                pool: ConnectionPool[Any] = ConnectionPool(
                    self._url,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=self._timeout,
                    kwargs={"autocommit": False},
                    check=ConnectionPool.check_connection,  # a server restart leaves no dead ones
                    open=False,
                )
                try:
                    pool.open(wait=True, timeout=self._timeout)
                except PoolTimeout as exc:
                    pool.close()
                    raise self._fail("connecting to", exc) from None
                self._pool = pool
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; the block is one transaction (commit on success, rollback on
        an exception), the connection goes back to the pool afterwards. Inside this thread's
        open ``transaction()``, that transaction's connection (the block then commits with
        it)."""
        import psycopg

        current: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if current is not None:  # inside this thread's transaction(): see its writes
            yield current
            return
        pool = self._get_pool()
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise self._fail("talking to", exc) from None

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside an explicit ``conn.transaction()`` block; nested in an
        open ``transaction()`` of the same thread, a savepoint on that same connection (the
        work commits with the outermost block)."""
        current: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if current is not None:
            with current.transaction():
                yield current
            return
        # ``keep`` is closed last: after the commit or rollback
        with contextlib.ExitStack() as keep, self.connection() as conn, conn.transaction():
            self._local.conn, self._local.keep = conn, keep
            try:
                fences = self._fences()
                if fences:
                    conn.execute(SQL_SHARED_FENCES, (sorted(set(fences)),))
                yield conn
            finally:
                self._local.conn = self._local.keep = None

    def keep_until_end(self, held: AbstractContextManager[Any]) -> bool:
        """Enter ``held`` (a writer lock's hold) until this thread's open transaction ends,
        committed or rolled back. False (nothing entered) outside a transaction."""
        keep: contextlib.ExitStack | None = getattr(self._local, "keep", None)
        if keep is None:
            return False
        keep.enter_context(held)
        return True

    def _fences(self) -> list[int]:
        fences: list[int] | None = getattr(self._local, "fences", None)
        if fences is None:
            fences = self._local.fences = []
        return fences

    def add_fence(self, key: int) -> None:
        """From now until ``remove_fence``, every transaction of this thread (the open one
        included) holds ``pg_advisory_xact_lock_shared(key)`` until it ends."""
        self._fences().append(key)
        current: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if current is not None:
            current.execute(SQL_SHARED_FENCES, ([key],))

    def remove_fence(self, key: int) -> None:
        """Undo one ``add_fence(key)`` of this thread (the open transaction keeps its lock)."""
        fences = self._fences()
        if key in fences:
            fences.remove(key)

    @property
    def in_transaction(self) -> bool:
        """Whether the calling thread is inside a ``transaction()`` block."""
        return getattr(self._local, "conn", None) is not None

    @contextmanager
    def session(self) -> Iterator[psycopg.Connection[Any]]:
        """A dedicated connection outside the pool (``autocommit`` on): for session-level state
        such as ``pg_advisory_lock`` held across transactions, or a long snapshot. Afterwards
        its session state is reset (settings back, advisory locks released)
        and the connection kept for the next ``session()`` (at most ``IDLE_SESSIONS``); one
        that fails on the way is closed instead (closing releases everything too)."""
        import psycopg

        conn = self._idle_session()
        healthy = False
        try:
            yield conn
            healthy = True
        except psycopg.OperationalError as exc:  # the server went away mid-session
            raise self._fail("talking to", exc) from None
        finally:
            self._end_session(conn, healthy)

    def _idle_session(self) -> psycopg.Connection[Any]:
        """A kept session that still answers, else a new connection."""
        import psycopg

        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:  # e.g. the server restarted meanwhile
                conn.close()
        try:
            return psycopg.connect(self._url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise self._fail("connecting to", exc) from None

    def _end_session(self, conn: psycopg.Connection[Any], healthy: bool) -> None:
        import psycopg
        from psycopg.pq import TransactionStatus

        if healthy and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
            try:  # not DISCARD ALL: it would drop statements psycopg has prepared
                conn.execute("RESET ALL")
                conn.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error:
                pass
            else:
                with self._lock:
                    if len(self._idle) < IDLE_SESSIONS:
                        self._idle.append(conn)
                        return
        conn.close()

    def close(self) -> None:
        """Close the pool and the kept sessions (both reopened on the next use)."""
        with self._lock:
            pool, self._pool = self._pool, None
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if pool is not None:
            pool.close()
