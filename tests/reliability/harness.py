"""Parent-side helpers: a pool of crash zygotes (tests/workers/zygote.py), power-loss simulation."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from zygote import RELIABILITY_PRELOAD, Zygote, alive, child_env, kill, wait_gone, wait_ready

__all__ = [
    "Zygote",
    "alive",
    "child_env",
    "durable_sizes",
    "kill",
    "power_loss",
    "run_to_end",
    "snapshot_index",
    "wait_acks",
    "wait_gone",
    "wait_ready",
    "zygote",
]


_POOL: list[Zygote] = []
_POOL_GUARD = threading.Lock()


def zygote(lane: int) -> Zygote:
    """One long-lived zygote per lane, shared by every test of the session."""
    with _POOL_GUARD:
        while len(_POOL) <= lane:
            _POOL.append(Zygote(RELIABILITY_PRELOAD))
        z = _POOL[lane]
        if z.proc.poll() is not None:
            z = _POOL[lane] = Zygote(RELIABILITY_PRELOAD)
        return z


@atexit.register
def _close_pool() -> None:
    for z in _POOL:
        z.close()


def wait_acks(out: Path, pid: int, count: int = 1, timeout: float = 120) -> bool:
    """Wait until the child acknowledged ``count`` steps (False if it ended or timed out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\nack ") >= count:
            return True
        if not alive(pid):
            return False
        time.sleep(0.002)
    return False


def run_to_end(z: Zygote, out: Path, **cmd: Any) -> str:
    pid = z.spawn(out=str(out), **cmd)
    wait_gone(pid)
    return out.read_text() if out.exists() else ""


# -- power loss ------------------------------------------------------------------------------

SKIP_SUFFIXES = (".sqlite", ".sqlite-wal", ".sqlite-shm", ".lock")


def durable_sizes(root: Path) -> dict[int, int]:
    """inode -> size of every regular file (the state taken as fsync'd before a child ran)."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[st.st_ino] = st.st_size
    return out


def power_loss(
    root: Path,
    before: dict[int, int],
    fsync_log: Path,
    index_snapshot: Path,
    rng: random.Random,
    mode: str,
) -> int:
    """Simulate losing the page cache: each file keeps its last fsync'd length; the unsynced
    bytes are dropped (``truncate``) or a random prefix of them is kept and the rest filled
    with garbage (``garbage``). SQLite files are not touched byte-wise (SQLite's own fsyncs are
    not visible here); instead, with probability 1/2, the whole index is put back to its state
    before the child ran (an index lagging behind its log). Returns how many files changed."""
    synced = dict(before)
    if fsync_log.exists():
        for line in fsync_log.read_text().splitlines():
            ino, size = line.split()
            synced[int(ino)] = int(size)
    changed = 0
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.endswith(SKIP_SUFFIXES) or p.name == ".lock":
            continue
        st = p.stat()
        keep = synced.get(st.st_ino, 0)
        if st.st_size <= keep:
            continue
        changed += 1
        if mode == "truncate":
            os.truncate(p, keep)
        else:
            cut = rng.randint(keep, st.st_size)
            with open(p, "r+b") as fh:
                fh.seek(cut)
                fh.write(rng.randbytes(st.st_size - cut))
    if rng.random() < 0.5 and index_snapshot.exists():
        for p in root.rglob("*.sqlite*"):
            if "workflows" not in p.parts:
                p.unlink()
        for p in index_snapshot.rglob("*"):
            if p.is_file():
                dest = root / p.relative_to(index_snapshot)
                shutil.copy2(p, dest)
        changed += 1
    return changed


def snapshot_index(root: Path, dest: Path) -> None:
    """Copy the (idle, checkpointed) context index files for ``power_loss``."""
    if dest.exists():
        shutil.rmtree(dest)
    for p in root.rglob("*.sqlite*"):
        if "workflows" in p.parts:
            continue
        target = dest / p.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
