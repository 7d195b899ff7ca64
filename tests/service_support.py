"""Shared helpers for tests that talk to a REAL ``ctxstore serve`` process over HTTP.

- ``free_port()``: a free TCP port on loopback.
- ``child_env(**extra)``: the environment for a child process: this one's (which keeps
  ``CTXSTORE_TRUST_KEY`` and ``XDG_CONFIG_HOME`` from conftest), ``PYTHONPATH`` = the repo,
  no ``CTXSTORE_ROOT``.
- ``serve(root, *args)``: a context manager that starts ``python -m ctxstore --root ROOT serve
  --port P *args``, waits until ``GET /health`` answers, yields a ``Server`` (``proc``, ``pid``,
  ``port``, ``base`` URL, ``client(token=None)``), and stops the process by its PID afterwards
  (SIGTERM, then SIGKILL after a grace period).
- ``start_server`` / ``stop_server``: the same in two halves, for tests that need them apart.
- ``mint_token(root, name, scope="admin", contexts=None)``: a token created on the store (the
  same as ``ctxstore tokens create``); ``auth_headers(token)``.
- ``local_client(application, token=None)``: an in-process ``TestClient`` that looks like a
  loopback caller (``Host: localhost``, client address 127.0.0.1), with the bearer token.
- ``rss_kib(pid)`` / ``hwm_kib(pid)``: ``VmRSS`` / ``VmHWM`` of a process from
  ``/proc/<pid>/status`` (KiB); ``RssSampler(pid)``: a thread sampling ``VmRSS`` while a block
  runs; ``.peak_kib`` is the highest sample (``VmHWM`` of a server also counts its start-up).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

import app

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
STOP_GRACE = 20.0


def free_port() -> int:
    """A TCP port nobody listens on at the moment (loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment (trust key and config home included) for a child process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **extra}
    env.pop("CTXSTORE_ROOT", None)
    assert "CTXSTORE_TRUST_KEY" in env and "XDG_CONFIG_HOME" in env, "conftest not loaded"
    return env


@dataclass
class Server:
    """A running ``ctxstore serve`` child process."""

    proc: subprocess.Popen[bytes]
    port: int
    host: str = "127.0.0.1"
    log: Path | None = None
    scheme: str = "http"
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def client(self, token: str | None = None, *, timeout: float = 60.0) -> httpx.Client:
        """An ``httpx.Client`` on the server, sending ``token`` as a bearer token if given."""
        headers = dict(self.extra_headers)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base, headers=headers, timeout=timeout, verify=False)

    def output(self, tail: int | None = None) -> str:
        """What the server wrote to stderr/stdout so far (the last ``tail`` characters)."""
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace")
        return text if tail is None else text[-tail:]


def start_server(
    root: Path,
    *args: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    ready_path: str = "/health",
    scheme: str = "http",
) -> Server:
    """Start ``python -m ctxstore --root ROOT serve --port P *args`` and wait until it answers
    ``GET ready_path`` (any status below 500). ``log``: file for the child's output (default:
    ``<root>.serve-<port>.log`` next to the store). ``scheme="https"`` when ``args`` hold
    ``--ssl-certfile/--ssl-keyfile`` (the clients do not verify the certificate)."""
    port = free_port() if port is None else port
    log = log or root.parent / f"{root.name}.serve-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ctxstore", "--root", str(root), "serve", "--port", str(port)]
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [*cmd, *args],
            env=env if env is not None else child_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Server(proc=proc, port=port, log=log, scheme=scheme)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if httpx.get(f"{server.base}{ready_path}", timeout=2, verify=False).status_code < 500:
                return server
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(
                f"the server exited with {proc.returncode}:\n{server.output(4000)}"
            )
        if time.monotonic() > deadline:
            stop_server(server)
            raise AssertionError(f"the server did not start:\n{server.output(4000)}")
        time.sleep(0.1)


def stop_server(server: Server) -> int:
    """Stop the server by its PID (SIGTERM, SIGKILL after ``STOP_GRACE`` s); its exit code."""
    proc = server.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def serve(
    root: Path, *args: str, env: dict[str, str] | None = None, scheme: str = "http"
) -> Iterator[Server]:
    """A running server for the block; stopped (by PID) afterwards, also on failure."""
    server = start_server(root, *args, env=env, scheme=scheme)
    try:
        yield server
    finally:
        stop_server(server)


def mint_token(
    root: Path, name: str, scope: str = "admin", contexts: Sequence[str] | None = None
) -> str:
    """A new token on the store at ``root`` (created if missing), as the CLI would make it."""
    store = app.open_store(root)
    try:
        token: str = store.tokens.create(
            name, scope=scope, contexts=list(contexts) if contexts is not None else None
        )
        return token
    finally:
        store.close()


def auth_headers(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


LOOPBACK_CLIENT = ("127.0.0.1", 50000)


def local_client(application: Any, token: str | None = None, **kwargs: Any) -> TestClient:
    """An in-process client the gate treats like a local caller (``Host: localhost``,
    client 127.0.0.1), sending ``token`` as bearer token if given. Use it as a context
    manager (``with local_client(...) as c:``) to run the app's lifespan."""
    from fastapi.testclient import TestClient

    kwargs.setdefault("base_url", "http://localhost")
    kwargs.setdefault("client", LOOPBACK_CLIENT)
    return TestClient(application, headers=auth_headers(token), **kwargs)


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {key}")


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` now (``VmRSS``, KiB)."""
    return _status_kib(pid, "VmRSS")


def hwm_kib(pid: int) -> int:
    """Peak resident memory of ``pid`` since it started (``VmHWM``, KiB)."""
    return _status_kib(pid, "VmHWM")


class RssSampler:
    """``with RssSampler(pid) as s: ...`` samples ``VmRSS`` every ``interval`` seconds;
    afterwards ``s.peak_kib`` / ``s.start_kib`` / ``s.samples``."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, AssertionError):
                self.samples.append(rss_kib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.samples.append(rss_kib(self.pid))
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def start_kib(self) -> int:
        return self.samples[0]

    @property
    def peak_kib(self) -> int:
        return max(self.samples)


__all__ = [
    "REPO",
    "RssSampler",
    "Server",
    "auth_headers",
    "child_env",
    "free_port",
    "hwm_kib",
    "local_client",
    "mint_token",
    "rss_kib",
    "serve",
    "start_server",
    "stop_server",
]
