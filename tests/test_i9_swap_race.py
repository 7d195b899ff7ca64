"""Issue 9 item 10: a writer in another process keeps appending while this process replaces
the context directory under it (overwrite import, ``save_context``). The writer must follow
each swap: never fail, never write into the replaced files.

What is checked, precisely: the writer acknowledges batches ``w-<n>`` (one record ``w<n>``
each) and writes the acknowledgement, with a system-wide monotonic timestamp, to a file. Every
import replaces the context by an archive holding ``base`` records only, so a batch acknowledged
before the last import began may be superseded; one acknowledged after the last import returned
must be in the final context. The writer never raises, the final context verifies, and the
writer and this process count the same records at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import app

WRITER = r"""
import sys, time, app
root, acks, stop = sys.argv[1], sys.argv[2], sys.argv[3]
import os
n = 0
with app.open_store(root) as s, open(acks, "a") as out:
    c = s.context("x")
    while True:
        stopping = os.path.exists(stop)
        c.append("t", [{"id": f"w{n}", "n": n}], batch_id=f"w-{n}")
        out.write(f"{n} {time.monotonic()}\n"); out.flush()
        n += 1
        if stopping:
            break
    print(c.count("t"), flush=True)
"""


def _acks(path: Path) -> list[tuple[int, float]]:
    out = []
    for line in path.read_text().splitlines():
        n, t = line.split()
        out.append((int(n), float(t)))
    return out


@pytest.mark.parametrize("swaps", [10, pytest.param(60, marks=pytest.mark.slow)])
def test_writer_in_other_process_follows_overwrite_imports(tmp_path: Path, swaps: int) -> None:
    root, archive = tmp_path / "s", tmp_path / "x.tar.gz"
    acks, stop = tmp_path / "acks", tmp_path / "stop"
    with app.open_store(root) as store:
        ctx = store.context("x")
        ctx.append("t", [{"id": f"b{i}"} for i in range(20)])
        store.export_context("x", archive)
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(acks), str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(app.__file__).parents[1])},
        )
        try:
            deadline = time.monotonic() + 60
            while (not acks.exists() or not acks.read_text()) and time.monotonic() < deadline:
                assert writer.poll() is None, writer.communicate()
                time.sleep(0.01)
            last_start = 0.0
            for i in range(swaps):
                last_start = time.monotonic()
                # hold the writer lock a moment first, so the writer is waiting on it (past
                # its own checks) when the directory is swapped: the race, made likely
                with store.context("x").writer_lock.hold():
                    time.sleep(0.05)
                    if i % 2:
                        store.save_context("x", {"collections": {"t": [{"id": "s0"}]}})
                    else:
                        store.import_context(archive, name="x", on_conflict="overwrite")
            last_end = time.monotonic()
            stop.touch()
            out, err = writer.communicate(timeout=120)
        finally:
            if writer.poll() is None:
                writer.kill()
        assert writer.returncode == 0, err
        final = {r["id"] for r in store.context("x").iter("t")}
        assert int(out.strip()) == len(final)
        assert store.context("x").verify().ok
        done = _acks(acks)
        after = [n for n, t in done if t > last_end]
        assert after, "the writer acknowledged nothing after the last swap"
        assert all(f"w{n}" in final for n in after)
        maybe = {f"w{n}" for n, t in done if t > last_start}
        base = {"s0"} if swaps % 2 == 0 else {f"b{i}" for i in range(20)}
        assert final - maybe == base


BLOCKED_WRITER = r"""
import sys, app
root, ready = sys.argv[1], sys.argv[2]
s = app.open_store(root)
c = s.context("x")
assert c.count("t") == 1  # ready to write: the next append waits on the lock held by the test
open(ready, "w").close()
try:
    c.append("t", [{"id": "second"}])
except app.ConflictError as exc:
    print("conflict", exc)
"""


def test_writer_waiting_on_a_dropped_context_gets_a_conflict(tmp_path: Path) -> None:
    """A writer of another process blocked on the lock of a context that is then dropped gets
    a ``ConflictError``; it never re-creates the dropped context's folder or writes into it."""
    root, ready = tmp_path / "s", tmp_path / "ready"
    with app.open_store(root) as store:
        store.context("x").append("t", [{"id": "r"}])
        with store.context("x").writer_lock.hold():
            writer = subprocess.Popen(
                [sys.executable, "-c", BLOCKED_WRITER, str(root), str(ready)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(Path(app.__file__).parents[1])},
            )
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert writer.poll() is None and time.monotonic() < deadline, writer.communicate()
                time.sleep(0.01)
            time.sleep(0.2)  # the writer is (most likely) waiting on this lock now
            store.drop_context("x")
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert out.startswith("conflict"), (out, err)
        assert store.contexts() == []
        assert not (root / "contexts" / "x").exists()
