"""Every public method carries a contract (SPEC 10, issue 9 item 15), and the levels work.

``CTXSTORE_CONTRACTS`` is read at import, so each level is checked in its own interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import app

ROOT = Path(__file__).resolve().parents[1]

# Lists, per class, the public methods without a precondition or postcondition at this level.
UNCOVERED = """
import inspect, json
from app.managers.buffer import AppendBuffer
from app.managers.context import Context
from app.managers.embeddings import EmbeddingStore
from app.managers.models import ModelStore
from app.managers.store import Store
from app.managers.workflows import WorkflowManager

out, total = [], 0
for cls in (Store, Context, EmbeddingStore, ModelStore, WorkflowManager, AppendBuffer):
    for name, fn in vars(cls).items():
        if name.startswith("_") or not inspect.isfunction(fn):
            continue
        total += 1
        if not (getattr(fn, "__preconditions__", None) or getattr(fn, "__postconditions__", None)):
            out.append(f"{cls.__name__}.{name}")
print(json.dumps({"uncovered": out, "total": total}))
"""

# Contracts on the hot per-item path of the append buffer are only on at the "full" level.
HOT_PATH_ONLY_FULL = {"AppendBuffer.record"}


def _uncovered(level: str | None) -> tuple[set[str], int]:
    env = {k: v for k, v in os.environ.items() if k != "CTXSTORE_CONTRACTS"}
    env["PYTHONPATH"] = str(ROOT)
    if level is not None:
        env["CTXSTORE_CONTRACTS"] = level
    done = subprocess.run(
        [sys.executable, "-c", UNCOVERED],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return set(found["uncovered"]), int(found["total"])


def test_every_public_method_carries_a_contract_at_the_full_level() -> None:
    uncovered, total = _uncovered("full")
    assert total > 60  # the introspection really saw the classes' methods
    assert uncovered == set()


def test_by_default_only_the_buffer_hot_path_goes_without() -> None:
    uncovered, _ = _uncovered(None)
    assert uncovered == HOT_PATH_ONLY_FULL


def test_off_keeps_the_input_preconditions_only() -> None:
    uncovered, total = _uncovered("off")
    # methods whose only contracts are postconditions lose them; argument checks stay
    assert "Store.recover" in uncovered and "WorkflowManager.close" in uncovered
    assert "Context.append" not in uncovered and "ModelStore.is_trusted" not in uncovered
    assert len(uncovered) < total


FULL_CHECKS = """
import sys, app
from app.managers.workflows.runner import Heartbeat
import icontract

with app.open_store(sys.argv[1]) as store:
    ctx = store.context("default")
    ctx.append("t", [{"id": f"r{i}", "v": i} for i in range(50)])
    ctx.append("t", [{"id": f"r{i}", "v": -i} for i in range(10)])
    report = ctx.compact("t")  # checked: keeps every current record
    assert report.records_after == 50, report
    buf = ctx.buffer("t")
    assert all(buf.record({"id": f"b{i}"}) for i in range(100))  # checked accounting
    buf.close()
    # a broken promise names the promise, never the values (records may be private)
    from app.core.contracts import ensure, ensure_full

    @ensure_full(lambda records, result: result == len(records), "counts every record")
    def broken(records):
        return 0

    try:
        broken([{"id": "secret-value"}])
    except icontract.ViolationError as exc:
        print("quiet:", "secret-value" not in str(exc) and "counts every record" in str(exc))
    # a broken promise is caught: a close that leaves its heartbeat thread behind
    Heartbeat.stop = lambda self: None
    store.workflows._runner.heartbeat._thread = object()
    try:
        store.workflows.close()
    except icontract.ViolationError as exc:
        print("caught:", exc)
    store.workflows._runner.heartbeat._thread = None
"""


def test_full_level_checks_real_promises(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CTXSTORE_CONTRACTS="full")
    done = subprocess.run(
        [sys.executable, "-c", FULL_CHECKS, str(tmp_path / "store")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "caught: postcondition violated: no heartbeat thread is left" in done.stdout
    assert "quiet: True" in done.stdout


@pytest.mark.parametrize("level", ["on", "full", "off"])
def test_contract_levels_run_the_store(tmp_path: Path, level: str) -> None:
    code = (
        "import sys, app\n"
        "with app.open_store(sys.argv[1]) as s:\n"
        "    c = s.context('default')\n"
        "    r = c.append('t', [{'id': str(i)} for i in range(20)])\n"
        "    assert r.count == 20 and c.delete('t', ['1', '2', '99']) == 2\n"
        "    s.recover(); assert s.verify().ok\n"
        "    assert 'analogy_creation' in s.workflows.handlers()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), CTXSTORE_CONTRACTS=level)
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_every_manager_class_carries_an_invariant() -> None:
    """SPEC 10: each manager class carries invariants, each guarding state that changes."""
    from app.managers.buffer import AppendBuffer
    from app.managers.context import Context
    from app.managers.embeddings import EmbeddingStore
    from app.managers.models import ModelStore
    from app.managers.store import Store
    from app.managers.workflows import WorkflowManager

    for cls in (Store, Context, EmbeddingStore, ModelStore, WorkflowManager):
        assert getattr(cls, "__invariants__", None), cls.__name__
    # the buffer's sits on its per-item hot path (record): on at the full level only
    assert not getattr(AppendBuffer, "__invariants__", None)
    check = "from app.managers.buffer import AppendBuffer as B; assert B.__invariants__"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CTXSTORE_CONTRACTS": "full"}
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, timeout=120, check=True)


def test_a_broken_invariant_names_the_promise(store: app.Store) -> None:
    import icontract

    ctx = store.context("c")
    ctx._plans.update({("x", str(i)): None for i in range(600)})  # type: ignore[misc]
    with pytest.raises(icontract.ViolationError, match="query-plan cache stays bounded"):
        ctx.count("t")
    ctx._plans.clear()
