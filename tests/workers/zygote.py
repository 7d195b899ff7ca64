"""The crash harness of both test suites: a pre-imported process that forks crash children.

A *zygote* imports ``app`` (and whatever else ``--preload`` names) once, then forks one child
per command, so that a crash test can start hundreds of children cheaply. The parent kills
them with a real SIGKILL at random instants, or a child ends itself at a chosen write.

Protocol: one JSON command per line on stdin; the zygote answers each with the child's pid on
stdout. The child's fd 1 goes to the regular file ``out`` (O_APPEND, one ``write`` per line:
after a kill a line is there completely or not at all). Children are reaped automatically
(SIGCHLD ignored), so a killed child's pid disappears once it is dead. Two kinds of command:

``{"out": PATH, "args": [ROOT, CONTEXT, COLLECTION, PREFIX, SEED]}``
    runs ``crash_appender.run(*args)`` (tests/test_durability.py): append batches until killed.
    Its stderr stays the zygote's.

``{"out": PATH, "op": OP, "root": ROOT, "start": K, "count": N,
   "crash_at": K|null, "fsync_log": PATH|null, "fsize": BYTES|null}``
    runs ``ops.run_child`` (tests/reliability; or ``run_child`` of the module named by an
    optional ``"module"`` key, e.g. ``pg_ops``), stderr to ``out`` as well. ``crash_at=k``: the
    k-th call (counted from the start of the first step) of os.write/pwrite/fsync/fdatasync/
    ftruncate/replace/rename ends the process with ``os._exit`` (a crash at a well-defined
    point); the child prints ``calls N`` when it survives, so a dry run tells the parent how
    many points there are. ``fsync_log``: every fsync appends ``<inode> <size>`` of the synced
    file to that file (for the power-loss simulation). ``fsize``: RLIMIT_FSIZE, with SIGXFSZ
    ignored so that writes beyond the limit fail with EFBIG.

Parent side (import this module; it imports nothing heavy): ``Zygote`` starts one and
``spawn``s children; ``alive``, ``kill``, ``wait_gone`` and ``wait_ready`` follow a child.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

WORKERS = Path(__file__).resolve().parent
TESTS = WORKERS.parent
REPO = TESTS.parent
SEARCH_PATH = (WORKERS, TESTS / "reliability", TESTS)  # where the children's modules live
CRASH_FUNCS = ("write", "pwrite", "fsync", "fdatasync", "ftruncate", "replace", "rename")
RELIABILITY_PRELOAD = ("ops", "sklearn.linear_model", "torch")  # warm imports for ops children


# -- parent side -----------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of a child process: no CTXSTORE_ROOT, the repository importable."""
    env = {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Zygote:
    """A running zygote; ``preload``: modules it imports before the first fork."""

    def __init__(self, preload: Sequence[str] = ()) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
            cwd=str(REPO),
        )

    def spawn(self, **cmd: Any) -> int:
        """Fork a child running ``cmd`` (one of the two kinds above); returns its pid."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd, default=str) + "\n").encode())
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill(pid: int) -> None:
    """SIGKILL the child and wait until it is gone (the zygote reaps it at once)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while alive(pid):
        assert time.monotonic() < deadline, "killed child did not go away"
        time.sleep(0.001)


def wait_gone(pid: int, timeout: float = 120) -> None:
    """Wait for the child to end by itself (killed and failed after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            kill(pid)
            raise AssertionError(f"child {pid} did not finish")
        time.sleep(0.002)


def wait_ready(out: Path, pid: int, timeout: float = 60) -> bool:
    """Wait until the child printed ``ready`` (False if it ended or timed out first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().startswith(b"ready\n"):
            return True
        if not alive(pid):
            return False
        time.sleep(0.002)
    return False


# -- child side ------------------------------------------------------------------------------


def _redirect(out: str, fds: tuple[int, ...]) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for target in fds:
        os.dup2(fd, target)
    os.close(fd)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115


def _log_fsyncs(path: str) -> None:
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    raw_write = os.write
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def synced(fd: int, _real: Callable[[int], None] = real) -> None:
            _real(fd)
            st = os.fstat(fd)
            raw_write(log_fd, f"{st.st_ino} {st.st_size}\n".encode())

        setattr(os, name, synced)


def _run_op(cmd: dict[str, Any]) -> None:
    _redirect(cmd["out"], (1, 2))
    if cmd.get("fsize") is not None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (cmd["fsize"], cmd["fsize"]))
    if cmd.get("fsync_log"):
        _log_fsyncs(cmd["fsync_log"])
    counter = {"armed": False, "calls": 0}
    crash_at = cmd.get("crash_at")
    for name in CRASH_FUNCS:
        real = getattr(os, name)

        def wrapped(*a: Any, _real: Callable[..., Any] = real, **kw: Any) -> Any:
            if counter["armed"] and a[0] != 1:  # not our own ack channel
                counter["calls"] += 1
                if counter["calls"] == crash_at:
                    os._exit(137)
            return _real(*a, **kw)

        setattr(os, name, wrapped)

    def arm() -> None:
        counter["armed"] = True

    importlib.import_module(cmd.get("module") or "ops").run_child(
        cmd["op"], cmd["root"], cmd["start"], cmd["count"], arm
    )
    counter["armed"] = False
    os.write(1, f"calls {counter['calls']}\n".encode())


def _run_appender(cmd: dict[str, Any]) -> None:
    _redirect(cmd["out"], (1,))
    importlib.import_module("crash_appender").run(*cmd["args"])


def main(preload: Sequence[str]) -> None:
    for p in SEARCH_PATH:
        sys.path.insert(0, str(p))
    for name in ("crash_appender", *preload):  # crash_appender imports app: done once
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        cmd = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if "op" in cmd:
                    _run_op(cmd)
                else:
                    _run_appender(cmd)
            except BaseException:
                code = 1
                with contextlib.suppress(BaseException):
                    os.write(2, traceback.format_exc().encode())
            finally:
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
