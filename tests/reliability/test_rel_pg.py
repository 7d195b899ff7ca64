"""The PostgreSQL crash/fault table (issue 12): real client processes, real SIGKILL, a real
``kill -9`` of the PostgreSQL server, a real object store (a directory, moto's S3 server).

- (a) SIGKILL of a client at random instants while it appends batches;
- (b) SIGKILL of a client at random instants while it submits and processes workflows;
- (c) ``kill -9`` of the PostgreSQL server while two clients commit, then a restart; the
  clients retry a failed batch with the same batch id until it is acknowledged;
- (d) a client that dies right after uploading an embedding shard, before anything names it.

Pass criteria: 0 acknowledged batches lost, 0 partial batches (or workflow chunks) visible,
the in-flight batch sent again with its batch id is there exactly once (``duplicate`` exactly
when it had committed without an acknowledgement), every workflow completes with each chunk
committed once, no reference to a missing object, gc removes the orphan and nothing else.

Counts: (a), (b) 10 kills, (c) 3 server kills, (d) 4 in ``make test``; 50 / 50 / 10 / 10 in
``make test-reliability`` (``CTXSTORE_PG_CRASH=reliability``) and with
``CTXSTORE_RELIABILITY=full``. Each child opens the store as a host of its own (its own
working folder: nothing local is shared). Rows go to the reliability table (``PG ...``).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg_ops
import pytest
from backend_matrix import fresh_schema
from backend_servers import AWS_DUMMY, pg_restartable, postgres_pid, restart_postgres
from harness import Zygote, kill, wait_acks, wait_gone, wait_ready
from ops import Acks
from relstats import FULL, tally

import app

RELIABILITY = FULL or os.environ.get("CTXSTORE_PG_CRASH", "") == "reliability"
COUNTS = {"append": (10, 50), "workflow": (10, 50), "server": (3, 10), "upload": (4, 10)}
PRELOAD = ("ops", "pg_ops", "psycopg", "psycopg_pool", "fsspec")
STEP_S = 0.3  # one step's duration on an idle machine, roughly (the smallest kill window)


def trials(kind: str) -> int:
    quick, reliability = COUNTS[kind]
    return reliability if RELIABILITY else quick


@pytest.fixture
def zygotes() -> Iterator[list[Zygote]]:
    """Two crash zygotes (lanes), started once the servers' environment is set."""
    pool = [Zygote(PRELOAD), Zygote(PRELOAD)]
    try:
        yield pool
    finally:
        for z in pool:
            z.close()


