"""A PostgreSQL writer lock covers the writes made under it (``PgLock``, strategy 11.3).

The lock lives on a session connection of its own while writes commit on pooled ones, so:

- a lock taken inside an open transaction is kept until that transaction ends;
- a holder whose lock session ends while its write transaction is still open (what a SIGKILL
  of a client in the middle of COMMIT looks like to the server) does not let the next holder
  in until that transaction has ended: the next holder sees its outcome.

Two ``Database`` objects on one URL stand for two hosts. A REAL PostgreSQL server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from test_context_catalog import pg_database  # noqa: F401 - the fixture

import app
from app.backends.postgres.catalog import PgLock
from app.backends.postgres.connect import Database


@pytest.fixture
def hosts(pg_database: str) -> Iterator[tuple[Database, Database]]:  # noqa: F811
    one, two = Database(pg_database), Database(pg_database)
    with one.transaction() as conn:
        conn.execute("CREATE TABLE probe (v int)")
    try:
        yield one, two
    finally:
        one.close()
        two.close()


def _lock_session_pid(db: Database, key: int) -> int:
    unsigned = key & (2**64 - 1)
    with db.connection() as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
            " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND granted",
            (unsigned >> 32, unsigned & 0xFFFFFFFF),
        ).fetchone()
    assert row is not None, "the lock is not held on the server"
    return int(row[0])


def test_a_lock_taken_inside_a_transaction_is_kept_until_it_commits(
    hosts: tuple[Database, Database],
) -> None:
    one, two = hosts
    lock_one, lock_two = PgLock(one, "context:c"), PgLock(two, "context:c")
    with one.transaction() as conn:
        with lock_one.hold():
            conn.execute("INSERT INTO probe VALUES (1)")
        # the hold ended, the write is not committed yet: nobody else may write under the lock
        with pytest.raises(app.ConflictError), lock_two.hold(timeout=0.3):
            pass
        with lock_one.hold():  # this thread takes it again at once (it never let it go)
            conn.execute("INSERT INTO probe VALUES (2)")
    assert not lock_one.held
    with lock_two.hold(timeout=5), two.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM probe").fetchone() == (2,)


def test_the_next_holder_waits_for_a_lost_holders_open_transaction(
    hosts: tuple[Database, Database],
) -> None:
    one, two = hosts
    lock_one, lock_two = PgLock(one, "context:c"), PgLock(two, "context:c")
    wrote, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            with lock_one.hold(), one.transaction() as conn:
                conn.execute("INSERT INTO probe VALUES (1)")
                wrote.set()
                time.sleep(1.0)  # the lock session is gone meanwhile; this commits late
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=holder)
    thread.start()
    assert wrote.wait(10)
    pid = _lock_session_pid(two, lock_one.key)
    with two.connection() as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with lock_two.hold(timeout=20), two.transaction() as conn:
        # the lost holder's transaction committed before this holder got in (without the
        # fence it would still be sleeping, its row not visible)
        seen = conn.execute("SELECT count(*) FROM probe").fetchone()
    thread.join(10)
    assert errors == [] and done.is_set()
    assert seen == (1,), "the next holder got the lock while the lost holder's write was open"


def test_a_transaction_holds_the_fence_of_every_lock_of_its_thread(
    hosts: tuple[Database, Database],
) -> None:
    one, _ = hosts
    lock = PgLock(one, "context:c")
    with lock.hold(), one.transaction() as conn:
        fences = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock'"
            " AND pid = pg_backend_pid()"
        ).fetchone()
    assert fences == (1,)
    with one.transaction() as conn:  # not held any more: no fence
        fences = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
    assert fences == (0,)
