"""Worker throughput on PostgreSQL: 1 to 4 worker processes claiming workflows of one store.

Each point submits ``WORKFLOWS`` workflows of ``CHUNKS`` chunks (``append``, ``PER_CHUNK``
records a chunk) into a fresh schema, spread over ``CONTEXTS`` contexts (or all into one:
chunks writing one context serialise on its writer lock by design, so that curve is flat),
then starts N worker processes (each its own working folder, as on separate machines) that
open the store, wait for a start signal and run ``process_pending`` until nothing is left.
The figure is committed chunks per second from the signal to the last worker's exit; the
baseline is the 1-worker figure of the same run (goal at 4 workers over 4 contexts: 1.5x).
Needs a server: ``$CTXSTORE_TEST_PG_URL`` (``make services``); without one the section
reports nothing. Files go to a local directory (this measures the tracker and the records,
not S3).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.common import Row

WORKFLOWS, CHUNKS, PER_CHUNK, CONTEXTS = 48, 10, 200, 4
WORKER = """
import os, sys, time, app
go = sys.argv[1]
with app.open_store(os.environ["CTXSTORE_ROOT"]) as store:
    store.workflows.metrics()
    while not os.path.exists(go):
        time.sleep(0.002)
    store.workflows.process_pending()
"""
REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def _schema(url: str) -> Iterator[str]:
    """A fresh schema in the server's database (dropped afterwards); yields its URL."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"  # a generated name, never input
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode(
        {"options": f"-c search_path={name}"}, quote_via=urllib.parse.quote
    )
    try:
        yield urllib.parse.urlunsplit(parts._replace(query=query))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _point(url: str, workdir: Path, workers: int, n_wf: int, contexts: int) -> float:
    with _schema(url) as root:
        return _measure(root, workdir / f"{workers}x{contexts}", workers, n_wf, contexts)


def _measure(root: str, workdir: Path, workers: int, n_wf: int, contexts: int) -> float:
    import app

    files = str(workdir / f"files-{workers}")
    env = dict(os.environ, CTXSTORE_ROOT=root, CTXSTORE_FILES=files, PYTHONPATH=str(REPO))
    env["CTXSTORE_WORK"] = str(workdir / f"submit-{workers}")
    with app.open_store(root, files=files) as store:
        for k in range(n_wf):
            store.workflows.submit(
                "append",
                context=f"bench{k % contexts}",
                items=[{"id": f"w{k}-{i}", "v": i} for i in range(CHUNKS * PER_CHUNK)],
                params={"collection": "notes"},
                chunk_size=PER_CHUNK,
            )
        go = workdir / f"go-{workers}"
        procs = []
        for w in range(workers):
            wenv = dict(env, CTXSTORE_WORK=str(workdir / f"work-{workers}-{w}"))
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(go)], env=wenv))
        time.sleep(1.5)  # every worker connected
        t0 = time.perf_counter()
        go.touch()
        for proc in procs:
            if proc.wait(900) != 0:
                raise RuntimeError(f"a bench worker failed ({proc.returncode})")
        elapsed = time.perf_counter() - t0
        done = store.workflows.metrics()["by_status"]["completed"]
        assert done == n_wf, done
    return n_wf * CHUNKS / elapsed


def run(quick: bool, workdir: Path) -> list[Row]:
    url = os.environ.get("CTXSTORE_TEST_PG_URL")
    if not url:
        print("[bench] pg_workers: no $CTXSTORE_TEST_PG_URL (make services)", file=sys.stderr)
        return []
    n_wf = 12 if quick else WORKFLOWS
    rows = []
    for contexts in (CONTEXTS, 1):
        counts = (1, 2, 3, 4) if contexts > 1 else (1, 4)
        curve = {n: _point(url, workdir, n, n_wf, contexts) for n in counts}
        for n, rate in curve.items():
            rows.append(
                Row(
                    "pgworkers",
                    f"{n} worker(s), {n_wf}x{CHUNKS} chunks of {PER_CHUNK}, {contexts} context(s)",
                    rate,
                    "chunks/s",
                    baseline=curve[1] if n > 1 else None,
                    goal=1.5 if n == 4 and contexts > 1 else None,
                    note="baseline: 1 worker" if n > 1 else "",
                )
            )
    return rows
