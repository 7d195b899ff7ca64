"""Embedding save to object storage: MB/s of ``ctx.embeddings.save`` on a ``postgresql://``
store whose files go to S3 (the moto server of ``.ci/services.py``) and to a directory, beside
the embedded figure measured in the same run (no goal: issue 12 asks for the figure).

Needs servers: ``$CTXSTORE_TEST_PG_URL`` and ``$CTXSTORE_TEST_S3_ENDPOINT`` (``make services``
then ``. .services/env``; ``make bench`` does it); without them the section reports nothing.
Each run works in a fresh schema and a fresh bucket.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import app
from bench.common import Row, best_of

SECTION = "s3"
AWS_DUMMY = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new schema of ``url``'s database, dropped afterwards; yields a URL using it."""
    import psycopg
    from psycopg import sql

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from backend_matrix import schema_url

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield schema_url(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def fresh_bucket(endpoint: str) -> str:
    bucket = f"bench-{uuid.uuid4().hex[:16]}"
    req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
    with urllib.request.urlopen(req, timeout=10) as reply:
        assert reply.status == 200, reply.status
    return f"s3://{bucket}/store"


def _save_rate(store: app.Store, vectors: np.ndarray, ids: list[str], repeat: int) -> float:
    """Best MB/s of saving a new set (a new file each time on every backend)."""
    ctx = store.context("bench")
    names = (f"set{i}" for i in range(100))
    seconds = best_of(lambda: ctx.embeddings.save(next(names), ids, vectors), repeat=repeat)
    return vectors.nbytes / 1e6 / seconds


def _load_rate(store: app.Store, nbytes: int) -> float:
    """MB/s of the first load of a set on a host that never read it (download + SHA-256)."""
    ctx = store.context("bench")
    t0 = time.perf_counter()
    ctx.embeddings.load("set0", mmap=True)
    return nbytes / 1e6 / (time.perf_counter() - t0)


def run(quick: bool, workdir: Path) -> list[Row]:
    pg = os.environ.get("CTXSTORE_BENCH_PG_URL") or os.environ.get("CTXSTORE_TEST_PG_URL")
    endpoint = os.environ.get("CTXSTORE_TEST_S3_ENDPOINT")
    if not pg or not endpoint:
        print("[bench] s3: no PostgreSQL / S3 server (make services)", file=sys.stderr)
        return []
    for key, value in AWS_DUMMY.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("AWS_ENDPOINT_URL", endpoint)
    n, dim = (20_000, 128) if quick else (100_000, 256)
    repeat = 3
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    ids = [f"w{i}" for i in range(n)]
    label = f"{n // 1000}k x {dim}"

    with app.open_store(workdir / "embedded") as store:
        embedded = _save_rate(store, vectors, ids, repeat)
    rows: list[Row] = []
    for kind, files in (("PG+S3", fresh_bucket(endpoint)), ("PG+dir", None)):
        where = files if files is not None else str(workdir / "files")
        with fresh_schema(pg) as url:
            os.environ["CTXSTORE_WORK"] = str(workdir / f"work-{uuid.uuid4().hex[:6]}")
            with app.open_store(url, files=where) as store:
                rate = _save_rate(store, vectors, ids, repeat)
            os.environ["CTXSTORE_WORK"] = str(workdir / f"work-{uuid.uuid4().hex[:6]}")
            with app.open_store(url, files=where) as store:  # another host: an empty cache
                first = _load_rate(store, vectors.nbytes)
        rows.append(
            Row(
                SECTION,
                f"embeddings.save {kind} {label}",
                rate,
                "MB/s",
                embedded,
                note="S3: moto server; baseline: the same save, embedded backend (no goal)",
            )
        )
        rows.append(
            Row(
                SECTION,
                f"embeddings.load new host {kind} {label}",
                first,
                "MB/s",
                note="download into the host's cache + SHA-256 check + memory map",
            )
        )
    return rows
