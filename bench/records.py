"""Record-store figures: durable batch append, indexed query, streaming iter, contract cost."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

from bench.common import Row, best_of

ORIGINAL_RATE = 180.0  # analogies/s of the system ctxstore replaces
BATCH = 10_000
INDEX_SQL = [
    "CREATE INDEX i1 ON t(json_extract(data, '$.\"source_domain\"'), "
    "json_extract(data, '$.\"quality_score\"'))",
    "CREATE INDEX i2 ON t(json_extract(data, '$.\"target_domain\"'), "
    "json_extract(data, '$.\"quality_score\"'))",
]
RAW_ARGS = ("domain-42", 0.25, 0.75)
WHERE = {"source_domain": "domain-42", "quality_score": {"$gte": 0.25, "$lt": 0.75}}
RUNS = 3
"""Each append figure is the median of this many runs (raw and store alternate)."""
QUERY_SQL = (
    "SELECT data FROM t WHERE json_extract(data, '$.\"source_domain\"') = ? "
    "AND json_extract(data, '$.\"quality_score\"') >= ? "
    "AND json_extract(data, '$.\"quality_score\"') < ? "
    "ORDER BY json_extract(data, '$.\"quality_score\"') DESC LIMIT 100"
)


def analogies(start: int, n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"a{i}",
            "source_domain": f"domain-{i % 100}",
            "target_domain": f"target-{i % 37}",
            "quality_score": (i * 7919 % 1000) / 1000,
            "mapping": {"relation": "causes", "strength": i % 10},
            "tags": ["bench", f"g{i % 3}"],
        }
        for i in range(start, start + n)
    ]


def raw_append(path: Path, batches: list[list[dict[str, object]]]) -> float:
    """orjson lines with one fsync per batch + sqlite3 executemany into an indexed table."""
    db = sqlite3.connect(path / "raw.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t(pos INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, data TEXT)")
    for sql in INDEX_SQL:
        db.execute(sql)
    t0 = time.perf_counter()
    with open(path / "raw.jsonl", "ab") as fh:
        for batch in batches:
            lines = [orjson.dumps(r) for r in batch]
            fh.write(b"\n".join(lines) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO t(id, data) VALUES (?, ?)",
                [(r["id"], line.decode()) for r, line in zip(batch, lines, strict=True)],
            )
            db.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    db.close()
    return elapsed


def store_append(
    root: Path, batches: list[list[dict[str, object]]], per_batch: list[float] | None = None
) -> float:
    """Append every batch to a new store; ``per_batch`` receives each batch's seconds."""
    import app

    with app.open_store(root) as store:
        ctx = store.context("bench")
        t0 = time.perf_counter()
        for batch in batches:
            t1 = time.perf_counter()
            ctx.append("analogies", batch)
            if per_batch is not None:
                per_batch.append(time.perf_counter() - t1)
        return time.perf_counter() - t0


def raw_first_query(path: Path) -> float:
    """Seconds of the first indexed query on the raw database (a new connection)."""
    db = sqlite3.connect(path / "raw.sqlite")
    try:
        t0 = time.perf_counter()
        rows = [orjson.loads(r[0]) for r in db.execute(QUERY_SQL, RAW_ARGS).fetchall()]
        elapsed = time.perf_counter() - t0
    finally:
        db.close()
    assert len(rows) == 100
    return elapsed


def store_first_query(root: Path) -> float:
    """Seconds of the first indexed query of a store just appended to (a new open)."""
    import app

    with app.open_store(root) as store:
        ctx = store.context("bench")
        t0 = time.perf_counter()
        found = ctx.query("analogies", WHERE, order_by="-quality_score", limit=100)
        elapsed = time.perf_counter() - t0
    assert len(found) == 100
    return elapsed


