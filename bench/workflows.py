"""Workflow and buffer figures: an analogy_creation workflow vs direct appends; buffer rate."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bench.common import Row
from bench.records import analogies

CHUNK = 10_000
BUFFER_GOAL = 100_000.0  # record() calls/s from 4 threads while flushing
THREADS = 4


def _direct(root: Path, records: list[dict[str, object]]) -> float:
    import app

    with app.open_store(root) as store:
        ctx = store.context("bench")
        t0 = time.perf_counter()
        for i in range(0, len(records), CHUNK):
            ctx.append("analogies", records[i : i + CHUNK])
        elapsed = time.perf_counter() - t0
        assert ctx.count("analogies") == len(records)
    return elapsed


def _workflow(root: Path, records: list[dict[str, object]]) -> tuple[float, float]:
    """(total seconds of submit + process, seconds of submit alone)."""
    import app

    with app.open_store(root) as store:
        t0 = time.perf_counter()
        wf = store.workflows.submit(
            "analogy_creation", context="bench", items=records, chunk_size=CHUNK
        )
        t1 = time.perf_counter()
        done = store.workflows.process(wf.workflow_id)
        elapsed = time.perf_counter() - t0
        assert done.status.value == "completed" and done.items_processed == len(records)
        assert store.context("bench").count("analogies") == len(records)
    return elapsed, t1 - t0


def _produce(
    buf: object, per_thread: int, stop: threading.Event | None = None, run_for: float = 0.0
) -> tuple[float, int, int]:
    """Run THREADS producers; (seconds, record() calls, accepted)."""
    records = analogies(0, 20_000)
    calls = [0] * THREADS
    accepted = [0] * THREADS
    start = threading.Barrier(THREADS + 1)
    record = buf.record  # type: ignore[attr-defined]

    def produce(t: int) -> None:
        mine = records[t::THREADS][:1000]
        start.wait()
        n = ok = 0
        while n < per_thread and not (stop is not None and stop.is_set()):
            for rec in mine:
                ok += record(rec)
            n += len(mine)
        calls[t], accepted[t] = n, ok

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    if stop is not None:
        time.sleep(run_for)
        stop.set()
    for th in threads:
        th.join()
    return time.perf_counter() - t0, sum(calls), sum(accepted)


def _buffer_burst(root: Path, per_thread: int) -> tuple[float, int, int]:
    """record() calls/s from THREADS threads, all accepted, while the buffer flushes."""
    import app

    with app.open_store(root) as store:
        ctx = store.context("bench")
        buf = ctx.buffer("analogies", max_pending=THREADS * per_thread)
        seconds, calls, accepted = _produce(buf, per_thread)
        written_meanwhile = buf.stats()["written"]
        buf.close()
        assert accepted == calls and buf.stats()["written"] == accepted
        return calls / seconds, calls, written_meanwhile


def _buffer_overload(root: Path, seconds: float) -> tuple[float, float, float]:
    """Producers flat out for ``seconds`` against the default buffer:
    (record() calls/s, accepted-and-written records/s, share of calls refused)."""
    import app

    with app.open_store(root) as store:
        ctx = store.context("bench")
        buf = ctx.buffer("analogies")
        t0 = time.perf_counter()
        elapsed, calls, accepted = _produce(buf, 10**12, threading.Event(), seconds)
        buf.close()
        drained = time.perf_counter() - t0
        assert buf.stats()["written"] == accepted
        return calls / elapsed, accepted / drained, 1 - accepted / calls


def run(quick: bool, workdir: Path) -> list[Row]:
    n = 50_000 if quick else 1_000_000
    records = analogies(0, n)
    repeat = 2 if quick else 1  # small runs are noisy: best of two, interleaved
    direct_t, wf_t, submit_t = float("inf"), float("inf"), 0.0
    for r in range(repeat):
        direct_t = min(direct_t, _direct(workdir / f"direct{r}", records))
        total, submit = _workflow(workdir / f"workflow{r}", records)
        if total < wf_t:
            wf_t, submit_t = total, submit
    burst, burst_calls, meanwhile = _buffer_burst(workdir / "buffer", 50_000 if quick else 250_000)
    calls_rate, written_rate, refused = _buffer_overload(workdir / "overload", 2 if quick else 5)
    return [
        Row(
            "workflows",
            f"analogy_creation workflow, {n:,} analogies, chunks of {CHUNK:,}",
            n / wf_t,
            "rec/s",
            n / direct_t,
            goal=0.5,
            note=f"submit+process (submit {submit_t:.1f}s); baseline: direct appends, same batches",
        ),
        Row(
            "workflows",
            f"buffer record() calls/s, {THREADS} threads, all accepted, while flushing",
            burst,
            "calls/s",
            BUFFER_GOAL,
            goal=1.0,
            note=f"baseline = the 100,000 calls/s goal; {meanwhile:,} of {burst_calls:,} "
            "written by the background flusher while recording",
        ),
        Row(
            "workflows",
            f"buffer overloaded by {THREADS} threads: record() calls/s",
            calls_rate,
            "calls/s",
            note=f"{written_rate:,.0f} rec/s accepted and written durably; "
            f"{refused:.0%} of calls refused (backpressure)",
        ),
    ]
