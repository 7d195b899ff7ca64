"""The backend matrix: run a test module's store-level tests on every backend.

Kinds (``BACKENDS``): ``embedded`` (a directory), ``pg-files`` (PostgreSQL + a local directory
as the files URL), ``pg-s3`` (PostgreSQL + a bucket on the moto S3 server). Each PostgreSQL
store gets a FRESH schema in the module's database (``pg_url``: creating a schema costs
milliseconds, a database ~0.25 s), named through the URL's ``search_path`` option, and its own
working folder (``$CTXSTORE_WORK``) under the test's tmp folder; each S3 store a fresh bucket.

Use: ``matrix_store(kind, tmp_path, request)`` returns ``(root, files)`` for ``open_store``;
the ``backend_kind`` fixture (parametrised where a module asks for it) names the kind.
Servers missing: in CI the test fails, elsewhere it is skipped saying how to enable it
(``tests/backend_servers.py``).
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ("embedded", "pg-files", "pg-s3")


def schema_url(database_url: str, schema: str) -> str:
    """``database_url`` whose connections use ``schema`` first (``search_path``)."""
    parts = urllib.parse.urlsplit(database_url)
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("options", f"-c search_path={schema}"))
    return urllib.parse.urlunsplit(
        parts._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote))
    )


def fresh_schema(database_url: str) -> Iterator[str]:
    """A new schema in ``database_url``'s database, dropped afterwards; yields its URL."""
    import psycopg
    from psycopg import sql

    name = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield schema_url(database_url, name)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def matrix_store_args(
    backend_kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, str | None]]:
    """``(root, files)`` of a fresh, empty store of kind ``backend_kind``."""
    if backend_kind == "embedded":
        yield str(tmp_path / "store"), None
        return
    pg_url: str = request.getfixturevalue("pg_url")
    monkeypatch.setenv("CTXSTORE_WORK", str(tmp_path / "work"))
    if backend_kind == "pg-files":
        files = str(tmp_path / "files")
    elif backend_kind == "pg-s3":
        files = f"{request.getfixturevalue('s3_url')}/store"
    else:
        raise ValueError(f"unknown backend kind {backend_kind!r} (known: {BACKENDS})")
    yield from ((url, files) for url in fresh_schema(pg_url))


def kind_env(root: str, files: str | None) -> dict[str, str]:
    """Environment for a subprocess opening the same store (``$CTXSTORE_ROOT`` /
    ``$CTXSTORE_FILES``; the AWS variables and ``$CTXSTORE_WORK`` are inherited)."""
    env = dict(os.environ, CTXSTORE_ROOT=root)
    if files is not None:
        env["CTXSTORE_FILES"] = files
    return env
