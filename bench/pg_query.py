"""PostgreSQL query figure: an indexed filtered query (a domain, a quality range, ordered by
quality, limit 100) over 1,000,000 analogies (100,000 with ``--quick``) through a
``postgresql://`` store, against the same query written by hand in SQL over the same table and
indexes (issue 12 "Speed": at most 2x the raw SQL).

Needs a server: ``$CTXSTORE_BENCH_PG_URL`` or ``$CTXSTORE_TEST_PG_URL`` (``make services``
then ``. .services/env``; ``make bench`` does it); without one, or while the store's records
are not kept in PostgreSQL, the section reports nothing. Works in a fresh schema, dropped
afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import app
from app.core.codec import decode
from bench.common import Row, best_of
from bench.s3_embeddings import fresh_schema

SECTION = "pg"
BATCH = 10_000
DOMAIN = "domain-7"
LOW, HIGH = 0.2, 0.9

RAW_SQL = (
    "SELECT raw FROM ctxstore_records"
    " WHERE context = %s AND collection = %s"
    " AND (doc -> 'source_domain'::text) = to_jsonb(%s::text)"
    " AND (doc -> 'quality_score'::text) >= to_jsonb(%s::numeric)"
    " AND (doc -> 'quality_score'::text) <= to_jsonb(%s::numeric)"
    " ORDER BY (doc -> 'quality_score'::text) DESC, seq DESC, pos DESC LIMIT 100"
)
"""The hand-written query: the expressions of the expression index on (source_domain,
quality_score), ties ordered as the store orders them (descending: the latest first)."""


def analogies(start: int, n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"a{i}",
            "source_domain": f"domain-{i % 100}",
            "target_domain": f"target-{i % 37}",
            "quality_score": (i * 7919 % 1000) / 1000,
            "mapping": {"relation": "causes", "strength": i % 10},
        }
        for i in range(start, start + n)
    ]


def run(quick: bool, workdir: Path) -> list[Row]:
    url = os.environ.get("CTXSTORE_BENCH_PG_URL") or os.environ.get("CTXSTORE_TEST_PG_URL")
    if not url:
        print("[bench] pg_query: no PostgreSQL ($CTXSTORE_BENCH_PG_URL)", file=sys.stderr)
        return []
    import psycopg

    os.environ.setdefault("CTXSTORE_WORK", str(workdir / "work"))
    n = 100_000 if quick else 1_000_000
    where = {"source_domain": DOMAIN, "quality_score": {"$gte": LOW, "$lte": HIGH}}
    with (
        fresh_schema(url) as store_url,
        app.open_store(store_url, files=workdir / "files") as store,
    ):
        ctx = store.context("bench")
        if type(ctx._records).__module__.split(".")[2] != "postgres":
            print("[bench] pg_query: records are not kept in PostgreSQL here", file=sys.stderr)
            return []
        t0 = time.perf_counter()
        for start in range(0, n, BATCH):
            ctx.append("analogies", analogies(start, BATCH))
        load_s = time.perf_counter() - t0
        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute("ANALYZE ctxstore_records")
            params = ("bench", "analogies", DOMAIN, LOW, HIGH)

            def raw() -> list[bytes]:
                return [bytes(r[0]) for r in conn.execute(RAW_SQL, params).fetchall()]

            def ours() -> list[dict[str, object]]:
                return ctx.query("analogies", where=where, order_by="-quality_score", limit=100)

            got, expected = ours(), raw()
            same = [r["id"] for r in got] == [decode(b)["id"] for b in expected]
            assert same and len(got) == 100, "the store and the raw SQL disagree"
            t_raw = best_of(raw, repeat=20)
            t_ours = best_of(ours, repeat=20)
    return [
        Row(
            SECTION,
            f"PG indexed query, domain + range + order + limit 100 ({n // 1000}k recs)",
            t_ours * 1e3,
            "ms",
            t_raw * 1e3,
            higher_is_better=False,
            goal=2.0,
            note=f"raw: the same SQL by hand, same indexes; loaded at {n / load_s:,.0f} rec/s",
        )
    ]
