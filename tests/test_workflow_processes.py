"""The workflow tracker across real processes: SIGKILL mid-workflow, and competing workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recdata import analogy

import app
from app.core.workflow_types import WorkflowStatus as S

ROOT = Path(__file__).resolve().parents[1]

PROCESS_ONE = """
import sys, app
with app.open_store(sys.argv[1]) as store:
    store.workflows.process(sys.argv[2])
"""

PROCESS_PENDING = """
import json, os, sys, time, app
root, go = sys.argv[1], sys.argv[2]
with app.open_store(root) as store:
    store.workflows.metrics()  # open the tracker before the start signal
    while not os.path.exists(go):
        time.sleep(0.005)
    done = store.workflows.process_pending()
    print(json.dumps([[w.workflow_id, w.status.value, w.worker] for w in done]))
"""

pytestmark = pytest.mark.integration


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_progress(store: app.Store, wid: str, at_least: int, proc: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = store.workflows.get(wid).items_processed
        if done >= at_least:
            return done
        if proc.poll() is not None:
            pytest.fail(f"worker ended early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.01)
    pytest.fail("worker made no progress")


def test_sigkill_mid_workflow_recover_and_resume_exactly_once(store_root: Path) -> None:
    n, chunk = 60_000, 500
    with app.open_store(store_root) as store:
        wf = store.workflows.submit(
            "analogy_creation",
            context="default",
            items=(analogy(i) for i in range(n)),
            chunk_size=chunk,
        )
        wid = wf.workflow_id
        kill_points = []
        for target in (n // 6, n // 3, n // 2):  # three kills at growing progress
            worker = _spawn(PROCESS_ONE, str(store_root), wid)
            _wait_progress(store, wid, target, worker)
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            assert worker.returncode == -signal.SIGKILL
            killed = store.workflows.get(wid)
            assert killed.status == S.PROCESSING and killed.items_processed < n
            kill_points.append(killed.items_processed)
            # a fresh heartbeat is not stale yet; stale_after=0 hands it back
            assert store.workflows.recover(stale_after=3600) == []
            (back,) = store.workflows.recover(stale_after=0)
            assert back.workflow_id == wid and back.status == S.PENDING
        done = store.workflows.process(wid)
        assert done.status == S.COMPLETED
        assert done.items_processed == n and done.chunks_done == n // chunk
        assert len(done.batch_ids) == n // chunk
        ctx = store.context("default")
        assert ctx.count("analogies") == n
        # every id around each kill point, plus a spread sample, has exactly one version
        sample = {f"a{i}" for i in range(0, n, 997)}
        for point in kill_points:
            sample |= {f"a{i}" for i in range(max(0, point - chunk), min(n, point + 2 * chunk))}
        histories = ctx.history_many("analogies", sorted(sample))
        assert {len(h) for h in histories.values()} == {1}
        assert ctx.get("analogies", f"a{n - 1}") == analogy(n - 1)
        assert store.workflows.verify() == []


def test_competing_workers_each_workflow_processed_by_exactly_one(store_root: Path) -> None:
    n_workflows, per, n_workers = 14, 1500, 3
    with app.open_store(store_root) as store:
        ids = [
            store.workflows.submit(
                "analogy_creation",
                context="default",
                items=[analogy(i) for i in range(k * per, (k + 1) * per)],
                chunk_size=250,
            ).workflow_id
            for k in range(n_workflows)
        ]
        go = store_root / "go"
        workers = [_spawn(PROCESS_PENDING, str(store_root), str(go)) for _ in range(n_workers)]
        time.sleep(0.5)
        go.touch()
        reports = []
        for proc in workers:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        claimed = [wid for report in reports for wid, _, _ in report]
        assert sorted(claimed) == sorted(ids)  # every workflow once, none twice
        assert all(status == "completed" for report in reports for _, status, _ in report)
        workers_seen = {worker for report in reports for _, _, worker in report}
        assert len(workers_seen) >= 2  # the work really was shared
        for report in reports:  # the tracker agrees on who ran each one
            for wid, _, worker in report:
                assert store.workflows.get(wid).worker == worker
        for wid in ids:
            wf = store.workflows.get(wid)
            assert wf.status == S.COMPLETED and wf.items_processed == per
        ctx = store.context("default")
        assert ctx.count("analogies") == n_workflows * per
        sample = [f"a{i}" for i in range(0, n_workflows * per, 101)]
        assert {len(h) for h in ctx.history_many("analogies", sample).values()} == {1}
        m = store.workflows.metrics()
        assert m["by_status"]["completed"] == n_workflows
        assert m["items_processed"] == n_workflows * per


def test_sigkill_then_cancel_and_rollback_leaves_nothing(store_root: Path) -> None:
    n, chunk = 20_000, 400
    with app.open_store(store_root) as store:
        ctx = store.context("default")
        ctx.append("analogies", [analogy(i, note="original") for i in range(0, n, 2)])
        wf = store.workflows.submit(
            "analogy_creation",
            context="default",
            items=[analogy(i) for i in range(n)],
            chunk_size=chunk,
        )
        worker = _spawn(PROCESS_ONE, str(store_root), wf.workflow_id)
        _wait_progress(store, wf.workflow_id, n // 3, worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        assert store.workflows.cancel(wf.workflow_id).cancel_requested
        (cancelled,) = store.workflows.recover(stale_after=0)
        assert cancelled.status == S.CANCELLED and 0 < cancelled.items_processed < n
        back = store.workflows.rollback(wf.workflow_id)
        assert back.status == S.ROLLED_BACK and back.errors == []
        # created records are gone, overwritten ones have their original version back,
        # including any chunk that committed just before the kill without being recorded
        assert ctx.count("analogies") == n // 2
        assert ctx.count("analogies", {"note": "original"}) == n // 2


def test_cli_worker_stops_on_sigterm_after_its_chunk_and_resumes(store_root: Path) -> None:
    n, chunk = 40_000, 500
    with app.open_store(store_root) as store:
        wf = store.workflows.submit(
            "analogy_creation",
            context="default",
            items=[analogy(i) for i in range(n)],
            chunk_size=chunk,
        )
        cli = "from app.surfaces.cli import main; main()"
        worker = _spawn(cli, "--root", str(store_root), "worker", "--poll", "0.05")
        _wait_progress(store, wf.workflow_id, n // 5, worker)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        assert "stopping after the current chunk" in err and "Traceback" not in err
        handed_back = store.workflows.get(wf.workflow_id)
        assert handed_back.status == S.PENDING and 0 < handed_back.items_processed < n
        assert handed_back.items_processed % chunk == 0
        once = _spawn(cli, "--root", str(store_root), "worker", "--once")
        _, err = once.communicate(timeout=60)
        assert once.returncode == 0, err
        done = store.workflows.get(wf.workflow_id)
        assert done.status == S.COMPLETED and done.items_processed == n
        ctx = store.context("default")
        assert ctx.count("analogies") == n
        sample = [f"a{i}" for i in range(0, n, 137)]
        assert {len(h) for h in ctx.history_many("analogies", sample).values()} == {1}