@pytest.fixture
def store_url(pg_url: str) -> Iterator[str]:
    """A fresh, empty store for the test: its own schema in the module's database."""
    yield from fresh_schema(pg_url)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The parent's own working folder (never the real home's cache)."""
    folder = tmp_path / "work-parent"
    monkeypatch.setenv("CTXSTORE_WORK", str(folder))
    return folder


def spec(url: str, files: str, work: Path, ctx: str, **extra: Any) -> str:
    env = {k: os.environ[k] for k in (*AWS_DUMMY, "AWS_ENDPOINT_URL") if k in os.environ}
    doc = {"url": url, "files": files, "work": str(work), "ctx": ctx, "env": env}
    return json.dumps({**doc, **extra})


def open_store(url: str, files: str) -> app.Store:
    return app.open_store(url, files=files)


def kill_somewhere(rng: random.Random, out: Path, pid: int, step_s: float) -> float:
    """SIGKILL the child at a random instant: while opening, in its first step, or in one of
    the two steps after its first acknowledgement. Returns the slowest step seen."""
    try:
        draw = rng.random()
        if draw < 0.1:
            time.sleep(rng.uniform(0, 0.05))
        elif wait_ready(out, pid):
            t0 = time.monotonic()
            if draw < 0.3:
                time.sleep(rng.uniform(0, step_s))
            elif wait_acks(out, pid):
                step_s = max(step_s, time.monotonic() - t0)
                time.sleep(rng.uniform(0, 2 * step_s))
    finally:
        kill(pid)
    return step_s


def read_acks(out: Path) -> tuple[str, Acks]:
    text = out.read_text() if out.exists() else ""
    return text, Acks(text)


# -- (a) SIGKILL of clients mid-append -------------------------------------------------------


def test_pg_sigkill_mid_append(
    store_url: str, tmp_path: Path, work: Path, zygotes: list[Zygote]
) -> None:
    files = str(tmp_path / "files")
    n = trials("append")
    with open_store(store_url, files) as store:
        for r in range(n):
            store.context(f"a{r}").define_collection("items")

    def lane(i: int) -> tuple[int, int, list[str]]:
        rng = random.Random(1000 + i)
        failures: list[str] = []
        acked = dups = 0
        step_s = STEP_S
        with open_store(store_url, files) as store:
            for r in range(i, n, 2):
                out = tmp_path / f"a{r}.out"
                pid = zygotes[i].spawn(
                    out=str(out),
                    module="pg_ops",
                    op="append",
                    root=spec(store_url, files, tmp_path / f"w-a{r}", f"a{r}"),
                    start=0,
                    count=10**6,
                )
                step_s = kill_somewhere(rng, out, pid, step_s)
                text, acks = read_acks(out)
                acked += len(acks.steps)
                try:
                    assert not acks.done and "Traceback" not in text, text[-2000:]
                    ctx = store.context(f"a{r}")
                    nxt = acks.last(0) + 1
                    # under the writer lock, the killed client's last transaction has ended:
                    # its in-flight batch is committed or gone, not committing meanwhile
                    with ctx.writer_lock.hold():
                        pg_ops.check_batches(ctx, set(acks.steps), nxt)
                        dups += pg_ops.retry_in_flight(ctx, nxt)
                    assert ctx.verify().ok, ctx.verify().problems
                except Exception as exc:
                    failures.append(f"append kill {r}: {type(exc).__name__}: {exc}")
        return acked, dups, failures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lane, range(2)))
    failures = [f for _, _, fs in results for f in fs]
    acked = sum(a for a, _, _ in results)
    tally("PG (a) SIGKILL client mid-append", n, len(failures))
    dups = sum(d for _, d, _ in results)
    tally("PG (a) in-flight batch had committed, retry was exactly-once", dups)
    assert not failures, "\n".join(failures[:5])
    assert acked >= n // 3, f"kills landed mostly before any append finished ({acked} acks)"


# -- (b) SIGKILL of clients mid-workflow -----------------------------------------------------


def test_pg_sigkill_mid_workflow(
    store_url: str, tmp_path: Path, work: Path, zygotes: list[Zygote]
) -> None:
    """One lane: the check's ``recover(stale_after=0)`` takes over every claim of the store."""
    files = str(tmp_path / "files")
    n = trials("workflow")
    rng = random.Random(2000)
    failures: list[str] = []
    acked = waited = 0
    step_s = 3 * STEP_S
    with open_store(store_url, files) as store:
        for r in range(n):
            ctx_name = f"w{r}"
            store.context(ctx_name).define_collection("wf")
            out = tmp_path / f"w{r}.out"
            pid = zygotes[0].spawn(
                out=str(out),
                module="pg_ops",
                op="workflow",
                root=spec(store_url, files, tmp_path / f"w-w{r}", ctx_name),
                start=100 * r,  # workflow ids unique in the store
                count=10**6,
            )
            step_s = kill_somewhere(rng, out, pid, step_s)
            text, acks = read_acks(out)
            acked += len(acks.steps)
            try:
                assert not acks.done and "Traceback" not in text, text[-2000:]
                waited += pg_ops.check_workflows(store, store.context(ctx_name), acks) > 0
            except Exception as exc:
                failures.append(f"workflow kill {r}: {type(exc).__name__}: {exc}")
    tally("PG (b) SIGKILL client mid-workflow", n, len(failures))
    tally("PG (b) recovery waited for the killed client's session to end", waited)
    assert not failures, "\n".join(failures[:5])
    assert acked >= n // 3, f"kills landed mostly before any workflow finished ({acked} acks)"


# -- (c) kill -9 of the PostgreSQL server during commits -------------------------------------


