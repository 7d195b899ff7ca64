"""Workflow workers as real processes (``ctxstore worker``), on a directory store and on
PostgreSQL: claims by priority then age with two workers, retries exactly once, custom types
from handler modules given with ``--import``, a worker lacking a type leaving the work and
saying so once, and a submitted workflow never making a worker import anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_matrix import BACKENDS

import app
from app.core.workflow_types import WorkflowStatus as S

ROOT = Path(__file__).resolve().parents[1]
WORKERS = ROOT / "tests" / "workers"

pytestmark = pytest.mark.integration


@pytest.fixture(params=BACKENDS[:2])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def handlers() -> Iterator[Any]:
    """The test module ``wf_handlers`` (the submitting process registers its types too)."""
    sys.path.insert(0, str(WORKERS))
    try:
        import wf_handlers

        yield wf_handlers
    finally:
        sys.path.remove(str(WORKERS))


def env(tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"},
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(WORKERS)]),
        "WF_BAIT_MARKER": str(tmp_path / "bait-imported"),
    }


def ctxstore(root: Path | str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "--root", str(root), *args],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    _, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stderr


def worker_once(root: Path | str, tmp_path: Path, *imports: str) -> tuple[int, str]:
    args = [a for m in imports for a in ("--import", m)]
    return finish(ctxstore(root, tmp_path, "worker", "--once", "--poll", "0.05", *args))


def test_two_workers_claim_by_priority_then_age(
    store: app.Store, store_root: Path | str, tmp_path: Path, handlers: Any
) -> None:
    handlers.register(store.workflows)
    for i in range(20):
        for prio in (0, 5, 10):  # age and priority disagree: the oldest have the lowest
            wid = f"r{prio:02d}-{i:02d}"
            store.workflows.submit(
                "rank_check",
                context="default",
                items=[{"id": "x"}],
                params={"me": wid},
                workflow_id=wid,
                priority=prio,
            )
    procs = [
        ctxstore(root, tmp_path, "worker", "--once", "--poll", "0.05", "--import", "wf_handlers")
        for root in (store_root, store_root)
    ]
    results = [finish(p) for p in procs]
    assert all(code == 0 for code, _ in results), results
    done = store.workflows.list(limit=100)
    assert len(done) == 60 and {w.status for w in done} == {S.COMPLETED}
    seen = store.context("default").query("seen")
    assert len(seen) == 60
    # when each ran, no workflow still pending outranked it: every claim took the best one
    assert [r["id"] for r in seen if r["ahead"]] == []
    started = sorted(done, key=lambda w: (w.started_at, w.workflow_id))
    # (start stamps are taken just before a claim: two concurrent claims may swap)
    assert [w.priority for w in started[:20]].count(10) >= 18  # the highest went first


def test_retries_in_a_worker_commit_once_and_failures_list_every_attempt(
    store: app.Store, store_root: Path | str, tmp_path: Path, handlers: Any
) -> None:
    handlers.register(store.workflows)
    wfs = store.workflows
    good = wfs.submit(
        "flaky",
        context="default",
        items=[{"id": f"k{i}"} for i in range(6)],
        params={"me": "good", "collection": "out", "fail_first": 2},
        chunk_size=2,
        max_retries=3,
    )
    bad = wfs.submit(
        "flaky",
        context="default",
        items=[{"id": f"b{i}"} for i in range(4)],
        params={"me": "bad", "collection": "bad", "fail_first": 99},
        chunk_size=2,
        max_retries=2,
    )
    code, stderr = worker_once(store_root, tmp_path, "wf_handlers")
    assert code == 0, stderr
    ok = wfs.get(good.workflow_id)
    assert ok.status == S.COMPLETED and ok.attempts == 9 and ok.items_processed == 6
    ctx = store.context("default")
    assert ctx.count("out") == 6
    assert all(len(ctx.history("out", f"k{i}")) == 1 for i in range(6))  # exactly once
    failed = wfs.get(bad.workflow_id)
    assert failed.status == S.FAILED and failed.attempts == 3
    assert failed.errors == [
        f"chunk 0, attempt {n}: RuntimeError: flaky attempt {n}" for n in (1, 2, 3)
    ]
    assert all(len(ctx.history("bad", f"b{i}")) <= 1 for i in range(2))  # never twice
    shown = finish(ctxstore(store_root, tmp_path, "workflows", "show", bad.workflow_id))
    assert shown[0] == 0
    listed = subprocess.run(
        [sys.executable, "-m", "app", "--root", str(store_root), "workflows", "list", "--json"],
        env=env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert '"attempts":9' in listed.stdout.replace(" ", "")
    metrics = wfs.metrics()
    assert metrics["attempts"] == 12 and metrics["waiting_retry"] == 0


def test_a_custom_type_runs_in_a_worker_started_with_its_module(
    store: app.Store, store_root: Path | str, tmp_path: Path, handlers: Any
) -> None:
    handlers.register(store.workflows)
    wf = store.workflows.submit(
        "tag", context="default", items=[{"id": "a"}, {"id": "b"}], params={"tag": "red"}
    )
    # without the module: left pending, and said so
    code, stderr = worker_once(store_root, tmp_path)
    assert code == 0, stderr
    assert "'tag' has no handler in this worker (1 pending)" in stderr
    assert store.workflows.get(wf.workflow_id).status == S.PENDING
    one = finish(ctxstore(store_root, tmp_path, "workflows", "process", wf.workflow_id))
    assert one[0] == 2 and "'tag' has no handler in this process" in one[1]  # usage
    assert "--import" in one[1]
    # a long-running worker without it says so once, however often it looks
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--root", str(store_root), "worker", "--poll", "0.02"],
            cwd=tmp_path,
            env=env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
        )
        deadline = time.monotonic() + 120
        while "has no handler" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        time.sleep(1.0)  # dozens more looks at the pending workflow
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, log.read_text()
    stderr = log.read_text()
    assert stderr.count("'tag' has no handler") == 1
    assert store.workflows.get(wf.workflow_id).status == S.PENDING
    # with the module: processed
    code, stderr = worker_once(store_root, tmp_path, "wf_handlers")
    assert code == 0, stderr
    assert "imported wf_handlers: workflow types flaky, rank_check, tag" in stderr
    done = store.workflows.get(wf.workflow_id)
    assert done.status == S.COMPLETED and done.attempts == 1
    assert store.context("default").get("tagged", "a") == {"id": "a", "tagged": "red"}


def test_a_submitted_workflow_never_makes_a_worker_import_anything(
    store: app.Store, store_root: Path | str, tmp_path: Path, handlers: Any
) -> None:
    marker = tmp_path / "bait-imported"
    # the submitter knows a type named like an importable module, and names it everywhere
    store.workflows.register("wf_bait", lambda c, chunk, p: None)
    bait = {"module": "wf_bait", "import": "wf_bait", "handler": "wf_bait:run"}
    wf = store.workflows.submit(
        "wf_bait", context="default", items=[{"id": "x", **bait}], params=bait
    )
    code, stderr = worker_once(store_root, tmp_path, "wf_handlers")
    assert code == 0, stderr
    assert "'wf_bait' has no handler in this worker" in stderr
    assert store.workflows.get(wf.workflow_id).status == S.PENDING
    assert not marker.exists()  # wf_bait is importable here, and was never imported
    # --import takes module names only, and a module must define register(workflows)
    for bad, said in (("os;id", "is not a module name"), ("json", "defines no register")):
        code, stderr = worker_once(store_root, tmp_path, bad)
        assert code == 2 and "--import" in stderr and said in stderr, stderr
    missing = worker_once(store_root, tmp_path, "no_such_module_here")
    assert missing[0] == 2 and "cannot import 'no_such_module_here'" in missing[1]
    assert not marker.exists()
