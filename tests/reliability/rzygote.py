"""Pre-imported process that forks crash children (fast start: app, numpy, torch loaded once).

stdin: one JSON command per line; stdout: the child's pid per command. A command:
``{"out": PATH, "op": OP, "root": ROOT, "start": K, "count": N,
   "crash_at": K|null, "fsync_log": PATH|null, "fsize": BYTES|null}``.

The child redirects fd 1 to ``out`` (O_APPEND, one ``write`` per line: a line is there
completely or not at all after a kill) and runs ``ops.run_child``. ``crash_at=k``: the k-th
call (counted from the start of the first step) of os.write/pwrite/fsync/fdatasync/ftruncate/
replace/rename ends the process with ``os._exit`` (a crash at a well-defined point);
the child prints ``calls N`` when it survives, so a dry run tells the parent how many points
there are. ``fsync_log``: every fsync appends ``<inode> <size>`` of the synced file to that
file (for the power-loss simulation). ``fsize``: RLIMIT_FSIZE, with SIGXFSZ ignored so that
writes beyond the limit fail with EFBIG.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import contextlib

import ops
import sklearn.linear_model  # noqa: F401  (warm the import for joblib children)
import torch  # noqa: F401

CRASH_FUNCS = ("write", "pwrite", "fsync", "fdatasync", "ftruncate", "replace", "rename")


def _child(cmd: dict) -> None:
    fd = os.open(cmd["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    if cmd.get("fsize") is not None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (cmd["fsize"], cmd["fsize"]))
    if cmd.get("fsync_log"):
        log_fd = os.open(cmd["fsync_log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        raw_write = os.write
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)

            def synced(fd: int, _real=real) -> None:
                _real(fd)
                st = os.fstat(fd)
                raw_write(log_fd, f"{st.st_ino} {st.st_size}\n".encode())

            setattr(os, name, synced)
    counter = {"armed": False, "calls": 0}
    crash_at = cmd.get("crash_at")
    for name in CRASH_FUNCS:
        real = getattr(os, name)

        def wrapped(*a, _real=real, **kw):  # type: ignore[no-untyped-def]
            if counter["armed"] and a[0] != 1:  # not our own ack channel
                counter["calls"] += 1
                if counter["calls"] == crash_at:
                    os._exit(137)
            return _real(*a, **kw)

        setattr(os, name, wrapped)

    def arm() -> None:
        counter["armed"] = True

    ops.run_child(cmd["op"], cmd["root"], cmd["start"], cmd["count"], arm)
    counter["armed"] = False
    os.write(1, f"calls {counter['calls']}\n".encode())


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        cmd = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(cmd)
            except BaseException:
                code = 1
                with contextlib.suppress(BaseException):
                    os.write(2, traceback.format_exc().encode())
            finally:
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