def _kill_server() -> None:
    old = postgres_pid()
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(old, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError("the killed PostgreSQL server did not go away")


def test_pg_server_kill_during_commits(
    store_url: str, tmp_path: Path, work: Path, zygotes: list[Zygote]
) -> None:
    if not pg_restartable():
        pytest.skip("the PostgreSQL server was not started by .ci/services.py (cannot restart it)")
    files = str(tmp_path / "files")
    n = trials("server")
    rng = random.Random(3000)
    failures: list[str] = []
    retries = dups = 0
    for r in range(n):
        names = [f"s{r}-{i}" for i in range(2)]
        with open_store(store_url, files) as store:
            for name in names:
                store.context(name).define_collection("items")
        outs = [tmp_path / f"{name}.out" for name in names]
        pids = [
            z.spawn(
                out=str(out),
                module="pg_ops",
                op="append",
                root=spec(store_url, files, tmp_path / f"w-{name}", name, retry=True),
                start=0,
                count=10**6,
            )
            for z, out, name in zip(zygotes, outs, names, strict=True)
        ]
        try:
            for out, pid in zip(outs, pids, strict=True):
                assert wait_acks(out, pid, 1), out.read_text()[-2000:] if out.exists() else ""
            time.sleep(rng.uniform(0, 2 * STEP_S))  # somewhere in a commit
            at_kill = [len(read_acks(out)[1].steps) for out in outs]
            _kill_server()
            time.sleep(rng.uniform(0, 0.5))
            restart_postgres()
            for out, pid, seen in zip(outs, pids, at_kill, strict=True):
                assert wait_acks(out, pid, seen + 2), out.read_text()[-2000:]
        except Exception as exc:
            failures.append(f"server kill {r}: {type(exc).__name__}: {exc}")
        finally:
            for pid in pids:
                kill(pid)
        with open_store(store_url, files) as store:
            for name, out in zip(names, outs, strict=True):
                text, acks = read_acks(out)
                retries += text.count("\nretry ")
                dups += sum(1 for extra in acks.steps.values() if extra == "dup")
                try:
                    assert "Traceback" not in text, text[-2000:]
                    ctx = store.context(name)
                    nxt = acks.last(0) + 1
                    pg_ops.check_batches(ctx, set(acks.steps), nxt)
                    dups += pg_ops.retry_in_flight(ctx, nxt)
                    assert ctx.verify().ok, ctx.verify().problems
                except Exception as exc:
                    failures.append(f"server kill {r} {name}: {type(exc).__name__}: {exc}")
    tally("PG (c) kill -9 of the server during commits", n, len(failures))
    tally("PG (c) commits retried after the server kill", retries)
    tally("PG (c) retried batch had committed, retry was exactly-once", dups)
    assert not failures, "\n".join(failures[:5])
    assert retries >= 1, "no commit ever failed: the server kills missed every commit"


# -- (d) object upload interrupted before the row naming it ----------------------------------


@pytest.fixture(params=["pg-files", "pg-s3"])
def files_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "pg-files":
        return str(tmp_path / "files")
    bucket: str = request.getfixturevalue("s3_url")
    return f"{bucket}/store"


def _orphans(store: app.Store, files: str, ctx: str, cache: Path) -> list[str]:
    """The context's embedding blobs nothing names (any age): through ``store.gc`` (dry run,
    no grace period) where the store has it, else the object store's own gc listing."""
    if hasattr(store, "gc"):
        report = store.gc(dry_run=True, grace=dt.timedelta(0))
        return [p for p in report.paths("object") if f"/{ctx}/embeddings/" in p]
    from backend_servers import s3_storage_options

    from app.backends.objects import ObjectParts
    from app.backends.objects.gc import list_unreferenced

    options = s3_storage_options() if files.startswith("s3://") else None
    part = ObjectParts(files, cache, options).files(ctx, "embeddings")
    return list_unreferenced(part, part.referenced(), time.time() + 60)


def _collect(store: app.Store, files: str, ctx: str, cache: Path) -> None:
    """Remove the unreferenced blobs, as ``_orphans`` finds them."""
    if hasattr(store, "gc"):
        store.gc(dry_run=False, grace=dt.timedelta(0))
        return
    from backend_servers import s3_storage_options

    from app.backends.objects import ObjectParts
    from app.backends.objects.gc import collect

    options = s3_storage_options() if files.startswith("s3://") else None
    collect(ObjectParts(files, cache, options).files(ctx, "embeddings"), time.time() + 60)


def test_pg_upload_interrupted_before_commit(
    store_url: str, files_url: str, tmp_path: Path, work: Path, zygotes: list[Zygote]
) -> None:
    n = trials("upload")
    failures: list[str] = []
    orphans = 0
    with open_store(store_url, files_url) as store:
        for r in range(n):
            name = f"u{r}-{'s3' if files_url.startswith('s3:') else 'dir'}"
            ctx = store.context(name)
            ctx.embeddings.save("kept", pg_ops.emb_ids(1), pg_ops.emb_rows(pg_ops.emb_ids(1)))
            out = tmp_path / f"{name}.out"
            pid = zygotes[r % 2].spawn(
                out=str(out),
                module="pg_ops",
                op="emb",
                root=spec(
                    store_url, files_url, tmp_path / f"w-{name}", name, crash_after_upload=True
                ),
                start=2 + r,
                count=1,
            )
            wait_gone(pid)
            text, acks = read_acks(out)
            try:
                assert text.startswith("ready\n") and not acks.steps, text[-2000:]
                assert "Traceback" not in text, text[-2000:]
                assert [i.name for i in ctx.embeddings.list()] == ["kept"], "dangling set"
                assert ctx.verify().ok, ctx.verify().problems
                stale = _orphans(store, files_url, name, tmp_path / f"cache-{r}")
                assert len(stale) == 1, f"expected one orphan blob, found {stale}"
                orphans += 1
                _collect(store, files_url, name, tmp_path / f"cache-{r}")
                assert _orphans(store, files_url, name, tmp_path / f"cache-{r}") == []
                got = ctx.embeddings.load("kept", mmap=False)
                assert list(got.ids) == pg_ops.emb_ids(1), "gc removed a referenced blob"
                ids = pg_ops.emb_ids(2 + r)
                ctx.embeddings.save(f"e{2 + r}", ids, pg_ops.emb_rows(ids))  # the retry works
                assert list(ctx.embeddings.load(f"e{2 + r}", mmap=False).ids) == ids
                assert ctx.verify().ok, ctx.verify().problems
            except Exception as exc:
                failures.append(f"upload crash {r}: {type(exc).__name__}: {exc}")
    tally("PG (d) upload interrupted before its row commits, gc", n, len(failures))
    assert not failures, "\n".join(failures[:5])
    assert orphans == n