def raw_bulk_index(path: Path) -> float:
    """The raw index build a context's logs need: parse every line, load a new SQLite file
    (no journal, one transaction, rows in order), build the same indexes after, one fsync."""
    db_path = path / "bulk.sqlite"
    t0 = time.perf_counter()
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    db.execute("CREATE TABLE t(pos INTEGER PRIMARY KEY, id TEXT NOT NULL, data TEXT)")
    with open(path / "raw.jsonl", "rb") as fh:
        db.executemany(
            "INSERT INTO t(id, data) VALUES (?, ?)",
            ((orjson.loads(line)["id"], line[:-1].decode()) for line in fh),
        )
    db.execute("CREATE UNIQUE INDEX u ON t(id)")
    for sql in INDEX_SQL:
        db.execute(sql)
    db.execute("COMMIT")
    db.close()
    fd = os.open(db_path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    elapsed = time.perf_counter() - t0
    db_path.unlink()
    return elapsed


def store_bulk_index(root: Path) -> float:
    """Seconds to build a context's missing index from its logs (what an imported context
    and a deleted index get), measured as the first count after the index file is gone."""
    import app
    from app.core import layout

    index = layout.context_dir(root, "bench") / layout.index_name("bench")
    for suffix in ("", "-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    with app.open_store(root) as store:
        t0 = time.perf_counter()
        store.context("bench").count("analogies")
        return time.perf_counter() - t0


def _contracts_rate(n: int, level: str = "off") -> float:
    """Append rate with CTXSTORE_CONTRACTS=<level> (read at import: needs its own process)."""
    code = (
        "import sys, tempfile, pathlib, json; sys.path.insert(0, '.');"
        "from bench.records import analogies, store_append;"
        f"n={n}; b=[analogies(i, {BATCH}) for i in range(0, n, {BATCH})];"
        "d=tempfile.mkdtemp(); t=store_append(pathlib.Path(d)/'s', b);"
        "print(json.dumps(n/t))"
    )
    env = dict(os.environ, CTXSTORE_CONTRACTS=level)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def _peak_rss_reset() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(quick: bool, workdir: Path) -> list[Row]:
    import app

    n = 200_000 if quick else 1_000_000
    batches = [analogies(i, BATCH) for i in range(0, n, BATCH)]
    raw_ts, store_ts, raw_e2e, store_e2e, per_batch = [], [], [], [], []
    for run_no in range(RUNS):  # raw and store alternate: both see the same machine load
        raw_dir = workdir / f"raw{run_no}"
        raw_dir.mkdir()
        raw_ts.append(raw_append(raw_dir, batches))
        raw_e2e.append(raw_ts[-1] + raw_first_query(raw_dir))
        timings: list[float] = []
        store_ts.append(store_append(workdir / f"store{run_no}", batches, timings))
        store_e2e.append(store_ts[-1] + store_first_query(workdir / f"store{run_no}"))
        per_batch.append(timings)
        if run_no:  # keep the first run's files for the figures below
            shutil.rmtree(raw_dir)
            shutil.rmtree(workdir / f"store{run_no}")
    raw_dir, store_dir = workdir / "raw0", workdir / "store0"
    raw_t, store_t = statistics.median(raw_ts), statistics.median(store_ts)
    rate, raw_rate = n / store_t, n / raw_t
    tenth = max(1, len(batches) // 10)
    first = statistics.median(sum(t[:tenth]) for t in per_batch)
    last = statistics.median(sum(t[-tenth:]) for t in per_batch)
    off_rate = _contracts_rate(min(n, 200_000))
    full_rate = _contracts_rate(min(n, 200_000), "full")
    on_rate = min(n, 200_000) / store_append(workdir / "store-on", batches[:20])
    rows = [
        Row(
            "records",
            f"durable append, batches of {BATCH:,} ({n:,} analogies)",
            rate,
            "rec/s",
            raw_rate,
            goal=1.5,
            note=f"raw: orjson+fsync+executemany, same indexes; median of {RUNS}",
        ),
        Row(
            "records",
            f"append per-record cost: first {tenth} batches vs last {tenth}",
            first,
            "s",
            last,
            goal=0.9,
            note="ratio 1 = flat as the collection grows (median of runs)",
        ),
        Row(
            "records",
            f"append {n:,} then the first indexed query, end to end",
            statistics.median(store_e2e),
            "s",
            statistics.median(raw_e2e),
            higher_is_better=False,
            goal=1 / 1.5,
            note="no index work is deferred: the first query pays nothing extra",
        ),
        Row(
            "records",
            "append vs the original system (180 analogies/s)",
            rate,
            "rec/s",
            ORIGINAL_RATE,
            goal=500,
        ),
        Row(
            "records",
            "append with contracts on vs CTXSTORE_CONTRACTS=off",
            on_rate,
            "rec/s",
            off_rate,
            goal=0.9,
            note="overhead = 1 - ratio",
        ),
        Row(
            "records",
            "append with CTXSTORE_CONTRACTS=full vs off",
            full_rate,
            "rec/s",
            off_rate,
            note="opt-in O(n) checks (tests, debugging)",
        ),
    ]
    # indexed filtered query over the appended records
    db = sqlite3.connect(raw_dir / "raw.sqlite")
    args = RAW_ARGS
    with app.open_store(store_dir) as store:
        ctx = store.context("bench")
        where = WHERE
        assert len(ctx.query("analogies", where, order_by="-quality_score", limit=100)) == 100
        q_store = best_of(
            lambda: ctx.query("analogies", where, order_by="-quality_score", limit=100), 50
        )
        q_raw = best_of(
            lambda: [orjson.loads(r[0]) for r in db.execute(QUERY_SQL, args).fetchall()], 50
        )
        rows.append(
            Row(
                "records",
                f"indexed query + order + limit 100 over {n:,}",
                q_store * 1e3,
                "ms",
                q_raw * 1e3,
                higher_is_better=False,
                goal=1.2,
                note="raw: same SQL via sqlite3 + orjson.loads",
            )
        )
        _peak_rss_reset()
        before = _peak_rss_mb()
        t0 = time.perf_counter()
        seen = sum(1 for _ in ctx.iter("analogies"))
        iter_t = time.perf_counter() - t0
        growth = _peak_rss_mb() - before
        assert seen == n
    t0 = time.perf_counter()
    with open(raw_dir / "raw.jsonl", "rb") as fh:
        parsed = sum(1 for line in fh if orjson.loads(line))
    raw_iter_t = time.perf_counter() - t0
    assert parsed == n
    rows.append(
        Row(
            "records",
            f"iter over {n:,} records",
            n / iter_t,
            "rec/s",
            n / raw_iter_t,
            goal=0.8,
            note=f"raw: orjson line parsing; peak RSS growth {growth:.1f} MB (<50)",
        )
    )
    db.close()
    raw_builds = [raw_bulk_index(raw_dir) for _ in range(RUNS)]
    store_builds = [store_bulk_index(store_dir) for _ in range(RUNS)]
    rows.append(
        Row(
            "records",
            f"index build from the logs, {n:,} records (import, repair)",
            n / statistics.median(store_builds),
            "rec/s",
            n / statistics.median(raw_builds),
            goal=0.8,
            note="raw: parse lines + SQLite load, no journal, indexes after, fsync",
        )
    )
    return rows
