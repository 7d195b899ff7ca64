"""Smoke test of the real-server fixtures (tests/backend_servers.py): PostgreSQL and S3 answer,
data written with bound parameters comes back, and a PostgreSQL server killed with SIGKILL
comes back (same URL) with its committed data intact."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from backend_servers import pg_restartable, postgres_pid, restart_postgres, s3_storage_options


def test_postgres_round_trip_with_bound_parameters(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE smoke (id integer PRIMARY KEY, doc jsonb NOT NULL)")
        conn.execute(
            "INSERT INTO smoke (id, doc) VALUES (%s, %s::jsonb), (%s, %s::jsonb)",
            (1, '{"name": "a\'; DROP TABLE smoke; --"}', 2, '{"name": "b"}'),
        )
        rows = conn.execute("SELECT id, doc->>'name' FROM smoke WHERE id >= %s ORDER BY id", (1,))
        assert rows.fetchall() == [(1, "a'; DROP TABLE smoke; --"), (2, "b")]
        conn.execute("DROP TABLE smoke")
        gone = conn.execute("SELECT to_regclass(%s)", ("smoke",)).fetchone()
        assert gone == (None,)


def test_pg_url_is_a_fresh_database_per_module(pg_url: str, pg_server_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", ("public",)
        ).fetchone()
    assert name is not None and name[0].startswith("t_test_backend_servers_")
    assert pg_url != pg_server_url
    assert tables == (0,)


def test_s3_put_get_in_a_fresh_bucket(s3_url: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3_storage_options())
    bucket = s3_url.removeprefix("s3://")
    assert fs.ls(bucket) == []
    payload = os.urandom(1000) + b"end"
    fs.pipe(f"{bucket}/dir/blob.bin", payload)
    assert fs.cat(f"{bucket}/dir/blob.bin") == payload
    assert fs.ls(f"{bucket}/dir") == [f"{bucket}/dir/blob.bin"]


def test_s3_environment_alone_reaches_the_endpoint(s3_url: str) -> None:
    """AWS_ENDPOINT_URL + dummy keys from the fixture are enough for a default S3FileSystem."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    key = f"{s3_url.removeprefix('s3://')}/hello.txt"
    fs.pipe(key, b"hello")
    assert fs.cat(key) == b"hello"


def _wait_dead(pid: int) -> None:
    for _ in range(200):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat[stat.rindex(")") + 2] in "ZX":
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still alive after SIGKILL")


def test_postgres_killed_with_sigkill_comes_back_with_its_data(pg_url: str) -> None:
    import psycopg

    if not pg_restartable():
        pytest.skip("the PostgreSQL server was not started by .ci/services.py (cannot restart it)")
    marker = uuid.uuid4().hex
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE crash (k text PRIMARY KEY)")
        conn.execute("INSERT INTO crash (k) VALUES (%s)", (marker,))
    old = postgres_pid()
    os.kill(old, signal.SIGKILL)
    _wait_dead(old)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url, connect_timeout=2).close()
    restart_postgres()
    assert postgres_pid() != old
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT k FROM crash WHERE k = %s", (marker,)).fetchall()
        conn.execute("DROP TABLE crash")
    assert rows == [(marker,)]
