"""Concurrency (SPEC 4 and 11): processes and threads writing one context, readers alongside.

Writers are real processes (tests/workers/conc_worker.py). The only internal file used is
the context's writer lock file, found through ``ctx.writer_lock.path``.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

import app

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "workers" / "conc_worker.py"
CTX = "conc"


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=str(REPO),
    )


def finish(proc: subprocess.Popen[str], timeout: float = 150) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert "database is locked" not in err and "database is locked" not in out
    assert proc.returncode == 0, err[-3000:]
    return out


def check_lines_parse(root: Path) -> int:
    """Every line of every log is one complete JSON object (no interleaved writes)."""
    lines = 0
    for log in (root / "contexts" / CTX).glob("*.jsonl"):
        data = log.read_bytes()
        assert data.endswith(b"\n")
        for line in data.splitlines():
            assert isinstance(orjson.loads(line), dict)
            lines += 1
    return lines


def check_batches(ctx: app.Context, collection: str, acked: dict[str, int]) -> None:
    per_tag: collections.Counter[str] = collections.Counter()
    ids: set[str] = set()
    for rec in ctx.iter(collection):
        assert rec["id"] not in ids, f"duplicate {rec['id']}"
        ids.add(rec["id"])
        per_tag[rec["batch_tag"]] += 1
    assert dict(per_tag) == acked
    assert ctx.count(collection) == sum(acked.values())


def test_four_processes_and_a_reader(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as s:
        s.context(CTX)
    stop = tmp_path / "stop"
    reader = spawn("reader", str(root), CTX, str(stop))
    writers = [spawn("writer", str(root), CTX, str(w), "100", "40", "30") for w in range(4)]
    acked: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for proc in writers:
        for line in finish(proc).splitlines():
            coll, tag, n = line.split()
            acked[coll][tag] = int(n)
    stop.touch()
    reader_out = finish(reader)
    assert "VIOLATION" not in reader_out, reader_out
    assert int(reader_out.split()[-1]) > 0
    assert len(acked["shared"]) == 4 * 50
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        assert ctx.collections() == sorted(["shared", "own0", "own1", "own2", "own3"])
        for coll, batches in acked.items():
            check_batches(ctx, coll, batches)
        report = ctx.verify()
        assert report.ok, report.problems
    total = sum(sum(b.values()) for b in acked.values())
    # entries + one commit line per batch + one header per log
    assert check_lines_parse(root) == total + sum(len(b) for b in acked.values()) + 5


def test_threads_share_one_context(ctx: app.Context) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for k in range(15):
                tag = f"t{t}-{k}"
                coll = "shared" if k % 2 else f"own{t}"
                recs = [{"id": f"{tag}-{j}", "batch_tag": tag} for j in range(20 + t)]
                assert ctx.append(coll, recs, batch_id=tag).count == 20 + t
                ctx.count("shared")
                ctx.query("shared", {"batch_tag": tag})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    shared = {f"t{t}-{k}": 20 + t for t in range(6) for k in range(15) if k % 2}
    check_batches(ctx, "shared", shared)
    for t in range(6):
        check_batches(ctx, f"own{t}", {f"t{t}-{k}": 20 + t for k in range(15) if not k % 2})
    assert ctx.verify().ok


def test_threads_with_separate_store_objects(store_root: Path) -> None:
    app.open_store(store_root).close()
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            with app.open_store(store_root) as s:
                c = s.context(CTX)
                for k in range(10):
                    tag = f"s{t}-{k}"
                    recs = [{"id": f"{tag}-{j}", "batch_tag": tag} for j in range(25)]
                    c.append("shared", recs, batch_id=tag)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    with app.open_store(store_root) as s:
        ctx = s.context(CTX)
        check_batches(ctx, "shared", {f"s{t}-{k}": 25 for t in range(4) for k in range(10)})
        assert ctx.verify().ok
    assert check_lines_parse(store_root) == 40 * 26 + 1


def test_lock_survives_unrelated_open_close_of_lock_file(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        ctx.append("locked", [{"id": "before"}])
        lock = ctx.writer_lock
        holding = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with lock.hold():
                holding.set()
                release.wait(60)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert holding.wait(30)
            # an unrelated open/close of the lock file in this process (fcntl locks would be
            # released by this close; flock locks are not)
            for _ in range(3):
                with open(lock.path, "rb") as fh:
                    fh.read()
                fd = os.open(lock.path, os.O_RDWR)
                os.close(fd)
            child = spawn("append1", str(root), CTX)
            time.sleep(1.0)
            # mutual exclusion still holds: the child is waiting for the lock
            assert child.poll() is None, child.communicate()
            assert ctx.count("locked") == 1
        finally:
            release.set()
            holder.join(30)
        assert finish(child).strip() == "appended"
        assert ctx.count("locked") == 2
        assert ctx.verify().ok


def test_open_while_other_process_writes_never_cuts_its_batch(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as s:
        s.context(CTX)
    # large batches (several MiB, written with several write calls) so that opens land
    # while a batch is half-written
    writer = spawn("writer", str(root), CTX, "9", "12", "1100", "4000")
    opens = 0
    seen_max = 0
    while writer.poll() is None:
        with app.open_store(root) as s:
            ctx = s.context(CTX)
            n = ctx.count("shared")
            assert n >= seen_max
            seen_max = n
        opens += 1
    out = finish(writer)
    assert opens > 0
    acked: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for line in out.splitlines():
        coll, tag, n = line.split()
        acked[coll][tag] = int(n)
    assert sum(len(b) for b in acked.values()) == 12
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        for coll, batches in acked.items():
            check_batches(ctx, coll, batches)
        report = ctx.verify()
        assert report.ok, report.problems


@pytest.mark.slow
def test_many_processes_many_batches(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as s:
        s.context(CTX)
    writers = [spawn("writer", str(root), CTX, str(w), "300", "30", "10") for w in range(6)]
    acked: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for proc in writers:
        for line in finish(proc, timeout=600).splitlines():
            coll, tag, n = line.split()
            acked[coll][tag] = int(n)
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        for coll, batches in acked.items():
            check_batches(ctx, coll, batches)
        assert ctx.verify().ok
