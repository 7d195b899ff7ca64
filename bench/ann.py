"""Approximate search (``make bench-ann``; optional extra ``ann``): 200,000 x 384 float32
vectors from a Gaussian mixture of 1,000 centres (fixed seed), an HNSW index built by
``ctx.embeddings.build_index``, then:

* recall@10 of ``search(q, k=10, exact=False)`` against ``search(q, k=10)`` (exact) over 200
  queries drawn from the same mixture (goal >= 0.95);
* per single query: median time of ``search(exact=False)`` against the exact single-query
  search of the same store (goal: >= 20x faster, i.e. a ratio <= 0.05); raw numpy brute force
  over the in-memory matrix is in the note;
* build time (no goal; reported), index file size.

Run alone: ``python -m bench.ann [--quick]`` (outside ``make bench``: the build takes minutes
on 2 cores). Other processes loading the machine slow the build most.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import app
from bench.common import Row, format_table

SIZES = {"quick": (20_000, 64, 100), "full": (200_000, 384, 1_000)}
SEED = 20261203
NOISE = 0.6
QUERIES = 200
PARAMS: dict[str, Any] = {"dtype": "f16", "connectivity": 16, "expansion_add": 64}


def mixture(rng: np.random.Generator, n: int, centres: np.ndarray[Any, Any]) -> Any:
    pick = rng.integers(0, centres.shape[0], n)
    noise = rng.standard_normal((n, centres.shape[1]), dtype=np.float32)
    return centres[pick] + np.float32(NOISE) * noise


def run(quick: bool, workdir: Path) -> list[Row]:
    n, dim, n_centres = SIZES["quick" if quick else "full"]
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((n_centres, dim), dtype=np.float32)
    vectors = mixture(rng, n, centres)
    queries = mixture(rng, QUERIES, centres)
    ids = [f"v{i}" for i in range(n)]
    store = app.open_store(workdir / "store")
    sets = store.context("bench").embeddings
    sets.save("mix", ids, vectors)
    t0 = time.perf_counter()
    sets.build_index("mix", **PARAMS)
    t_build = time.perf_counter() - t0
    info = sets.index_info("mix")
    assert info is not None
    exact_all = sets.search("mix", queries, k=10)
    sets.search("mix", queries[0], k=10, exact=False)  # first use: SHA-256 of the graph file
    approx: list[list[app.Hit]] = []
    t_ann: list[float] = []
    for q in queries:
        t = time.perf_counter()
        approx.append(sets.search("mix", q, k=10, exact=False))
        t_ann.append(time.perf_counter() - t)
    recall = float(
        np.mean(
            [
                len({h.id for h in a} & {h.id for h in e}) / 10
                for a, e in zip(approx, exact_all, strict=True)
            ]
        )
    )
    t_exact: list[float] = []
    for q in queries[:20]:
        t = time.perf_counter()
        sets.search("mix", q, k=10)
        t_exact.append(time.perf_counter() - t)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    t_numpy: list[float] = []
    for q in queries[:20]:
        t = time.perf_counter()
        scores = unit @ (q / np.linalg.norm(q))
        top = np.argpartition(-scores, 10)[:10]
        top[np.argsort(-scores[top])]
        t_numpy.append(time.perf_counter() - t)
    store.close()
    label = f"{n:,}x{dim}, {n_centres:,} centres"
    ann_ms = statistics.median(t_ann) * 1e3
    exact_ms = statistics.median(t_exact) * 1e3
    return [
        Row(
            "ann",
            f"recall@10 exact=False vs exact, {label}",
            recall,
            "",
            baseline=1.0,
            goal=0.95,
            note=f"{QUERIES} queries; params {PARAMS}",
        ),
        Row(
            "ann",
            f"single query exact=False vs exact search, {label}",
            ann_ms,
            "ms",
            baseline=exact_ms,
            higher_is_better=False,
            goal=0.05,
            note=(
                f"{exact_ms / ann_ms:.0f}x faster; raw numpy brute force "
                f"{statistics.median(t_numpy) * 1e3:.1f} ms; medians"
            ),
        ),
        Row(
            "ann",
            f"build_index, {label}",
            t_build,
            "s",
            note=f"{n / t_build:,.0f} rows/s; index file {info['size_bytes'] / 1e6:.0f} MB",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ann", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 x 64 (smoke run)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ctxbench-ann-") as tmp:
        rows = run(args.quick, Path(tmp))
    print(format_table(rows))
    misses = [r for r in rows if r.verdict == "MISS"]
    print(f"\n{len(rows)} figures, {len(misses)} goals missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
