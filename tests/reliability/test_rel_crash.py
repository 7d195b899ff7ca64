"""Scenarios 1 and 2: crash points (SIGKILL at random instants, deterministic self-crash at
the k-th write of an operation) and simulated power loss after a crash."""

from __future__ import annotations

import concurrent.futures
import random
import shutil
import time
from pathlib import Path

import ops
import pytest
from harness import (
    durable_sizes,
    kill,
    power_loss,
    run_to_end,
    snapshot_index,
    wait_acks,
    wait_ready,
    zygote,
)
from relstats import scale, tally

import app

RANDOM_OPS = ["append", "compact", "emb", "model", "workflow", "export", "import"]
# how long one step takes on an idle machine, roughly: the smallest kill window. On a slow or
# loaded machine the window grows to the step time measured in earlier trials of the lane.
WINDOW = {
    "append": 0.15,
    "compact": 0.3,
    "emb": 0.1,
    "model": 0.15,
    "workflow": 0.3,
    "export": 0.5,
    "import": 0.5,
}


def _prepare(op: str, base: Path, setup_steps: int) -> Path:
    """A pristine store for ``op`` (copied for every trial)."""
    pristine = base / "pristine-store"
    ops.setup(op, pristine, steps=setup_steps)
    if op == "import":
        with app.open_store(pristine) as s:
            s.export_context(ops.CTX, base / "pristine.tar.gz")
    return pristine


def _trial_root(base: Path, pristine: Path, name: str) -> Path:
    trial = base / name
    trial.mkdir()
    shutil.copytree(pristine, trial / "store")
    if (base / "pristine.tar.gz").exists():
        shutil.copy(base / "pristine.tar.gz", trial / "pristine.tar.gz")
    return trial / "store"


def _random_kills(
    base: Path, op: str, kills: int, seed: int, power: bool
) -> tuple[int, int, list[str]]:
    """Kill children looping over ``op`` at random instants (2 lanes); check after each
    kill. Returns (kills, acknowledged steps, failures)."""
    setup_steps = 2 if op in ("emb", "model") else 0
    pristine = _prepare(op, base, setup_steps)

    def lane(i: int) -> tuple[int, list[str]]:
        rng = random.Random(seed * 10 + i)
        failures: list[str] = []
        acked_total = 0
        step_s = WINDOW[op]  # the slowest step seen in this lane (grows under load)
        z = zygote(i)
        if True:
            for r in range(i, kills, 2):
                root = _trial_root(base, pristine, f"t{r}")
                out = root.parent / "out.txt"
                fsync_log = root.parent / "fsync.txt"
                before = durable_sizes(root)
                snap = root.parent / "index-snap"
                if power:
                    snapshot_index(root, snap)
                pid = z.spawn(
                    out=str(out),
                    op=op,
                    root=str(root),
                    start=setup_steps,
                    count=10**6,
                    fsync_log=str(fsync_log) if power else None,
                )
                try:
                    draw = rng.random()
                    if draw < 0.1:
                        time.sleep(rng.uniform(0, 0.05))  # also while opening / recovering
                    elif wait_ready(out, pid):
                        t0 = time.monotonic()
                        if draw < 0.3:  # somewhere in the first step
                            time.sleep(rng.uniform(0, step_s))
                        elif wait_acks(out, pid):  # somewhere in the next two steps
                            step_s = max(step_s, time.monotonic() - t0)
                            time.sleep(rng.uniform(0, 2 * step_s))
                finally:
                    kill(pid)
                text = out.read_text() if out.exists() else ""
                acks = ops.Acks(text)
                acked_total += len(acks.steps)
                try:
                    assert not acks.done and "Traceback" not in text, text[-2000:]
                    if power:
                        power_loss(
                            root, before, fsync_log, snap, rng, "truncate" if r % 2 else "garbage"
                        )
                    ops.check(op, root, acks, setup_steps, setup_steps)
                except Exception as exc:
                    failures.append(f"{op} kill {r}: {type(exc).__name__}: {exc}")
                shutil.rmtree(root.parent)
        return acked_total, failures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lane, range(2)))
    return kills, sum(a for a, _ in results), [f for _, fs in results for f in fs]


@pytest.mark.parametrize("op", RANDOM_OPS)
def test_sigkill_at_random_instants(tmp_path: Path, op: str) -> None:
    kills = scale(12, 120)
    n, acked, failures = _random_kills(tmp_path, op, kills, len(op), power=False)
    tally(f"1 crash: SIGKILL random ({op})", n, len(failures))
    assert not failures, "\n".join(failures[:5])
    assert acked >= n // 6, f"{op}: kills landed mostly before any step finished ({acked} acks)"


@pytest.mark.parametrize("op", ["append", "compact", "emb", "model"])
def test_power_loss_after_crash(tmp_path: Path, op: str) -> None:
    kills = scale(10, 100)
    n, _, failures = _random_kills(tmp_path, op, kills, 7 + len(op), power=True)
    tally(f"2 power loss ({op})", n, len(failures))
    assert not failures, "\n".join(failures[:5])


DET_OPS = ["append", "compact", "emb", "model", "workflow", "export", "import"]


@pytest.mark.parametrize("op", DET_OPS)
def test_self_crash_at_every_write(tmp_path: Path, op: str) -> None:
    """A child runs one step of ``op`` and calls ``os._exit`` at the k-th write-path os call,
    for every k (a dry run counts the calls)."""
    setup_steps = {"emb": 3, "model": 2, "compact": 2, "append": 3}.get(op, 0)
    steps = {"append": 3, "compact": 2, "emb": 2, "model": 2}.get(op, 1)
    pristine = _prepare(op, tmp_path, setup_steps)
    root = _trial_root(tmp_path, pristine, "dry")
    text = run_to_end(
        zygote(0), root.parent / "out.txt", op=op, root=str(root), start=setup_steps, count=steps
    )
    calls = [int(line.split()[1]) for line in text.splitlines() if line.startswith("calls")]
    assert calls and calls[0] >= 2, text
    total = calls[0]
    shutil.rmtree(root.parent)

    def lane(i: int) -> list[str]:
        failures: list[str] = []
        for k in range(1 + i, total + 1, 2):
            root = _trial_root(tmp_path, pristine, f"k{k}")
            text = run_to_end(
                zygote(i),
                root.parent / "out.txt",
                op=op,
                root=str(root),
                start=setup_steps,
                count=steps,
                crash_at=k,
            )
            acks = ops.Acks(text)
            try:
                assert "Traceback" not in text, text
                assert not acks.done, f"no crash at call {k} of {total}"
                ops.check(op, root, acks, setup_steps, setup_steps)
            except Exception as exc:
                failures.append(f"{op} crash at call {k}/{total}: {type(exc).__name__}: {exc}")
            shutil.rmtree(root.parent)
        return failures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        failures = [f for fs in pool.map(lane, range(2)) for f in fs]
    tally(f"1 crash: self-crash at k-th write ({op})", total, len(failures))
    assert not failures, "\n".join(failures[:5])
