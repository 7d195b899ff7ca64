"""``Access`` on a REAL PostgreSQL (``app.backends.postgres.access``), plus the shared
``schema`` and ``connect`` modules of the PostgreSQL backend.

The ``Access`` contract suite itself (threads appending, tokens) runs for every backend in
tests/test_access_tokens.py; here: processes appending at once through the managers'
``AuditLog`` (dense ``seq``, chain verifies), tokens through ``TokenManager``, schema creation
under concurrency, and no password in anything shown. Each test that needs empty tables gets
its own PostgreSQL schema in the module's fresh database (``fresh_schema``: ``search_path``
set through the URL's ``options``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.parse
import uuid
from pathlib import Path

import pytest

from app.backends.postgres.access import PgAccess
from app.backends.postgres.connect import Database
from app.backends.postgres.schema import ensure_schema, schema_version
from app.core.access_types import AuditEvent
from app.core.errors import ConflictError, IntegrityError, SchemaVersionError, StorageError
from app.formats.accessdb import TokenRow
from app.managers.access import AuditLog, TokenManager

ROOT = Path(__file__).resolve().parent.parent


def fresh_schema(pg_url: str) -> str:
    """A new empty schema in the module's database; the URL whose connections use it."""
    import psycopg
    from psycopg import sql

    name = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    parts = urllib.parse.urlsplit(pg_url)
    query = urllib.parse.urlencode({"options": f"-csearch_path={name}"})
    return urllib.parse.urlunsplit(
        parts._replace(query=f"{parts.query}&{query}" if parts.query else query)
    )


APPENDER = """
import sys
from app.backends.postgres.access import PgAccess
from app.core.access_types import AuditEvent
from app.managers.access import AuditLog

url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
access = PgAccess(url)
log = AuditLog(access)
for i in range(n):
    log.record(AuditEvent(token=who, action="append", target="ctx/c", outcome=200,
                          request_id=f"{who}-{i}"))
access.close()
"""


def test_three_processes_append_one_dense_chain_that_verifies(pg_url: str) -> None:
    url = fresh_schema(pg_url)
    n = 40
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, url, f"p{k}", str(n)], env=env)
        for k in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    access = PgAccess(url)
    log = AuditLog(access)
    rows = access.audit_rows()
    assert [r.seq for r in rows] == list(range(1, 3 * n + 1))  # dense, from 1
    assert sorted(r.request_id for r in rows) == sorted(
        f"p{k}-{i}" for k in range(3) for i in range(n)
    )
    for k in range(3):  # each process's own entries are in its order
        mine = [r.request_id for r in rows if r.token == f"p{k}"]
        assert mine == [f"p{k}-{i}" for i in range(n)]
    assert log.verify() == []
    head = log.head()
    assert head is not None and head.seq == 3 * n
    assert log.verify(head=head) == []
    # an edited entry breaks the chain
    with access.db.transaction() as conn:
        conn.execute("UPDATE audit SET outcome = 500 WHERE seq = %s", (7,))
    assert log.verify()
    access.close()


def test_threads_and_a_process_append_together(pg_url: str) -> None:
    url = fresh_schema(pg_url)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", APPENDER, url, "proc", "30"], env=env)
    access = PgAccess(url)
    log = AuditLog(access)

    def work(k: int) -> None:
        for i in range(10):
            log.record(
                AuditEvent(
                    token=f"t{k}", action="a", target="", outcome=200, request_id=f"t{k}-{i}"
                )
            )

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proc.wait(timeout=120) == 0
    assert access.audit_count() == 70
    assert [r.seq for r in access.audit_after(0, 1000)] == list(range(1, 71))
    assert log.verify() == []
    access.close()


def test_tokens_through_the_manager(pg_url: str) -> None:
    url = fresh_schema(pg_url)
    access = PgAccess(url)
    tokens = TokenManager(access)
    assert tokens.list() == []
    secret = tokens.create("reader", scope="read", contexts=["b", "a"])
    tokens.create("admin", scope="admin")
    found = tokens.authenticate(secret)
    assert found is not None and found.name == "reader" and found.contexts == ("a", "b")
    with pytest.raises(ConflictError):
        tokens.create("reader", scope="write")
    assert [t.name for t in tokens.list()] == ["admin", "reader"]
    # a second handle (another process or host) sees the same rows
    other = TokenManager(PgAccess(url))
    assert other.authenticate(secret) == found
    tokens.revoke("reader")
    assert other.authenticate(secret) is None
    other.access.close()
    access.close()


