"""Issue 9, items 18 and 19: a process holds a bounded number of files whatever the number of
threads and contexts it has used, and running out of file descriptors is a ``StorageError``
(EMFILE), never damage. Open files are counted in /proc/<pid>/fd, for real: 1,000 short-lived
threads, 500 contexts under RLIMIT_NOFILE=256, a ``ctxstore serve`` process under bursts of
requests, and a process whose descriptors really run out.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import app

REPO = Path(__file__).resolve().parent.parent


def _fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CTXSTORE_ROOT", None)
    return env


def _child(code: str, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- item 18: threads ------------------------------------------------------------------------


def test_thousand_short_lived_threads_keep_files_bounded(tmp_path: Path) -> None:
    """Each of 1,000 threads (20 at a time) appends, reads back, counts, streams, and reads
    and writes the workflow tracker; the open files do not grow with the threads."""
    with app.open_store(tmp_path / "s") as store:
        ctx = store.context("c")
        ctx.append("items", [{"id": "seed"}])
        store.workflows.metrics()
        before = _fds()
        failures: list[BaseException] = []

        def work(i: int) -> None:
            try:
                ctx.append("items", [{"id": f"t{i}", "n": i}])
                assert ctx.get("items", f"t{i}")["n"] == i
                assert ctx.count("items") >= 2
                assert [r["id"] for r in ctx.iter("items", {"n": i})] == [f"t{i}"]
                store.workflows.metrics()
                if i % 25 == 0:
                    store.workflows.submit(
                        "append", context="c", items=[{"id": f"w{i}"}], params={"collection": "w"}
                    )
            except BaseException as exc:
                failures.append(exc)

        after_waves = []
        for wave in range(50):
            threads = [threading.Thread(target=work, args=(wave * 20 + j,)) for j in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after_waves.append(_fds())
        print(f"open files: {before} before, after each wave {after_waves}")
        assert not failures, failures[:3]
        assert ctx.count("items") == 1001
        assert len(store.workflows.list(limit=1000)) == 40
        # a thread's connections close when it ends: nothing accumulates across waves
        # a thread's connections close when it ends. (SQLite keeps a closed connection's file
        # open while another connection of the process holds a lock on it, and reuses it for
        # the next open: at most about one per concurrent thread.) No growth across waves:
        assert max(after_waves) <= before + 40, (before, after_waves)
        assert max(after_waves[25:]) <= max(after_waves[:25]) + 5, (before, after_waves)
        assert ctx._records.index.open_connections <= 2


# -- item 19: contexts -----------------------------------------------------------------------

MANY_CONTEXTS_CHILD = r"""
import json, os, resource, sys
import app
root = sys.argv[1]
def fds(): return len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
store = app.open_store(root)
out = {"after_open": fds()}
peak = 0
names = store.contexts()
for i, name in enumerate(names):
    ctx = store.context(name, create=False)
    ctx.append("items", [{"id": f"r{i}"}])
    assert ctx.count("items") == 2, name
    peak = max(peak, fds())
out["contexts"] = len(names)
out["peak"] = peak
report = store.verify()
out["verify"] = [report.ok, report.problems[:3]]
out["stats_records"] = store.stats()["records"]
out["after_all"] = fds()
store.close()
out["after_close"] = fds()
print(json.dumps(out))
"""


def _many_contexts(root: Path, n: int) -> None:
    """``n`` contexts ``c000``... with one record each. One is made through the API; the others
    are copies of its log and description (no index: each is rebuilt on first use), because
    creating each through the API costs several fsyncs."""
    with app.open_store(root) as store:
        store.context("c000").append("items", [{"id": "seed"}])
        store.workflows.metrics()
    contexts = root / "contexts"
    log = (contexts / "c000" / "items.jsonl").read_bytes()
    description = json.loads((contexts / "c000" / "context.json").read_bytes())
    for i in range(1, n):
        name = f"c{i:03d}"
        (contexts / name).mkdir()
        (contexts / name / "items.jsonl").write_bytes(log)
        description["context"] = name
        (contexts / name / "context.json").write_text(json.dumps(description))


def test_500_contexts_under_a_256_file_limit(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _many_contexts(root, 500)
    out = _child(MANY_CONTEXTS_CHILD, str(root))
    print(f"500 contexts: {out}")
    assert out["contexts"] == 500
    assert out["verify"] == [True, []], out
    assert out["stats_records"] == 1000
    assert out["after_open"] < 16, out  # open_store opens no context
    assert out["peak"] < 160, out  # at most MAX_OPEN_CONTEXTS contexts hold files
    assert out["after_close"] <= out["after_open"] + 1, out


RUN_OUT_CHILD = r"""
import json, os, resource, sys
import app
import app.managers.embeddings, app.managers.models, app.managers.stats, app.managers.workflows
root = sys.argv[1]
out = {}
store = app.open_store(root)
for i in range(3):
    store.context(f"c{i:03d}").count("items")
assert store.context("c001").release()  # recovered, its index closed: reopens on next use

def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except app.StorageError as exc:
        out[name] = [type(exc).__name__, exc.errno, str(exc)[:200]]
    except OSError as exc:
        out[name] = ["bare " + type(exc).__name__, exc.errno, str(exc)[:200]]

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
used = [int(fd) for fd in os.listdir("/proc/self/fd")]
resource.setrlimit(resource.RLIMIT_NOFILE, (max(used) + 1, hard))
holes = []
try:
    while True:  # fill every free number below the limit: no descriptor is left
        holes.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
attempt("count", lambda: store.context("c010", create=False).count("items"))
attempt("reopen", lambda: store.context("c001", create=False).count("items"))
attempt("append", lambda: store.context("c011", create=False).append("items", [{"id": "x"}]))
attempt("tracker", lambda: store.workflows.metrics())
attempt("verify", lambda: store.verify())
attempt("contexts", lambda: store.contexts())
attempt("ctx_verify", lambda: store.context("c000").verify())
for fd in holes:
    os.close(fd)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
