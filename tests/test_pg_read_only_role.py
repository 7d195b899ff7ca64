"""Reads never write, on PostgreSQL too: a role that may only SELECT reads a store that
another role created and filled (contexts, collections, get, query, count, iter, history,
embeddings, models, stats, workflow listings). A REAL PostgreSQL server."""

from __future__ import annotations

import contextlib
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from test_context_catalog import pg_database  # noqa: F401 - the fixture

import app


@pytest.fixture
def reader_url(pg_database: str) -> Iterator[str]:  # noqa: F811
    """``pg_database`` as a fresh LOGIN role that may only SELECT (granted after the
    writer made the store, see the test)."""
    import psycopg
    from psycopg import sql

    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    parts = urllib.parse.urlsplit(pg_database)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{role}@{host}" + (f":{parts.port}" if parts.port else "")
    try:
        yield urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _grant_select(url: str, reader: str) -> None:
    import psycopg
    from psycopg import sql

    role = urllib.parse.urlsplit(reader).username
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )


@contextlib.contextmanager
def written_then_read(
    owner_url: str,
    reader_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fill: Callable[[app.Store], None],
) -> Iterator[app.Store]:
    """The store filled by ``fill`` as its owner, then opened (``create=False``) by the
    SELECT-only reader on another host (its own working folder)."""
    files = str(tmp_path / "files")
    monkeypatch.setenv("CTXSTORE_WORK", str(tmp_path / "work-writer"))
    with app.open_store(owner_url, files=files) as store:
        fill(store)
    _grant_select(owner_url, reader_url)
    monkeypatch.setenv("CTXSTORE_WORK", str(tmp_path / "work-reader"))
    with app.open_store(reader_url, files=files, create=False) as store:
        yield store


def _fill(store: app.Store) -> None:
    ctx = store.context("c")
    ctx.append("items", [{"id": "a", "v": 1}, {"id": "b", "v": 2}], batch_id="b1")
    ctx.embeddings.save("e", ["a", "b"], np.eye(2, 4, dtype="float32"))
    ctx.models.save("m", {"w": 1}, format="joblib")


def test_a_select_only_role_reads_everything(
    pg_database: str,  # noqa: F811
    reader_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with written_then_read(pg_database, reader_url, tmp_path, monkeypatch, _fill) as store:
        assert store.contexts() == ["c"]
        ctx = store.context("c", create=False)
        assert ctx.collections() == ["items"]
        assert ctx.get("items", "a") == {"id": "a", "v": 1}
        assert ctx.query("items", where={"v": {"$gt": 1}}) == [{"id": "b", "v": 2}]
        assert ctx.count("items") == 2 and len(list(ctx.iter("items"))) == 2
        assert len(ctx.history("items", "a")) == 1
        hits = ctx.embeddings.search("e", np.eye(1, 4, dtype="float32")[0], k=1)
        assert [h.id for h in hits] == ["a"]
        assert [i.name for i in ctx.models.list()] == ["m"]
        assert ctx.models.load("m") == {"w": 1}
        assert store.stats()["records"] == 2
        assert store.workflows.list() == []


def test_a_select_only_role_reads_a_store_that_never_held_a_record(
    pg_database: str,  # noqa: F811
    reader_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fill(store: app.Store) -> None:
        store.context("c")

    with written_then_read(pg_database, reader_url, tmp_path, monkeypatch, fill) as store:
        ctx = store.context("c", create=False)
        assert ctx.collections() == []
        assert ctx.count("items") == 0  # an unknown collection holds nothing
        assert ctx.embeddings.list() == [] and ctx.models.list() == []
        assert store.stats()["records"] == 0
