"""The growth table: how each cost grows with size (10k, 100k, 1M records or vectors).

Each row is a per-item cost at one size, with the same cost at the smallest size as its
baseline, so the ratio shows growth: 1.0 is perfectly linear total cost (flat per item),
anything well above 1 is worse than linear. Every figure is the median of 3 runs.

- append: the marginal cost of a 10k batch appended when the collection already holds N
  records (3 probe batches at each size, median), durable (fsync per batch), two built-in
  indexes (the ``analogies`` collection);
- query: indexed filter + order + limit 100 at N (median of 25), in ms per query;
- iter: a full ``iter`` at N, per record;
- import: ``import_context`` of an archive of N records, per record;
- embeddings save / single-query exact search at N vectors x 384 float32, per vector.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import app
from bench.common import Row
from bench.records import BATCH, analogies

DIM = 384
RUNS = 3
WHERE = {"source_domain": "domain-42", "quality_score": {"$gte": 0.25, "$lt": 0.75}}
GROWTH_GOAL = 1.5  # per-item cost at the largest size vs the smallest


def median_time(fn: Callable[[], Any], runs: int = RUNS) -> float:
    """Median wall time of ``runs`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rows(figure: str, unit: str, sizes: list[int], costs: list[float], what: str) -> list[Row]:
    return [
        Row(
            "growth",
            f"{figure} at {n:,} {what}",
            cost,
            unit,
            costs[0],
            higher_is_better=False,
            goal=GROWTH_GOAL if n == sizes[-1] and len(sizes) > 1 else None,
            note=f"baseline: the same at {sizes[0]:,}",
        )
        for n, cost in zip(sizes, costs, strict=True)
    ]


def _records_growth(sizes: list[int], workdir: Path) -> list[Row]:
    append_us, query_ms, iter_us, import_us = [], [], [], []
    with app.open_store(workdir / "records") as store:
        ctx = store.context("grow")
        filled = 0
        probe = 10**9  # ids of probe batches never meet the fill's
        for n in sizes:
            while filled < n:
                ctx.append("analogies", analogies(filled, BATCH))
                filled += BATCH
            batches = iter([analogies(probe + i * BATCH, BATCH) for i in range(RUNS)])
            probe += RUNS * BATCH
            append_us.append(
                median_time(lambda b=batches: ctx.append("analogies", next(b))) / BATCH * 1e6
            )
            query_ms.append(
                median_time(
                    lambda: ctx.query("analogies", WHERE, order_by="-quality_score", limit=100), 25
                )
                * 1e3
            )
            total = ctx.count("analogies")
            iter_us.append(median_time(lambda: sum(1 for _ in ctx.iter("analogies"))) / total * 1e6)
            archive = workdir / f"grow-{n}.tar.gz"
            store.export_context("grow", archive)
            names = iter(f"copy-{n}-{i}" for i in range(RUNS))
            import_us.append(
                median_time(lambda a=archive, ns=names: store.import_context(a, name=next(ns)))
                / total
                * 1e6
            )
            for i in range(RUNS):
                store.drop_context(f"copy-{n}-{i}")
            archive.unlink()
    return [
        *_rows("append (10k batch, durable)", "us/rec", sizes, append_us, "records"),
        *_rows("indexed query + order + limit 100", "ms", sizes, query_ms, "records"),
        *_rows("iter", "us/rec", sizes, iter_us, "records"),
        *_rows("import", "us/rec", sizes, import_us, "records"),
    ]


def _vectors_growth(sizes: list[int], workdir: Path) -> list[Row]:
    save_us, search_ns = [], []
    rng = np.random.default_rng(0)
    with app.open_store(workdir / "vectors") as store:
        ctx = store.context("grow")
        for n in sizes:
            ids = [f"e{i}" for i in range(n)]
            vectors = rng.standard_normal((n, DIM), dtype=np.float32)
            save = functools.partial(ctx.embeddings.save, "v", ids, vectors)
            save_us.append(median_time(save) / n * 1e6)
            search = functools.partial(ctx.embeddings.search, "v", vectors[n // 2], k=10)
            search()  # the first search verifies the file
            search_ns.append(median_time(search) / n * 1e9)
            ctx.embeddings.delete("v")
    return [
        *_rows(f"embeddings.save (x {DIM} f32)", "us/vec", sizes, save_us, "vectors"),
        *_rows("exact search, 1 query, top-10", "ns/vec", sizes, search_ns, "vectors"),
    ]


def run(quick: bool, workdir: Path) -> list[Row]:
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    return _records_growth(sizes, workdir) + _vectors_growth(sizes, workdir)
