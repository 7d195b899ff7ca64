"""Issue 9 item 12: staging folders left by a killed import / export / save / merge / drop are
removed by the next ``open_store``; a folder of an operation still running in another process
is never touched (each holds a ``flock`` on its folder from creation to removal).

The child process runs the real operation and pauses at one point inside it (after its staging
folder exists); the parent then kills it with SIGKILL, or sweeps while it is alive and lets it
finish.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import app
from app.backends.local.staging import PREFIXES, staging_folder, sweep

CHILD = r"""
import os, sys, time, shutil
from pathlib import Path
import app
import app.managers.transfer.export as transfer_export
import app.managers.transfer.importing as transfer_import
import app.managers.transfer.merge as transfer_merge
import app.managers.transfer.state as transfer_state
root, op, archive, marker, go = sys.argv[1:6]

def pausing(fn):
    def wrapper(*args, **kwargs):
        Path(marker).touch()
        while not os.path.exists(go):
            time.sleep(0.01)
        return fn(*args, **kwargs)
    return wrapper

s = app.open_store(root)
if op == "import":
    transfer_import._verify_parts = pausing(transfer_import._verify_parts)
    s.import_context(archive, name="y")
elif op == "merge":
    transfer_merge._merge_catalog = pausing(transfer_merge._merge_catalog)
    s.import_context(archive, name="x", on_conflict="merge")
elif op == "save":
    transfer_state.build_manifest = pausing(transfer_state.build_manifest)
    s.save_context("y", {"collections": {"t": [{"id": "a"}, {"id": "b"}]}})
elif op == "export":
    transfer_export.write_archive = pausing(transfer_export.write_archive)
    s.export_context("x", archive + ".out.tar.gz")
elif op == "drop":
    real = shutil.rmtree
    def rmtree(path, *a, **k):
        if ".dropped-" in str(path):
            pausing(lambda: None)()
        return real(path, *a, **k)
    shutil.rmtree = rmtree  # the one shutil module every caller uses
    s.drop_context("x")
s.close()
print("done", flush=True)
"""

OPS = ["import", "merge", "save", "export", "drop"]
SLOW = pytest.mark.slow
# the default run covers the three kinds of folder (import staging, save staging, dropped);
# the slow run every operation
KILLED = [o if o in ("import", "save", "drop") else pytest.param(o, marks=SLOW) for o in OPS]
LIVE = [o if o in ("import", "drop") else pytest.param(o, marks=SLOW) for o in OPS]


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    root, archive = tmp_path / "s", tmp_path / "x.tar.gz"
    with app.open_store(root) as store:
        ctx = store.context("x")
        ctx.append("t", [{"id": f"r{i}"} for i in range(50)])
        ctx.embeddings.save("e", [f"r{i}" for i in range(4)], [[float(i)] * 3 for i in range(4)])
        store.export_context("x", archive)
    return root, archive


def _start(
    tmp_path: Path, root: Path, op: str, archive: Path
) -> tuple[subprocess.Popen[str], Path]:
    marker, go = tmp_path / "paused", tmp_path / "go"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), op, str(archive), str(marker), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(app.__file__).parents[1])},
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise AssertionError(child.communicate())
        time.sleep(0.01)
    return child, go


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "contexts").iterdir() if p.name.startswith(PREFIXES))


@pytest.mark.parametrize("op", KILLED)
def test_killed_operation_leaves_nothing_after_next_open(tmp_path: Path, op: str) -> None:
    root, archive = _setup(tmp_path)
    child, _go = _start(tmp_path, root, op, archive)
    left = _leftovers(root)
    assert any(n.startswith(f".{'dropped' if op == 'drop' else op}-") for n in left)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert _leftovers(root) == left  # nothing cleans up after a killed process by itself
    with app.open_store(root) as store:
        assert _leftovers(root) == []
        if op == "drop":
            assert store.contexts() == []  # the half-dropped context's data is gone too
        else:
            assert store.contexts() == ["x"]
            assert store.context("x").count("t") == 50
        assert store.verify().ok


@pytest.mark.parametrize("op", LIVE)
def test_running_operation_in_other_process_is_never_swept(tmp_path: Path, op: str) -> None:
    root, archive = _setup(tmp_path)
    child, go = _start(tmp_path, root, op, archive)
    try:
        left = _leftovers(root)
        assert left
        assert sweep(root / "contexts", dry_run=True) == []
        with app.open_store(root):  # sweeps
            assert _leftovers(root) == left
        assert sweep(root / "contexts") == []
        assert _leftovers(root) == left
        go.touch()
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0 and out.strip() == "done", err
    assert _leftovers(root) == []
    with app.open_store(root) as store:
        if op in ("import", "save"):
            assert store.context("y").count("t") == (50 if op == "import" else 2)
        assert store.verify().ok


def test_sweep_dry_run_reports_paths_and_bytes_and_removes_nothing(tmp_path: Path) -> None:
    contexts = tmp_path / "contexts"
    (contexts / ".import-dead" / "sub").mkdir(parents=True)
    (contexts / ".import-dead" / "sub" / "f").write_bytes(b"x" * 1000)
    (contexts / ".save-dead").mkdir()
    (contexts / "live").mkdir()
    (contexts / ".dropped-link").symlink_to(tmp_path)  # a link is never followed nor removed
    found = sweep(contexts, dry_run=True)
    assert [(p.name, b) for p, b in found] == [(".import-dead", 1000), (".save-dead", 0)]
    assert (contexts / ".import-dead" / "sub" / "f").exists()
    assert sweep(contexts) == found
    assert sorted(p.name for p in contexts.iterdir()) == [".dropped-link", "live"]
    assert tmp_path.exists()


def test_creating_a_staging_folder_while_a_sweeper_holds_a_fresh_one(tmp_path: Path) -> None:
    """The creator never ends up in a folder a sweeper is removing: a folder it cannot lock
    is abandoned (the sweeper removes it) and a new name is tried."""
    import fcntl

    from app.backends.local import staging

    real_mkdir = Path.mkdir
    stolen: list[int] = []

    def mkdir_then_sweeper_locks(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        if not stolen and self.name.startswith(".import-"):  # a sweeper takes the first one
            fd = os.open(self, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            stolen.append(fd)

    base = tmp_path / "contexts"
    base.mkdir()
    Path.mkdir = mkdir_then_sweeper_locks  # type: ignore[method-assign]
    try:
        with staging_folder(base, "import") as path:
            assert stolen
            held = staging._lock(path)
            assert held is None  # ours is locked
            first = [p for p in base.iterdir() if p != path]
            assert len(first) == 1  # the abandoned one, left to its sweeper
    finally:
        Path.mkdir = real_mkdir  # type: ignore[method-assign]
        for fd in stolen:
            os.close(fd)
    assert [p.name for p in base.iterdir()] == [first[0].name]
