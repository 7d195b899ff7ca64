"""A ``postgresql://`` root opens a store on PostgreSQL with its files under a files URL:
the parts, the CLI's ``--files`` and ``$CTXSTORE_FILES``, password redaction, and
``Backend.atomic()`` (one transaction for a unit of work)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from backend_matrix import BACKENDS, kind_env

import app
from app.backends.postgres.backend import PostgresBackend


@pytest.fixture(params=BACKENDS[1:])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg_store(matrix_store_args: tuple[str, str | None]) -> Iterator[app.Store]:
    root, files = matrix_store_args
    with app.open_store(root, files=files) as store:
        yield store


def test_a_postgresql_store_keeps_records_embeddings_and_models(pg_store: app.Store) -> None:
    assert isinstance(pg_store.backend, PostgresBackend)
    ctx = pg_store.context("c1")
    receipt = ctx.append("items", [{"id": "a", "v": 1}, {"id": "b", "v": 2.5}])
    assert receipt.count == 2
    assert ctx.query("items", where={"v": {"$gt": 1}}) == [{"id": "b", "v": 2.5}]
    vectors = np.arange(12, dtype="float32").reshape(3, 4)
    ctx.embeddings.save("e", ids=["a", "b", "c"], vectors=vectors)
    assert [h.id for h in ctx.embeddings.search("e", vectors[2], k=1)] == ["c"]
    ctx.models.save("m", {"w": [1, 2, 3]}, format="joblib")
    assert ctx.models.load("m") == {"w": [1, 2, 3]}
    assert pg_store.contexts() == ["c1"]


def test_the_store_shows_its_url_without_the_password(pg_store: app.Store, tmp_path: Path) -> None:
    backend = pg_store.backend
    assert isinstance(backend, PostgresBackend)
    secret = PostgresBackend(
        "postgresql://alice:s3cret@127.0.0.1:1/x", files=str(tmp_path / "f"), work=tmp_path
    )
    assert "s3cret" not in repr(secret) and "s3cret" not in secret.url
    assert "alice:***@" in secret.url


def test_stats_name_the_database_not_the_working_folder(pg_store: app.Store) -> None:
    ctx = pg_store.context("c1")
    ctx.append("items", [{"id": "a", "v": 1}])
    ctx.embeddings.save("e", ids=["a"], vectors=np.ones((1, 4), dtype="float32"))
    stats = pg_store.stats()
    assert stats["root"] == pg_store.backend.url and "://" in stats["root"]
    assert str(pg_store.root) not in stats["root"]
    assert stats["bytes"] == sum(c["bytes"] for c in stats["contexts"].values())
    assert stats["contexts"]["c1"]["embeddings_bytes"] > 0 and stats["records"] == 1


def test_reads_inside_a_unit_of_work_see_its_own_writes(pg_store: app.Store) -> None:
    ctx = pg_store.context("c1")
    ctx.append("items", [{"id": "a", "v": 1}])
    with pg_store.backend.atomic():
        ctx.append("items", [{"id": "b", "v": 2}, {"id": "a", "v": 3}])
        seen = {r["id"]: r["v"] for r in ctx.iter("items")}
        assert seen == {"a": 3, "b": 2}
        assert ctx.count("items") == 2 and ctx.get("items", "a") == {"id": "a", "v": 3}
        more = ctx.iter("items")
        first = next(more)  # a stream open while the unit writes again
        ctx.append("items", [{"id": "c", "v": 4}])
        assert len([first, *more]) == 2  # the stream's rows are those of when it began
    assert sorted(r["id"] for r in ctx.iter("items")) == ["a", "b", "c"]


def test_atomic_groups_writes_into_one_transaction(pg_store: app.Store) -> None:
    backend = pg_store.backend
    assert isinstance(backend, PostgresBackend)
    with backend.db.transaction() as conn:
        conn.execute("CREATE TABLE probe (v int)")
    with pytest.raises(RuntimeError), backend.atomic():
        with backend.db.transaction() as conn:
            conn.execute("INSERT INTO probe VALUES (1)")
        raise RuntimeError("the unit of work fails after its first write")
    with backend.atomic():
        with backend.db.transaction() as conn:
            conn.execute("INSERT INTO probe VALUES (2)")
        with backend.db.connection() as conn:  # a read inside the unit sees its writes
            assert conn.execute("SELECT count(*) FROM probe").fetchone() == (1,)
    with backend.db.connection() as conn:
        assert conn.execute("SELECT v FROM probe").fetchall() == [(2,)]


def test_the_cli_opens_a_postgresql_store_with_files(
    matrix_store_args: tuple[str, str | None], tmp_path: Path
) -> None:
    root, files = matrix_store_args
    assert files is not None
    data = tmp_path / "items.jsonl"
    data.write_text('{"id": "a", "v": 1}\n')
    base = [sys.executable, "-m", "app", "--root", root, "--files", files]
    done = subprocess.run(
        [*base, "append", "c1", "items", str(data)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    env = kind_env(root, files)  # the same store named by $CTXSTORE_ROOT / $CTXSTORE_FILES
    listed = subprocess.run(
        [sys.executable, "-m", "app", "contexts"], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert "c1" in listed.stdout
    assert os.environ.get("CTXSTORE_ROOT") is None
