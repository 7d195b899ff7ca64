#!/usr/bin/env python3
"""Real PostgreSQL and S3 (moto) servers for the tests: start, stop, status, restart-pg, report.

Stdlib only. State lives in ``<repo>/.services/`` (gitignored; ``CTXSTORE_SERVICES_DIR``
overrides it): ``state.json`` (PIDs with their start times, ports, temp folder) and ``env``
(``export CTXSTORE_TEST_PG_URL=...`` etc., to source before pytest). Servers get private temp
folders and free loopback ports; ``stop`` signals exactly the PIDs this script started (checked
against their /proc start time, so a recycled PID is never hit) and removes the temp folders.

PostgreSQL: binaries from /usr/lib/postgresql/*/bin or ``pg_config --bindir`` (as root and
missing: ``apt-get update`` + ``apt-get install -y postgresql``). initdb refuses root, so as root
initdb and postgres run as the ``postgres`` user (subprocess ``user=``/``group=``: the PID we
record is the postmaster itself, no runuser/su wrapper in between), the temp folder chowned to
it. Trust auth on 127.0.0.1 only, unix sockets inside the temp folder, fsync on.
S3: ``moto_server`` from ``<repo>/.venv/bin`` (or ``CTXSTORE_MOTO_SERVER``, the running Python's
bin folder, PATH).

An environment that already has CTXSTORE_TEST_PG_URL / CTXSTORE_TEST_S3_ENDPOINT set keeps it:
that server is not started. Exit status of ``start``: 0 when every server needed is up, 1 else
(the env file then exports only those that answered).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("CTXSTORE_SERVICES_DIR") or REPO / ".services")
STATE = STATE_DIR / "state.json"
ENV_FILE = STATE_DIR / "env"
DATABASE = "ctxstore_test"
PG_USER = "postgres"
READY_TIMEOUT = 60.0
GRACE = 10.0
PG_ENV = "CTXSTORE_TEST_PG_URL"
S3_ENV = "CTXSTORE_TEST_S3_ENDPOINT"


def log(msg: str) -> None:
    print(f"services: {msg}", flush=True)


# ---------------------------------------------------------------- processes


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(entry: dict[str, Any] | None) -> bool:
    return bool(entry) and start_time(entry["pid"]) == entry["started"]  # type: ignore[index]


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (a server and the children it forked)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            found.append(int(stat.split("/")[2]))
    return found


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(start_time(p) is None for p in pids):
            return True
        time.sleep(0.05)
    return all(start_time(p) is None for p in pids)


def terminate(entry: dict[str, Any] | None, first: int = signal.SIGTERM) -> None:
    """Signal exactly this server (``first``, then SIGKILL after GRACE) and wait for its group.

    The group is the server's own session (started with start_new_session), i.e. the server
    and the children it forked (PostgreSQL backends): they exit once the server is gone.
    """
    if not entry:
        return
    pid = entry["pid"]
    if alive(entry):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, first)
        if not wait_gone([pid], GRACE):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone([pid], GRACE)
    leftovers = group_members(pid)
    if leftovers and not wait_gone(leftovers, GRACE):
        for child in group_members(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        wait_gone(leftovers, GRACE)


def spawn(argv: list[str], logfile: Path, *, as_pg: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if as_pg and os.geteuid() == 0:
        kwargs = {"user": PG_USER, "group": PG_USER, "extra_groups": []}
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
            **kwargs,
        )
    for _ in range(100):
        started = start_time(proc.pid)
        if started is not None:
            return {"pid": proc.pid, "started": started}
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    raise RuntimeError(f"{argv[0]} exited at once (see {logfile})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL does: TIME_WAIT ok
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# ---------------------------------------------------------------- PostgreSQL


def pg_bindir(install: bool) -> Path | None:
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(found) / "postgres").exists():
            return Path(found)
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "postgres").exists():
            return bindir
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        log("PostgreSQL not found: apt-get update && apt-get install -y postgresql")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "postgresql"], env=env, check=False)
        return pg_bindir(install=False)
    return None


def run_as_pg(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        kwargs.update(user=PG_USER, group=PG_USER, extra_groups=[])
    return subprocess.run(argv, capture_output=True, text=True, cwd="/", **kwargs)


def pg_ready(pg: dict[str, Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    isready = [str(Path(pg["bindir"]) / "pg_isready"), "-q", "-h", "127.0.0.1"]
    isready += ["-p", str(pg["port"]), "-U", PG_USER, "-d", "postgres"]
    while time.monotonic() < deadline:
        if not alive(pg["proc"]):
            return False
        if subprocess.run(isready, check=False).returncode == 0:
            return True
        time.sleep(0.1)
    return False


def pg_launch(pg: dict[str, Any]) -> None:
    argv = [str(Path(pg["bindir"]) / "postgres"), "-D", pg["data"], "-p", str(pg["port"])]
    argv += ["-h", "127.0.0.1", "-k", pg["sock"], "-c", "fsync=on"]
    pg["proc"] = spawn(argv, Path(pg["log"]), as_pg=True)
    if not pg_ready(pg, READY_TIMEOUT):
        terminate(pg["proc"], signal.SIGINT)
        tail = Path(pg["log"]).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"PostgreSQL did not answer on port {pg['port']}:\n{tail}")


def pg_start(tmp: Path) -> dict[str, Any]:
    bindir = pg_bindir(install=True)
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (install the postgresql package)")
    root = tmp / "pg"
    pg: dict[str, Any] = {"bindir": str(bindir), "data": str(root / "data")}
    pg["sock"] = str(root / "sock")
    pg["log"] = str(root / "postgres.log")
    (root / "sock").mkdir(parents=True)
    if os.geteuid() == 0:
        for path in (tmp, root, root / "sock"):
            shutil.chown(path, PG_USER, PG_USER)
    init = [str(bindir / "initdb"), "-D", pg["data"], "-U", PG_USER, "--auth=trust"]
    init += ["-E", "UTF8", "--locale=C", "--no-instructions"]
    done = run_as_pg(init)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")
    pg["port"] = free_port()
    pg_launch(pg)
    create = [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(pg["port"])]
    done = run_as_pg([*create, "-U", PG_USER, DATABASE])
    if done.returncode != 0:
        terminate(pg["proc"], signal.SIGINT)
        raise RuntimeError(f"createdb failed:\n{done.stdout}{done.stderr}")
    pg["url"] = f"postgresql://{PG_USER}@127.0.0.1:{pg['port']}/{DATABASE}"
    return pg


def pg_restart(pg: dict[str, Any]) -> None:
    """Bring the same cluster (same data folder, same port) back, e.g. after a kill -9."""
    terminate(pg["proc"], signal.SIGINT)  # no-op when already dead; waits for its backends
    # A killed postmaster may stay a zombie a while (whoever inherited it reaps it late), and
    # PostgreSQL takes a zombie's PID in postmaster.pid for a live server: that lock is stale.
    locks = [Path(pg["data"]) / "postmaster.pid", Path(pg["sock"]) / f".s.PGSQL.{pg['port']}.lock"]
    for lock in locks:
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(lock.read_text().split()[0]) == pg["proc"]["pid"] and not alive(pg["proc"]):
                lock.unlink()
    deadline = time.monotonic() + GRACE
    while not port_free(pg["port"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    pg_launch(pg)


# ---------------------------------------------------------------- S3 (moto)


def moto_binary() -> str | None:
    candidates = [os.environ.get("CTXSTORE_MOTO_SERVER", "")]
    candidates += [str(REPO / ".venv" / "bin" / "moto_server")]
    candidates += [str(Path(sys.executable).parent / "moto_server")]
    candidates += [shutil.which("moto_server") or ""]
    for found in candidates:
        if found and os.access(found, os.X_OK):
            return found
    return None


def s3_answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2) as reply:
            return int(reply.status) < 500
    except (urllib.error.URLError, OSError):
        return False


def s3_start(tmp: Path) -> dict[str, Any]:
    binary = moto_binary()
    if binary is None:
        raise RuntimeError(
            f"moto_server not found ({REPO / '.venv/bin'}, PATH): `make install` provides it"
        )
    port = free_port()
    s3: dict[str, Any] = {
        "port": port,
        "endpoint": f"http://127.0.0.1:{port}",
        "log": str(tmp / "moto.log"),
    }
    s3["proc"] = spawn([binary, "-H", "127.0.0.1", "-p", str(port)], Path(s3["log"]), as_pg=False)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and alive(s3["proc"]):
        if s3_answers(s3["endpoint"]):
            return s3
        time.sleep(0.1)
    terminate(s3["proc"])
    tail = Path(s3["log"]).read_text(errors="replace")[-2000:]
    raise RuntimeError(f"moto_server did not answer on port {port}:\n{tail}")


# ---------------------------------------------------------------- state


def load() -> dict[str, Any]:
    try:
        return dict(json.loads(STATE.read_text()))
    except (OSError, ValueError):
        return {}


def save(state: dict[str, Any]) -> None:
    STATE_DIR.mkdir(exist_ok=True)
    STATE.write_text(json.dumps(state, indent=1))
    lines = []
    if state.get("pg"):
        lines += [f"export {PG_ENV}={state['pg']['url']}"]
        lines += [f"export CTXSTORE_TEST_PG_PID={state['pg']['proc']['pid']}"]
    if state.get("s3"):
        lines += [f"export {S3_ENV}={state['s3']['endpoint']}"]
        lines += [f"export CTXSTORE_TEST_S3_PID={state['s3']['proc']['pid']}"]
    if lines:
        lines += [f"export CTXSTORE_SERVICES_DIR={STATE_DIR}"]
    ENV_FILE.write_text("".join(line + "\n" for line in lines))


def describe(state: dict[str, Any]) -> list[str]:
    out = []
    if state.get("pg"):
        pg = state["pg"]
        up = "running" if alive(pg["proc"]) else "DEAD"
        out.append(f"PostgreSQL {up}: pid {pg['proc']['pid']} {pg['url']} (data {pg['data']})")
    if state.get("s3"):
        s3 = state["s3"]
        up = "running" if alive(s3["proc"]) else "DEAD"
        out.append(f"S3 (moto) {up}: pid {s3['proc']['pid']} {s3['endpoint']}")
    return out


# ---------------------------------------------------------------- commands


def cmd_start() -> int:
    t0 = time.monotonic()
    state = load()
    if state.get("tmp") and not Path(state["tmp"]).is_dir():
        state = {}
    if not state.get("tmp"):
        state = {"tmp": tempfile.mkdtemp(prefix="ctxstore-services-")}
    tmp = Path(state["tmp"])
    ok = True
    if os.environ.get(PG_ENV) and not state.get("pg"):
        log(f"PostgreSQL: using {PG_ENV} from the environment")
    elif state.get("pg") and alive(state["pg"]["proc"]):
        log("PostgreSQL already running: reused")
    elif state.get("pg"):
        try:
            pg_restart(state["pg"])
        except RuntimeError as exc:
            log(f"PostgreSQL NOT started: {exc}")
            state.pop("pg")
            ok = False
    else:
        try:
            state["pg"] = pg_start(tmp)
        except (RuntimeError, OSError, KeyError) as exc:
            log(f"PostgreSQL NOT started: {exc}")
            ok = False
    if os.environ.get(S3_ENV) and not state.get("s3"):
        log(f"S3: using {S3_ENV} from the environment")
    elif state.get("s3") and alive(state["s3"]["proc"]):
        log("S3 (moto) already running: reused")
    else:
        try:
            state["s3"] = s3_start(tmp)
        except (RuntimeError, OSError, KeyError) as exc:
            log(f"S3 (moto) NOT started: {exc}")
            state.pop("s3", None)
            ok = False
    save(state)
    for line in describe(state):
        log(line)
    log(f"env written to {ENV_FILE} ({time.monotonic() - t0:.1f} s)")
    return 0 if ok else 1


def cmd_stop() -> int:
    t0 = time.monotonic()
    state = load()
    if state.get("pg"):
        terminate(state["pg"]["proc"], signal.SIGINT)  # SIGINT = PostgreSQL's fast shutdown
    if state.get("s3"):
        terminate(state["s3"]["proc"])
    if state.get("tmp"):
        shutil.rmtree(state["tmp"], ignore_errors=True)
    for path in (STATE, ENV_FILE):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        STATE_DIR.rmdir()
    if state:
        log(f"stopped ({time.monotonic() - t0:.1f} s)")
    return 0


def cmd_status() -> int:
    lines = describe(load())
    for line in lines or ["nothing started"]:
        log(line)
    return 0 if lines else 1


def cmd_restart_pg() -> int:
    state = load()
    if not state.get("pg"):
        log("no PostgreSQL started by this script")
        return 1
    pg_restart(state["pg"])
    save(state)
    log(f"PostgreSQL restarted: pid {state['pg']['proc']['pid']}")
    return 0


MATRIX_WHAT = (
    "the pg-files and pg-s3 runs of the record, filter, embedding, model, workflow and "
    "transfer tests in tests/backend_matrix.py MATRIX_MODULES"
)


def cmd_report() -> int:
    """Last lines of `make test`: which server-backed matrices did not run, and how to."""
    pg, s3 = os.environ.get(PG_ENV), os.environ.get(S3_ENV)
    if not pg:
        print(
            f"NOT RUN: the PostgreSQL test matrix ({MATRIX_WHAT}) and the PostgreSQL crash/fault "
            f"table (tests/reliability/test_rel_pg.py): no {PG_ENV}. PostgreSQL could not be "
            "found or started here (as root `make services` installs it with apt-get). Run "
            f"them against a server whose user may CREATE DATABASE: `{PG_ENV}="
            f"postgresql://USER@HOST:PORT/DB {S3_ENV}=http://HOST:PORT make test`."
        )
    if not s3:
        print(
            "NOT RUN: the S3 test matrix (the pg-s3 runs, and the S3 rows of the crash/fault "
            f"table): no {S3_ENV}. moto_server comes with `make install`; or run "
            f"`{S3_ENV}=http://HOST:PORT make test` against any S3 endpoint."
        )
    if pg and s3:
        print("services: the PostgreSQL (pg-files) and S3 (pg-s3) test matrices ran.")
    return 0


COMMANDS = {
    "start": cmd_start,
    "stop": cmd_stop,
    "status": cmd_status,
    "restart-pg": cmd_restart_pg,
    "report": cmd_report,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        print(f"usage: {argv[0]} {{{','.join(COMMANDS)}}}", file=sys.stderr)
        return 2
    return COMMANDS[argv[1]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