def test_names_sort_bytewise_and_damaged_rows_are_reported(pg_url: str) -> None:
    url = fresh_schema(pg_url)
    access = PgAccess(url)
    names = ["b", "B", "a", "\u00e9", "_", "Z"]
    for k, name in enumerate(names):
        access.add_token(TokenRow(f"{k:016x}", name, "read", None, "t", "m"))
    assert [t.name for t in access.tokens()] == sorted(names)  # code point = byte order
    with access.db.transaction() as conn:
        conn.execute("UPDATE tokens SET contexts = %s WHERE name = %s", ("{not json", "a"))
    with pytest.raises(IntegrityError, match="token 'a' is damaged"):
        access.tokens()
    access.close()


def test_reads_create_nothing_even_when_other_parts_exist(pg_url: str) -> None:
    url = fresh_schema(pg_url)
    db = Database(url)
    with db.connection() as conn:
        assert ensure_schema(conn, "other", "CREATE TABLE other_t (a int)")
    access = PgAccess(db)
    assert access.tokens() == [] and access.audit_count() == 0 and access.audit_last() is None
    assert not access.remove_token("x")
    with db.connection() as conn:
        assert schema_version(conn, "access") is None
        assert conn.execute("SELECT to_regclass('audit')").fetchone() == (None,)
    db.close()


def test_ensure_schema_creates_once_under_concurrency_and_never_migrates(pg_url: str) -> None:
    url = fresh_schema(pg_url)
    created: list[bool] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        db = Database(url, max_size=1)
        try:
            with db.connection() as conn:
                created.append(
                    ensure_schema(
                        conn, "probe", ["CREATE TABLE probe (a int)", "CREATE INDEX ON probe (a)"]
                    )
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(created) == [False] * 5 + [True]
    db = Database(url)
    with db.connection() as conn:
        assert schema_version(conn, "probe") == 1
        assert schema_version(conn, "nothing") is None
        with pytest.raises(SchemaVersionError, match="schema version 1"):
            ensure_schema(conn, "probe", "CREATE TABLE probe (a int)", version=2)
    db.close()


def test_the_password_is_never_shown() -> None:
    url = "postgresql://someone:s3cretpw@127.0.0.1:1/nowhere"
    db = Database(url, timeout=1)
    assert "s3cretpw" not in db.where() and "s3cretpw" not in repr(db)
    access = PgAccess(db)
    assert "s3cretpw" not in access.where() and "s3cretpw" not in repr(access)
    with pytest.raises(StorageError) as caught:
        access.audit_count()
    assert "s3cretpw" not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(StorageError) as caught, db.session():
        pass
    assert "s3cretpw" not in str(caught.value)
    db.close()


def test_a_session_connection_holds_an_advisory_lock_outside_the_pool(pg_url: str) -> None:
    db = Database(pg_url)
    with db.session() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (42,))
        with db.connection() as conn:
            assert conn.execute("SELECT pg_try_advisory_lock(%s)", (42,)).fetchone() == (False,)
    with db.connection() as conn:  # the session ended: the lock is gone
        assert conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (42,)).fetchone() == (True,)
    db.close()


def test_committed_entries_survive_a_server_crash_and_appending_goes_on(pg_url: str) -> None:
    """``kill -9`` of the server: every entry committed before is kept, the same ``PgAccess``
    (its pool) appends again after the restart, the chain still verifies."""
    import signal
    import time

    from backend_servers import pg_restartable, postgres_pid, restart_postgres

    if not pg_restartable():
        pytest.skip("the PostgreSQL server was not started by .ci/services.py (cannot restart it)")
    url = fresh_schema(pg_url)
    access = PgAccess(Database(url, timeout=5))  # fail fast while the server is down
    log = AuditLog(access)
    for i in range(5):
        log.record(AuditEvent(token="a", action="x", target="", outcome=200, request_id=str(i)))
    old = postgres_pid()
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(old, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with pytest.raises(StorageError):
        access.audit_count()
    restart_postgres()
    assert access.audit_count() == 5
    for i in range(5, 8):
        log.record(AuditEvent(token="a", action="x", target="", outcome=200, request_id=str(i)))
    assert [r.seq for r in access.audit_rows()] == list(range(1, 9))
    assert log.verify() == []
    access.close()
