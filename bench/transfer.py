"""Export / import figures: a context of N records + N/10 x 384 float32 embeddings.

Throughput is reported in MB/s of the context's data (bytes of the files listed in the
manifest, i.e. what is put into and taken out of the archive) and, for import, also in MB/s
of the archive (the issue's goal: >= 100 MB/s of archive). Baselines, measured in the same
run on the same files: a plain ``tarfile`` ``w:gz`` write (default level 9) and ``r:gz``
``extractall`` of that archive (no hashing, no fsync, no index). Every figure is the median of
3 runs. The growth rows repeat import at 10k / 100k / 1M records (per-record cost), the
compaction row exports a log where 10% of the records were written twice (the path that
parses the log; a log compaction would keep whole is copied instead).
"""

from __future__ import annotations

import shutil
import statistics
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import app
from bench.common import Row

DIM = 384
BATCH = 50_000
GOAL_MBS = 100.0
REPEAT = 3


def _records(start: int, n: int, version: int = 0) -> list[dict[str, object]]:
    return [
        {
            "id": f"r{i}",
            "source_domain": f"domain-{i % 100}",
            "target_domain": f"target-{i % 37}",
            "quality_score": (i * 7919 % 1000) / 1000,
            "tags": ["bench", f"g{i % 3}"],
            **({"version": version} if version else {}),
        }
        for i in range(start, start + n)
    ]


def _fill(store: app.Store, name: str, records: int, vectors: int) -> None:
    ctx = store.context(name)
    for start in range(0, records, BATCH):
        ctx.append("analogies", _records(start, min(BATCH, records - start)))
    rng = np.random.default_rng(0)
    ctx.embeddings.save(
        "vec", [f"e{i}" for i in range(vectors)], rng.standard_normal((vectors, DIM), np.float32)
    )


def _median(fn: Callable[[int], object], clean: Callable[[int], object] | None = None) -> float:
    """Median wall time of ``REPEAT`` runs of ``fn(run)``; ``clean(run)`` after each, untimed."""
    times = []
    for run in range(REPEAT):
        t0 = time.perf_counter()
        fn(run)
        times.append(time.perf_counter() - t0)
        if clean is not None:
            clean(run)
    return statistics.median(times)


def _import_time(store: app.Store, archive: Path, prefix: str) -> float:
    def imp(run: int) -> None:
        store.import_context(archive, name=f"{prefix}{run}")

    return _median(imp, lambda run: store.drop_context(f"{prefix}{run}"))


def _raw(workdir: Path, root: Path, paths: list[str]) -> tuple[float, float, Path]:
    """Median seconds of a tarfile w:gz write and r:gz extractall of ``paths``; the archive."""
    raw = workdir / "raw.tar.gz"

    def write(_: int) -> None:
        with tarfile.open(raw, "w:gz") as tf:
            for p in paths:
                tf.add(root / p, arcname=p)

    out = workdir / "raw-out"

    def read(_: int) -> None:
        with tarfile.open(raw, "r:gz") as tf:
            tf.extractall(out, filter="data")

    t_write = _median(write)
    t_read = _median(read, lambda _: shutil.rmtree(out))
    return t_write, t_read, raw


def _growth(store: app.Store, workdir: Path, sizes: list[int]) -> list[Row]:
    rows = []
    for n in sizes:
        name = f"g{n}"
        _fill(store, name, n, n // 10)
        archive = workdir / f"{name}.tar.gz"
        manifest = store.export_context(name, archive)
        t = _import_time(store, archive, f"{name}c")
        rows.append(
            Row(
                "transfer",
                f"import growth: {n:,} records + {n // 10:,}x{DIM} emb",
                t / n * 1e6,
                "us/record",
                note=f"{manifest.total_bytes / 1e6 / t:.0f} MB/s data, "
                f"{archive.stat().st_size / 1e6 / t:.0f} MB/s archive",
            )
        )
        store.drop_context(name)
        archive.unlink()
    return rows


def _compaction_export(store: app.Store, workdir: Path, records: int) -> Row:
    ctx = store.context("upserts")
    for start in range(0, records, BATCH):
        ctx.append("analogies", _records(start, min(BATCH, records - start)))
    ctx.append("analogies", _records(0, records // 10, version=2))
    archive = workdir / "upserts.tar.gz"
    holder: list[int] = []

    def exp(_: int) -> None:
        holder.append(store.export_context("upserts", archive).total_bytes)

    t = _median(exp)
    store.drop_context("upserts")
    return Row(
        "transfer",
        f"export {records:,} records, 10% written twice (compaction path)",
        holder[-1] / 1e6 / t,
        "MB/s",
    )


def run(quick: bool, workdir: Path) -> list[Row]:
    records, vectors = (50_000, 5_000) if quick else (1_000_000, 100_000)
    growth = [10_000] if quick else [10_000, 100_000]
    store = app.open_store(workdir / "store")
    rows = _growth(store, workdir, growth)
    rows.append(_compaction_export(store, workdir, records // 10))
    _fill(store, "bench", records, vectors)
    archive = workdir / "bench.tar.gz"
    holder = []

    def exp(_: int) -> None:
        holder.append(store.export_context("bench", archive))

    t_export = _median(exp)
    manifest = holder[-1]
    data_mb = manifest.total_bytes / 1e6
    archive_mb = archive.stat().st_size / 1e6
    t_import = _import_time(store, archive, "copy")
    store.import_context(archive, name="copy")
    t0 = time.perf_counter()
    assert store.context("copy").count("analogies") == records
    t_open = time.perf_counter() - t0

    src = store.root / "contexts" / "bench"
    t_raw, t_raw_read, raw = _raw(workdir, src, [f.path for f in manifest.files])
    raw_mb = raw.stat().st_size / 1e6
    store.close()

    label = f"{records:,} records + {vectors:,}x{DIM} emb"
    note = f"data {data_mb:.0f} MB, archive {archive_mb:.0f} MB"
    return [
        *rows,
        Row("transfer", f"export {label}", data_mb / t_export, "MB/s", data_mb / t_raw, note=note),
        Row(
            "transfer",
            f"import (checked, indexed, renamed) {label}",
            data_mb / t_import,
            "MB/s",
            data_mb / t_raw_read,
            note="MB/s of data; baseline: tarfile r:gz extractall",
        ),
        Row(
            "transfer",
            f"import {label}, MB/s of archive",
            archive_mb / t_import,
            "MB/s",
            raw_mb / t_raw_read,
            note=f"goal >= {GOAL_MBS:g} MB/s of archive; baseline: extractall of the gz-9 tar",
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
            raw_mb,
            higher_is_better=False,
        ),
    ]