out["after"] = [store.context("c010", create=False).count("items"),
                "by_status" in store.workflows.metrics()]
report = store.verify()
out["verify_after"] = [report.ok, report.problems[:3]]
print(json.dumps(out))
"""


def test_running_out_of_descriptors_is_emfile_not_damage(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _many_contexts(root, 12)
    out = _child(RUN_OUT_CHILD, str(root))
    for name in ("count", "reopen", "append", "tracker", "verify", "contexts", "ctx_verify"):
        result = out[name]
        assert result != "ok", f"{name} worked without a free descriptor: {out}"
        kind, err, text = result
        assert (kind, err) == ("StorageError", errno.EMFILE), f"{name}: {result}"
        assert "damaged" not in text, f"{name}: {result}"
    assert out["after"] == [1, True], out
    assert out["verify_after"] == [True, []], out


# -- item 18: a service under bursts ------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _burst(base: str, contexts: list[str], requests: int) -> list[str]:
    problems: list[str] = []

    def one(i: int) -> None:
        name = contexts[i % len(contexts)]
        url = f"/contexts/{name}/collections/items"
        with httpx.Client(base_url=base, timeout=60) as http:
            r = http.post(f"{url}/records", json={"records": [{"id": f"r{i}-{time.time_ns()}"}]})
            if r.status_code != 201:
                problems.append(f"append {r.status_code} {r.text[:200]}")
            r = http.get(f"{url}/records", params={"limit": 5})
            if r.status_code != 200:
                problems.append(f"query {r.status_code} {r.text[:200]}")
            r = http.get(f"{url}/count")
            if r.status_code != 200:
                problems.append(f"count {r.status_code} {r.text[:200]}")

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(requests)))
    return problems


@contextlib.contextmanager
def _service(root: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``ctxstore serve`` on a free port, up and answering; stopped by its PID afterwards."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "--root",
            str(root),
            "serve",
            "--port",
            str(port),
            "--no-auth",
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)
        yield proc, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("bursts", [8, pytest.param(24, marks=pytest.mark.slow)])
def test_service_under_repeated_bursts_keeps_files_bounded(tmp_path: Path, bursts: int) -> None:
    """``ctxstore serve`` (uvicorn, worker threads that come and go): bursts of concurrent
    requests, each over 10 contexts not used before; open files stop growing."""
    root = tmp_path / "s"
    _many_contexts(root, 10 * bursts)
    with _service(root) as (proc, base):
        started = _fds(proc.pid)
        counts = []
        for k in range(bursts):
            names = [f"c{i:03d}" for i in range(10 * k, 10 * k + 10)]
            problems = _burst(base, names, 60)
            assert not problems, problems[:3]
            counts.append(_fds(proc.pid))
    print(f"open files of the service: {started} at start, after each burst {counts}")
    # without bounds each burst adds its 10 contexts' files for every thread (+200 a burst);
    # with them: at most 32 contexts (one shared-memory file each) and 64 idle connections
    # (2 files each) stay open, plus what requests in flight hold
    assert max(counts) <= started + 250, (started, counts)
    assert counts[-1] <= max(counts[: bursts // 2]) + 60, (started, counts)


@pytest.mark.slow
def test_service_bursts_with_idle_gaps(tmp_path: Path) -> None:
    """Worker threads that expire between bursts (anyio drops idle threads after 10 s)."""
    root = tmp_path / "s"
    _many_contexts(root, 4)
    with _service(root) as (proc, base):
        counts = []
        for _ in range(4):
            assert not _burst(base, ["c000", "c001", "c002", "c003"], 80)
            time.sleep(12)
            counts.append(_fds(proc.pid))
    assert counts[-1] <= counts[0] + 10, counts


def test_closing_idle_connections_never_breaks_a_running_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caps forced tiny (4 open contexts, 2 idle connections): 8 threads cycling over 24
    contexts with writes, reads and half-consumed streams get every answer right while other
    threads' operations keep closing connections under them."""
    import app.formats.sqlitefile as sqlitefile

    monkeypatch.setattr(sqlitefile, "MAX_IDLE_CONNECTIONS", 2)
    closed = [0]
    real_drop = sqlitefile._Slot.drop

    def counting(slot: Any) -> None:
        closed[0] += slot.conn is not None
        real_drop(slot)

    monkeypatch.setattr(sqlitefile._Slot, "drop", counting)
    with app.open_store(tmp_path / "s") as store:
        store.max_open_contexts = 4
        names = [f"c{i:02d}" for i in range(24)]
        for name in names:
            store.context(name).append("items", [{"id": f"{name}-{k}", "k": k} for k in range(50)])
        failures: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for step in range(60):
                    name = names[(t * 7 + step) % len(names)]
                    ctx = store.context(name)
                    stream = ctx.iter("items", order_by="k")
                    first = next(stream)  # a cursor open while others close connections
                    assert first["k"] == 0
                    if step % 5 == 0:
                        ctx.append("items", [{"id": f"{name}-t{t}-{step}", "k": 1000}])
                    assert ctx.get("items", f"{name}-7")["k"] == 7
                    assert ctx.count("items", {"k": {"$lt": 50}}) == 50
                    assert len(ctx.existing("items", [f"{name}-1", "nope"])) == 1
                    assert sum(1 for _ in stream) >= 49
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures[:3]
        assert closed[0] > 8 * 60, closed  # connections really were closed under the threads
        assert sum(store.context(n).count("items") for n in names) == 24 * 50 + 8 * 12
        assert store.verify().ok
