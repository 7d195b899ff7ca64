"""Record-store figures: durable batch append, indexed query, streaming iter, contract cost."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
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


def store_append(root: Path, batches: list[list[dict[str, object]]]) -> float:
    import app

    with app.open_store(root) as store:
        ctx = store.context("bench")
        t0 = time.perf_counter()
        for batch in batches:
            ctx.append("analogies", batch)
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
    raw_dir = workdir / "raw"
    raw_dir.mkdir()
    raw_t = raw_append(raw_dir, batches)
    store_t = store_append(workdir / "store", batches)
    rate, raw_rate = n / store_t, n / raw_t
    off_rate = _contracts_rate(min(n, 200_000))
    full_rate = _contracts_rate(min(n, 200_000), "full")
    on_rate = min(n, 200_000) / store_append(workdir / "store-on", batches[: len(batches[:20])])
    rows = [
        Row(
            "records",
            f"durable append, batches of {BATCH:,} ({n:,} analogies)",
            rate,
            "rec/s",
            raw_rate,
            goal=0.6,
            note="raw: orjson+fsync+executemany, same indexes",
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
    args = ("domain-42", 0.25, 0.75)
    with app.open_store(workdir / "store") as store:
        ctx = store.context("bench")
        where = {
            "source_domain": "domain-42",
            "quality_score": {"$gte": 0.25, "$lt": 0.75},
        }
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
                goal=2.0,
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
            goal=0.5,
            note=f"raw: orjson line parsing; peak RSS growth {growth:.1f} MB (<50)",
        )
    )
    db.close()
    return rows
