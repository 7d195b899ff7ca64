"""PostgreSQL record figures: append of validated analogies in batches of 10,000 through a
``postgresql://`` store, against raw psycopg COPY into a table with the same indexes.

Needs a server: ``$CTXSTORE_BENCH_PG_URL`` or ``$CTXSTORE_TEST_PG_URL`` (``python3
.ci/services.py start`` then ``. ./.services/env``); without one the section reports nothing.
Each run works in fresh schemas of that database, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson

from bench.common import Row
from bench.records import BATCH, analogies

RAW_DDL = (
    "CREATE TABLE t (context text NOT NULL, collection text NOT NULL, id text NOT NULL,"
    " seq bigint NOT NULL, pos integer NOT NULL, doc jsonb NOT NULL, raw bytea NOT NULL,"
    " PRIMARY KEY (context, collection, id))",
    "CREATE INDEX t_order ON t (context, collection, seq, pos)",
    "CREATE INDEX t_i1 ON t (context, collection, (doc -> 'source_domain'),"
    " (doc -> 'quality_score'))",
    "CREATE INDEX t_i2 ON t (context, collection, (doc -> 'target_domain'),"
    " (doc -> 'quality_score'))",
)


def _url() -> str | None:
    return os.environ.get("CTXSTORE_BENCH_PG_URL") or os.environ.get("CTXSTORE_TEST_PG_URL")


@contextlib.contextmanager
def _schema(url: str) -> Iterator[str]:
    """A fresh schema; yields a URL whose connections use it."""
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


def raw_copy(url: str, batches: list[list[dict[str, object]]]) -> float:
    """orjson per record + one COPY per batch (binary) and an explicit commit."""
    import psycopg

    with psycopg.connect(url) as conn:
        for statement in RAW_DDL:
            conn.execute(statement)
        conn.commit()
        t0 = time.perf_counter()
        for seq, batch in enumerate(batches):
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY t (context, collection, id, seq, pos, doc, raw)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                # doc: jsonb's binary input (version byte 1 + the JSON text)
                copy.set_types(["text", "text", "text", "int8", "int4", "bytea", "bytea"])
                for pos, rec in enumerate(batch):
                    data = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)
                    copy.write_row(
                        ("bench", "analogies", rec["id"], seq, pos, b"\x01" + data, data)
                    )
            conn.commit()
        return time.perf_counter() - t0


def store_append(url: str, files: Path, batches: list[list[dict[str, object]]]) -> float:
    import app

    with app.open_store(url, files=files) as store:
        ctx = store.context("bench")
        ctx.append("analogies", batches[0][:1], batch_id="warm")  # tables and indexes
        t0 = time.perf_counter()
        for batch in batches:
            ctx.append("analogies", batch)
        return time.perf_counter() - t0


def run(quick: bool, workdir: Path) -> list[Row]:
    url = _url()
    if url is None:
        print("[bench] pg_append: no PostgreSQL ($CTXSTORE_BENCH_PG_URL)", file=sys.stderr)
        return []
    os.environ.setdefault("CTXSTORE_WORK", str(workdir / "work"))
    n = 50_000 if quick else 200_000
    batches = [analogies(i, BATCH) for i in range(0, n, BATCH)]
    with _schema(url) as raw_url:
        raw_t = raw_copy(raw_url, batches)
    with _schema(url) as store_url:
        store_t = store_append(store_url, workdir / "files", batches)
    return [
        Row(
            "pg",
            f"PostgreSQL append, batches of {BATCH:,} ({n:,} analogies)",
            n / store_t,
            "rec/s",
            n / raw_t,
            goal=0.5,
            note="raw: orjson + binary COPY, same table and indexes, commit per batch",
        )
    ]
