"""Export / import figures: a context of N records + M x 384 float32 embeddings.

Throughput is reported in MB/s of the context's data (bytes of the files listed in the
manifest, i.e. what is put into and taken out of the archive) and the archive size. Baselines:
a plain ``tarfile`` ``w:gz`` write (default level 9) and ``r:gz`` read of the same files.
"""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import numpy as np

import app
from bench.common import Row

DIM = 384
BATCH = 50_000
GOAL_MBS = 100.0


def _records(start: int, n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"r{i}",
            "source_domain": f"domain-{i % 100}",
            "target_domain": f"target-{i % 37}",
            "quality_score": (i * 7919 % 1000) / 1000,
            "tags": ["bench", f"g{i % 3}"],
        }
        for i in range(start, start + n)
    ]


def run(quick: bool, workdir: Path) -> list[Row]:
    records, vectors = (50_000, 10_000) if quick else (1_000_000, 100_000)
    store = app.open_store(workdir / "store")
    ctx = store.context("bench")
    for start in range(0, records, BATCH):
        ctx.append("analogies", _records(start, min(BATCH, records - start)))
    rng = np.random.default_rng(0)
    ctx.embeddings.save(
        "vec", [f"e{i}" for i in range(vectors)], rng.standard_normal((vectors, DIM), np.float32)
    )
    archive = workdir / "bench.tar.gz"
    t0 = time.perf_counter()
    manifest = store.export_context("bench", archive)
    t_export = time.perf_counter() - t0
    data_mb = manifest.total_bytes / 1e6
    archive_mb = archive.stat().st_size / 1e6

    t0 = time.perf_counter()
    store.import_context(archive, name="copy")
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert store.context("copy").count("analogies") == records
    t_open = time.perf_counter() - t0

    src = store.root / "contexts" / "bench"
    files = [src / f.path for f in manifest.files]
    raw = workdir / "raw.tar.gz"
    t0 = time.perf_counter()
    with tarfile.open(raw, "w:gz") as tf:
        for f, p in zip(manifest.files, files, strict=True):
            tf.add(p, arcname=f.path)
    t_raw = time.perf_counter() - t0
    out = workdir / "raw-out"
    t0 = time.perf_counter()
    with tarfile.open(raw, "r:gz") as tf:
        tf.extractall(out, filter="data")
    t_raw_read = time.perf_counter() - t0
    store.close()

    label = f"{records:,} records + {vectors:,}x{DIM} emb"
    note = f"data {data_mb:.0f} MB, archive {archive_mb:.0f} MB; goal >= {GOAL_MBS:g} MB/s"
    return [
        Row("transfer", f"export {label}", data_mb / t_export, "MB/s", data_mb / t_raw, note=note),
        Row(
            "transfer",
            f"import (checked, indexed, renamed) {label}",
            data_mb / t_import,
            "MB/s",
            data_mb / t_raw_read,
            note="baseline: tarfile r:gz extractall",
        ),
        Row(
            "transfer",
            "first count on the imported context (index built at import)",
            t_open * 1e3,
            "ms",
        ),
        Row(
            "transfer",
            "export archive size vs tarfile gz-9",
            archive_mb,
            "MB",
            raw.stat().st_size / 1e6,
            higher_is_better=False,
        ),
    ]
