"""Workflow claims do not depend on the wall clock (SPEC 22, issue 9 item 21).

A real worker process holds a claim and heartbeats; the wall clock jumps an hour forward or
back (``time.time`` is faked, in the worker or in the recovering process). A live worker's
claim is never taken; a dead (SIGKILLed) worker's claim is handed back after ``stale_after``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import app
from app.core import clock
from app.core.workflow_types import WorkflowStatus as S
from app.managers.maintenance.upgrade import upgrade_store

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600.0

# A worker whose wall clock is shifted by argv[3] seconds; each chunk takes 50 ms, so the
# workflow stays in processing for a long time; it heartbeats every 50 ms.
WORKER = """
import sys, time
shift = float(sys.argv[3])
real_time = time.time
time.time = lambda: real_time() + shift
import app
from app.managers.workflows import WorkflowManager

def slow(ctx, chunk, params):
    ctx.append("notes", chunk)
    time.sleep(0.05)

with app.open_store(sys.argv[1]) as store:
    manager = WorkflowManager(store.root / "workflows", store, heartbeat_interval=0.05)
    manager.register("slow", slow)
    manager.process(sys.argv[2])
    manager.close()
"""

N_ITEMS, CHUNK = 4000, 10

pytestmark = pytest.mark.integration


def _submit(store: app.Store) -> str:
    store.workflows.register("slow", lambda ctx, chunk, params: ctx.append("notes", chunk))
    wf = store.workflows.submit(
        "slow",
        context="default",
        items=[{"id": f"n{i}", "n": i} for i in range(N_ITEMS)],
        chunk_size=CHUNK,
    )
    return wf.workflow_id


def _start_worker(root: Path, wid: str, shift: float) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(root), wid, str(shift)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
    )


def _wait_processing(store: app.Store, wid: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if store.workflows.get(wid).chunks_done >= 2:
            return
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"worker ended early: {err}")
        time.sleep(0.02)
    pytest.fail("the worker made no progress")


@pytest.fixture
def wall_shift(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Shift this process's wall clock (``time.time``) by ``shift[0]`` seconds."""
    shift = [0.0]
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + shift[0])
    yield shift


@pytest.mark.parametrize(
    ("worker_shift", "recoverer_shift"),
    [(0.0, HOUR), (-HOUR, 0.0), (HOUR, 0.0), (0.0, -HOUR)],
    ids=["recoverer-forward", "worker-back", "worker-forward", "recoverer-back"],
)
def test_a_fake_clock_jump_in_both_directions_leaves_claims_correct(
    store_root: Path, wall_shift: list[float], worker_shift: float, recoverer_shift: float
) -> None:
    with app.open_store(store_root) as store:
        wid = _submit(store)
        worker = _start_worker(store_root, wid, worker_shift)
        try:
            _wait_processing(store, wid, worker)
            wall_shift[0] = recoverer_shift
            # the live worker keeps its claim through the jump, however often we look
            for _ in range(10):
                assert store.workflows.recover(stale_after=60) == []
                assert store.workflows.recover(stale_after=10) == []
                time.sleep(0.05)
            live = store.workflows.get(wid)
            assert live.status == S.PROCESSING and worker.poll() is None
            # now the worker dies; after stale_after on the steady clock its claim is handed
            # back, whichever way the wall clock went
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            assert store.workflows.get(wid).status == S.PROCESSING
            wall_shift[0] = -recoverer_shift  # and the clock jumps again, the other way
            deadline = time.monotonic() + 30
            back: list[app.BatchWorkflow] = []
            while not back and time.monotonic() < deadline:
                back = store.workflows.recover(stale_after=1.0)
                time.sleep(0.1)
            assert [w.workflow_id for w in back] == [wid] and back[0].status == S.PENDING
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(30)
        # resumed here: every item exactly once
        done = store.workflows.process(wid)
        assert done.status == S.COMPLETED and done.items_processed == N_ITEMS
        assert store.context("default").count("notes") == N_ITEMS


def test_a_claim_from_another_boot_is_stale_at_once(store: app.Store) -> None:
    wid = _submit(store)
    now = clock.now()
    other = clock.Stamp(now.wall, "another-boot", now.steady)
    store.workflows._tracker.claim(wid, "old-owner", "gone:1", other)
    (back,) = store.workflows.recover(stale_after=HOUR)
    assert back.workflow_id == wid and back.status == S.PENDING


def test_a_version_1_tracker_is_upgraded_and_keeps_its_workflows(store_root: Path) -> None:
    with app.open_store(store_root) as store:
        done_id = _submit(store)
        assert store.workflows.process(done_id).status == S.COMPLETED
        claimed_id = _submit(store)
        store.workflows._tracker.claim(claimed_id, "old", "gone:1", clock.now())
    db = sqlite3.connect(store_root / "workflows" / "tracker.sqlite")  # make it version 1
    db.execute("DROP INDEX workflows_queue")  # version 3's priorities and retries
    for column in ("priority", "max_retries", "attempts", "chunk_failures", "not_before"):
        db.execute(f"ALTER TABLE workflows DROP COLUMN {column}")
    db.execute("ALTER TABLE workflows DROP COLUMN beat_boot")
    db.execute("ALTER TABLE workflows DROP COLUMN beat_steady")
    db.execute("UPDATE workflows SET heartbeat_at = ?", (time.time() - 30,))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with app.open_store(store_root) as store:  # opening never migrates (ctxstore upgrade does)
        with pytest.raises(app.SchemaVersionError, match="ctxstore upgrade"):
            store.workflows.list()
        upgrade_store(store)
    with app.open_store(store_root) as store:
        assert {w.workflow_id for w in store.workflows.list()} == {done_id, claimed_id}
        assert store.workflows.get(done_id).status == S.COMPLETED
        # a version-1 row has no steady reading: judged by its wall-clock heartbeat
        assert store.workflows.recover(stale_after=HOUR) == []
        (back,) = store.workflows.recover(stale_after=10)
        assert back.workflow_id == claimed_id
        store.workflows.register("slow", lambda ctx, chunk, params: ctx.append("notes", chunk))
        assert store.workflows.process(claimed_id).status == S.COMPLETED
        assert store.workflows.verify() == []
    db = sqlite3.connect(store_root / "workflows" / "tracker.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    db.close()
