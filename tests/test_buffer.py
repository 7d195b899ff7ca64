"""``ctx.buffer``: non-blocking appends from many threads (SPEC section 11)."""

from __future__ import annotations

import threading
import time

import pytest
from recdata import analogy

import app


def test_many_threads_final_count_equals_accepted(ctx: app.Context) -> None:
    n_threads, per_thread = 8, 3000
    accepted = [0] * n_threads
    start = threading.Barrier(n_threads)
    buf = ctx.buffer("analogies", max_pending=2000, flush_every=500, flush_interval=0.05)

    def produce(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            if buf.record(analogy(t * per_thread + i)):
                accepted[t] += 1

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    buf.close()
    stats = buf.stats()
    assert stats["accepted"] == sum(accepted) > 0
    assert stats["accepted"] + stats["rejected"] == n_threads * per_thread
    assert stats["written"] == sum(accepted) and stats["failed"] == 0 and buf.pending == 0
    assert ctx.count("analogies") == sum(accepted)
    rejected_ids = {
        f"a{t * per_thread + i}" for t in range(n_threads) for i in range(per_thread)
    } - {r["id"] for r in ctx.query("analogies")}
    assert len(rejected_ids) == stats["rejected"]  # exactly the refused ones are missing


def test_backpressure_returns_false_without_blocking(ctx: app.Context) -> None:
    # a long interval and a high threshold: nothing flushes on its own during the test
    buf = ctx.buffer("notes", max_pending=100, flush_every=10_000, flush_interval=60)
    try:
        assert all(buf.record({"id": f"n{i}", "i": i}) for i in range(100))
        assert buf.pending == 100
        t0 = time.perf_counter()
        assert buf.record({"id": "extra"}) is False
        assert time.perf_counter() - t0 < 0.05
        assert buf.stats()["rejected"] == 1 and ctx.count("notes") == 0
        assert buf.flush() == 100
        assert buf.pending == 0 and ctx.count("notes") == 100
        assert buf.record({"id": "extra"}) is True  # room again
    finally:
        buf.close()
    assert ctx.count("notes") == 101


def test_background_flush_by_size_and_by_interval(ctx: app.Context) -> None:
    with ctx.buffer("notes", flush_every=50, flush_interval=0.2) as buf:
        for i in range(50):
            buf.record({"id": f"s{i}"})
        deadline = time.monotonic() + 5
        while ctx.count("notes") < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ctx.count("notes") == 50  # flushed because flush_every was reached
        buf.record({"id": "lonely"})
        time.sleep(0.05)
        assert buf.pending == 1
        deadline = time.monotonic() + 5
        while buf.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert buf.pending == 0 and ctx.get("notes", "lonely") == {"id": "lonely"}


def test_close_flushes_everything_and_refuses_more(ctx: app.Context) -> None:
    buf = ctx.buffer("notes", flush_every=10_000, flush_interval=60)
    for i in range(1234):
        buf.record({"id": f"c{i}"})
    buf.close()
    assert ctx.count("notes") == 1234 and buf.pending == 0 and buf.closed
    with pytest.raises(app.ConflictError, match="closed"):
        buf.record({"id": "late"})
    buf.close()  # idempotent


def test_invalid_items_are_reported_not_silently_dropped(ctx: app.Context) -> None:
    with ctx.buffer("analogies", flush_every=10_000, flush_interval=60) as buf:
        for i in range(100):
            buf.record(analogy(i))
        buf.record({"id": "bad1", "source_domain": "x"})  # misses required fields
        buf.record(analogy(500, quality_score=7.0))  # out of range
        written = buf.flush()
        assert written == 100
        stats = buf.stats()
        assert stats["failed"] == 2 and stats["written"] == 100 and stats["pending"] == 0
        assert stats["last_error"] and "quality_score" in stats["last_error"]
    assert ctx.count("analogies") == 100
    with pytest.raises(app.InvalidInput, match="item"):
        ctx.buffer("notes").record("not a record")


def test_records_are_copied_at_record_time(ctx: app.Context) -> None:
    with ctx.buffer("notes") as buf:
        rec = {"id": "m", "v": 1}
        buf.record(rec)
        rec["v"] = 2
    assert ctx.get("notes", "m")["v"] == 1


def test_buffer_arguments_are_checked(ctx: app.Context) -> None:
    with pytest.raises(app.InvalidInput, match="max_pending"):
        ctx.buffer("notes", max_pending=0)
    with pytest.raises(app.InvalidInput, match="collection"):
        ctx.buffer("../x")


def test_flush_while_background_flushing_keeps_order_and_counts(ctx: app.Context) -> None:
    with ctx.buffer("notes", flush_every=7, flush_interval=0.01) as buf:
        total = 0
        for i in range(2000):
            assert buf.record({"id": f"o{i}", "i": i})
            if i % 300 == 0:
                total += buf.flush()
        total += buf.flush()
        assert buf.pending == 0
        assert buf.stats()["written"] == 2000 >= total
    rows = ctx.query("notes")
    assert [r["i"] for r in rows] == list(range(2000))  # commit order = record order
