"""Fixtures for tests against REAL servers: PostgreSQL and an S3 endpoint (moto_server, HTTP).

The servers come from ``.ci/services.py`` (``make test`` starts them and exports
``CTXSTORE_TEST_PG_URL`` / ``CTXSTORE_TEST_S3_ENDPOINT``; by hand: ``make services`` then
``. .services/env``), or from any server named by those variables.

- ``pg_url`` (module scope): a FRESH database per test module, created from the server's
  ``CTXSTORE_TEST_PG_URL`` and dropped (WITH (FORCE)) after the module. Tests in a module share
  it: use a table/schema name per test if they must not see each other.
- ``s3_url`` (function scope): a FRESH bucket per test, ``s3://<bucket>``. The session fixture
  ``s3_endpoint`` points the AWS environment at the endpoint (AWS_ENDPOINT_URL, dummy
  AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION=us-east-1) for the whole
  session; ``s3_storage_options()`` gives the same as fsspec/s3fs keyword arguments.
- ``restart_postgres()``: after a ``kill -9`` of ``postgres_pid()``, brings the same cluster
  back (same data folder, same URL) via ``.ci/services.py restart-pg``. Only for a server that
  script started (``pg_restartable()``).

Variable missing: in CI (``CI=true``) the test FAILS; elsewhere it is skipped, saying how to
enable it. psycopg is imported lazily (it is an optional dependency).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_ENV = "CTXSTORE_TEST_PG_URL"
S3_ENV = "CTXSTORE_TEST_S3_ENDPOINT"
REPO = Path(__file__).resolve().parent.parent
SERVICES = REPO / ".ci" / "services.py"
AWS_DUMMY = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _required(var: str, what: str) -> str:
    value = os.environ.get(var, "")
    if value:
        return value
    reason = (
        f"{var} is not set: no {what} server for this test. Enable: `make services && "
        f". .services/env` (or `{var}=... pytest`); `make test` does it for you."
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def _services_dir() -> Path:
    return Path(os.environ.get("CTXSTORE_SERVICES_DIR") or REPO / ".services")


def _state() -> dict[str, Any]:
    try:
        return dict(json.loads((_services_dir() / "state.json").read_text()))
    except (OSError, ValueError):
        return {}


def pg_restartable() -> bool:
    """True when the PostgreSQL server under test was started by .ci/services.py."""
    pg = _state().get("pg") or {}
    return bool(pg) and pg.get("url") == os.environ.get(PG_ENV)


def postgres_pid() -> int:
    """PID of the postmaster started by .ci/services.py (current, also after a restart)."""
    return int(_state()["pg"]["proc"]["pid"])


def restart_postgres() -> None:
    """Start the (killed) PostgreSQL server again: same data folder, port and URL."""
    env = dict(os.environ, CTXSTORE_SERVICES_DIR=str(_services_dir()))
    done = subprocess.run(
        [sys.executable, str(SERVICES), "restart-pg"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the server's base database (``ctxstore_test``); prefer ``pg_url``."""
    return _required(PG_ENV, "PostgreSQL")


@pytest.fixture(scope="module")
def pg_url(pg_server_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this test module; dropped afterwards."""
    import psycopg
    from psycopg import sql

    module = request.module.__name__.rsplit(".", 1)[-1].lower()
    name = f"t_{module[:40]}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The S3 endpoint URL; sets the AWS environment (endpoint + dummy keys) for the session."""
    endpoint = _required(S3_ENV, "S3")
    saved = {k: os.environ.get(k) for k in [*AWS_DUMMY, "AWS_ENDPOINT_URL"]}
    os.environ.update(AWS_DUMMY, AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def s3_storage_options() -> dict[str, Any]:
    """fsspec/s3fs keyword arguments for the test endpoint (explicit, not via environment)."""
    return {
        "key": AWS_DUMMY["AWS_ACCESS_KEY_ID"],
        "secret": AWS_DUMMY["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {
            "endpoint_url": os.environ[S3_ENV],
            "region_name": AWS_DUMMY["AWS_DEFAULT_REGION"],
        },
    }


@pytest.fixture
def s3_url(s3_endpoint: str) -> str:
    """``s3://<bucket>``: a fresh, empty bucket for this test (left to die with the server)."""
    bucket = f"t-{uuid.uuid4().hex[:20]}"
    req = urllib.request.Request(f"{s3_endpoint}/{bucket}", method="PUT")
    with urllib.request.urlopen(req, timeout=10) as reply:
        assert reply.status == 200, reply.status
    return f"s3://{bucket}"
