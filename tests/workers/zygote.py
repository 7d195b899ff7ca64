"""A pre-imported process that forks crash-test children on request (fast process start).

Reads one JSON command per line on stdin: ``{"out": PATH, "args": [...]}``; forks a child that
redirects its stdout to ``PATH`` (a regular file, one ``write`` per acknowledged line) and runs
``crash_appender.run(*args)``; answers with the child's pid on stdout. Children are reaped
automatically (SIGCHLD ignored), so a killed child's pid disappears once it is dead. The parent
kills the children with a real SIGKILL. Nothing of the store is opened before forking.
"""

from __future__ import annotations

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import crash_appender  # imports app: the expensive part, done once


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        cmd = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                fd = os.open(cmd["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.close(fd)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                crash_appender.run(*cmd["args"])
            except BaseException:
                code = 1
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
