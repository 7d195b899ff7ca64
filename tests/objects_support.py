"""A throwaway moto S3 server (real HTTP) for the object-store tests, until the services
helper's ``s3_url`` fixture (tests/backend_servers.py) replaces it.

``moto_bucket(folder)`` starts ``moto_server`` on a free loopback port, points the AWS
variables at it (endpoint, dummy credentials, us-east-1), creates a fresh bucket and yields
``s3://<bucket>/store``; on exit it stops exactly that server (by its PID) and restores the
variables.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_bucket(folder: Path) -> Iterator[str]:
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    log = (folder / "moto.log").open("wb")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited: see {folder / 'moto.log'}") from None
                time.sleep(0.05)
        os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
        bucket = f"ctxstore-{uuid.uuid4().hex[:12]}"
        req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
        urllib.request.urlopen(req, timeout=10).close()
        yield f"s3://{bucket}/store"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
