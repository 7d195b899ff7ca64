"""An AppendBuffer never loses an accepted item on a normal exit (SPEC 22, issue 9 item 17).

Real interpreters record items and end in every normal way (the ``with open_store`` block,
no close at all, ``sys.exit``, an uncaught exception, an explicit close); the store then holds
every accepted item. ``store.close()`` flushes; a blocking ``record(..., timeout=)`` waits for
room; threads spinning on a full buffer do not starve its flusher.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import app

ROOT = Path(__file__).resolve().parents[1]
N = 5000

# the buffer never flushes on its own during the script: only an exit path can write it
PRELUDE = f"""
import sys, app
root = sys.argv[1]
def fill(store):
    buf = store.context("default").buffer("t", flush_every=10**6, flush_interval=3600)
    assert all(buf.record({{"id": f"r{{i}}", "i": i}}) for i in range({N}))
    assert buf.pending == {N}
    return buf
"""

ENDINGS = {
    "with-open_store": "with app.open_store(root) as store:\n    fill(store)\n",
    "no-close": "store = app.open_store(root)\nbuf = fill(store)\n",
    "buffer-close": "store = app.open_store(root)\nfill(store).close()\n",
    "store-close": "store = app.open_store(root)\nfill(store)\nstore.close()\n",
    "sys-exit": "store = app.open_store(root)\nbuf = fill(store)\nsys.exit(3)\n",
    "exception": "store = app.open_store(root)\nbuf = fill(store)\nraise RuntimeError('x')\n",
    "dropped-reference": "store = app.open_store(root)\nfill(store)\nimport gc; gc.collect()\n",
}
EXIT_CODES = {"sys-exit": 3, "exception": 1}


def _run(code: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", code, str(root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_items_recorded_then_a_normal_exit_are_all_in_the_store(
    store_root: Path, ending: str
) -> None:
    done = _run(PRELUDE + ENDINGS[ending], store_root)
    assert done.returncode == EXIT_CODES.get(ending, 0), done.stderr
    assert "could not flush" not in done.stderr
    with app.open_store(store_root) as store:
        ctx = store.context("default")
        assert ctx.count("t") == N
        assert ctx.get("t", f"r{N - 1}") == {"id": f"r{N - 1}", "i": N - 1}


def test_store_close_flushes_and_closes_its_buffers(store_root: Path) -> None:
    store = app.open_store(store_root)
    other_root = store_root.parent / "other"
    other = app.open_store(other_root)
    buf = store.context("default").buffer("t", flush_every=10**6, flush_interval=3600)
    keep = other.context("default").buffer("t", flush_every=10**6, flush_interval=3600)
    try:
        assert all(buf.record({"id": f"r{i}"}) for i in range(N))
        assert keep.record({"id": "k"})
        store.close()
        assert buf.closed and buf.pending == 0 and buf.stats()["written"] == N
        with pytest.raises(app.ConflictError):
            buf.record({"id": "late"})
        assert not keep.closed and keep.pending == 1  # another store's buffer is untouched
    finally:
        other.close()
    assert keep.closed
    with app.open_store(store_root) as s:
        assert s.context("default").count("t") == N
    with app.open_store(other_root) as s:
        assert s.context("default").count("t") == 1


def test_blocking_record_waits_for_room(ctx: app.Context) -> None:
    # room only ever comes from the flusher: thresholds that would never flush on their own
    buf = ctx.buffer("t", max_pending=100, flush_every=10**6, flush_interval=3600)
    try:
        assert all(buf.record({"id": f"r{i}"}, timeout=60) for i in range(3000))
        assert buf.stats()["rejected"] == 0
    finally:
        buf.close()
    assert ctx.count("t") == 3000


def test_blocking_record_times_out_while_the_buffer_stays_full(ctx: app.Context) -> None:
    buf = ctx.buffer("t", max_pending=10, flush_every=10**6, flush_interval=3600)
    try:
        assert all(buf.record({"id": f"r{i}"}) for i in range(10))
        with buf._flush_lock:  # the flusher cannot write: no room can appear
            t0 = time.monotonic()
            assert buf.record({"id": "x"}, timeout=0.3) is False
            assert time.monotonic() - t0 >= 0.29
            assert buf.record({"id": "y"}) is False  # the non-blocking form answers at once
        assert buf.stats()["rejected"] == 2
        assert buf.record({"id": "z"}, timeout=60) is True  # the flusher makes room again
    finally:
        buf.close()
    assert ctx.count("t") == 11
    with pytest.raises(app.InvalidInput, match="timeout"):
        buf.record({"id": "a"}, timeout=-1)


def test_a_producer_waiting_for_room_is_released_by_close(ctx: app.Context) -> None:
    buf = ctx.buffer("t", max_pending=5, flush_every=10**6, flush_interval=3600)
    assert all(buf.record({"id": f"r{i}"}) for i in range(5))
    errors: list[BaseException] = []
    got: list[bool] = []

    def producer() -> None:
        try:
            got.append(buf.record({"id": "late"}, timeout=60))
        except app.ConflictError as exc:
            errors.append(exc)

    th = threading.Thread(target=producer)
    th.start()
    buf.close()
    th.join(60)
    assert not th.is_alive()
    # either it found room before close, or close refused it: never lost, never stuck
    assert len(got) + len(errors) == 1
    assert ctx.count("t") == 5 + got.count(True)


def test_spinning_producers_do_not_starve_the_flusher(ctx: app.Context) -> None:
    n_threads, per_thread = 4, 5000
    buf = ctx.buffer("t", max_pending=500, flush_every=100, flush_interval=0.05)
    start = threading.Barrier(n_threads)

    def spin(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            item = {"id": f"t{t}-{i}", "i": i}
            while not buf.record(item):
                pass

    threads = [threading.Thread(target=spin, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    buf.close()
    stats = buf.stats()
    total = n_threads * per_thread
    assert stats["accepted"] == stats["written"] == total and ctx.count("t") == total
    # a starved flusher shows as producers spinning dozens of times per accepted item
    assert stats["rejected"] < 5 * total, stats


class _Item(dict[str, object]):
    """A mapping the buffer keeps as given (only plain dicts are copied) and weakref-able."""


def test_flush_and_close_keep_no_reference_to_written_items(ctx: app.Context) -> None:
    import gc
    import weakref

    buf = ctx.buffer("t", flush_every=10**6, flush_interval=3600)
    items = [_Item(id=f"r{i}", i=i) for i in range(2000)]
    refs = [weakref.ref(item) for item in items]
    assert all(buf.record(item) for item in items)
    del items
    assert buf.flush() == 2000
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    late = _Item(id="late")
    late_ref = weakref.ref(late)
    assert buf.record(late)
    del late
    buf.close()
    gc.collect()
    assert late_ref() is None and ctx.count("t") == 2001


FORK = """
import os, sys, app
with app.open_store(sys.argv[1]) as store:
    buf = store.context("default").buffer("t", flush_every=10**6, flush_interval=3600)
    assert all(buf.record({"n": i}) for i in range(100))  # generated ids: a copy would count
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # a normal exit of the child: the parent's items are not the child's
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
"""


def test_a_forked_child_does_not_write_its_parents_pending_items(store_root: Path) -> None:
    done = _run(FORK, store_root)
    assert done.returncode == 0, done.stderr
    with app.open_store(store_root) as store:
        assert store.context("default").count("t") == 100
