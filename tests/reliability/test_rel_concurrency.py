"""Scenario 6: 4 writer processes x N multi-line batches with a reader process; many threads
through ctx.buffer; the writer lock survives an unrelated open/close of the lock file."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from harness import child_env
from relstats import scale, tally

import app

WORKER = Path(__file__).resolve().parent.parent / "workers" / "conc_worker.py"


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def test_four_writer_processes_with_reader(tmp_path: Path) -> None:
    root = tmp_path / "s"
    batches = scale(300, 1000)
    app.open_store(root).context("c").define_collection("shared")
    stop = tmp_path / "stop"
    reader = _spawn("reader", str(root), "c", str(stop))
    writers = [_spawn("writer", str(root), "c", str(w), str(batches), "3", "20") for w in range(4)]
    outs = []
    for p in writers:
        out, err = p.communicate(timeout=600)
        outs.append((p.returncode, out, err))
    stop.touch()
    rout, rerr = reader.communicate(timeout=120)
    failures = 0
    acked: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for code, out, err in outs:
        failures += code != 0 or "locked" in err
        for line in out.splitlines():
            coll, tag, n = line.split()
            acked[coll][tag] = int(n)
    failures += reader.returncode != 0 or "VIOLATION" in rout or "locked" in rerr
    with app.open_store(root) as s:
        ctx = s.context("c")
        for coll, tags in acked.items():
            per_tag = collections.Counter()
            ids = set()
            for rec in ctx.iter(coll):
                per_tag[rec["batch_tag"]] += 1
                failures += rec["id"] in ids  # duplicates
                ids.add(rec["id"])
            failures += per_tag != collections.Counter(tags)  # exact counts
            failures += ctx.count(coll) != sum(tags.values())
            # no interleaved lines: every line parses, a batch's lines are contiguous
            current, seen = None, set()
            for raw in (root / "contexts" / "c" / f"{coll}.jsonl").read_bytes().splitlines()[1:]:
                entry = json.loads(raw)
                if "commit" in entry:
                    current = None
                    continue
                tag = entry["put"]["batch_tag"]
                if current is None:
                    failures += tag in seen
                    current = tag
                    seen.add(tag)
                failures += tag != current
        failures += not ctx.verify().ok
    total = sum(len(t) for t in acked.values())
    tally("6 concurrency: 4 processes x batches + reader", total, failures)
    assert total == 4 * batches
    assert failures == 0, (outs, rout[-500:], rerr[-500:])


def test_many_threads_through_buffer(tmp_path: Path) -> None:
    threads, per = 16, scale(500, 3000)
    with app.open_store(tmp_path / "s") as s:
        ctx = s.context("c")
        buf = ctx.buffer("buf", flush_every=97, flush_interval=0.01, max_pending=1000)
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(per):
                    while not buf.record({"id": f"t{t}-{i}", "t": t, "i": i}):
                        pass  # backpressure: try again
            except BaseException as exc:
                errors.append(exc)

        ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in ts:
            th.start()
        for th in ts:
            th.join(timeout=300)
        buf.close()
        ids = [r["id"] for r in ctx.iter("buf")]
        failures = len(errors) + (len(ids) != len(set(ids))) + (len(ids) != threads * per)
        failures += not ctx.verify().ok
    tally("6 concurrency: threads through ctx.buffer", threads * per, failures)
    assert failures == 0, errors[:3]


PROBE = """
import sys
from filelock import FileLock, Timeout
try:
    FileLock(sys.argv[1]).acquire(timeout=0.3)
except Timeout:
    print("held")
else:
    print("FREE")
"""


def test_lock_survives_unrelated_open_close(tmp_path: Path) -> None:
    trials = failures = 0
    with app.open_store(tmp_path / "s") as s:
        ctx = s.context("c")
        ctx.append("x", [{"id": "1"}])
        lock_file = Path(ctx.writer_lock.path)
        with ctx.writer_lock.hold():
            for how in ("open-close", "os.open-close", "read", "append-mode"):
                trials += 1
                if how == "open-close":
                    open(lock_file).close()
                elif how == "os.open-close":
                    os.close(os.open(lock_file, os.O_RDONLY))
                elif how == "read":
                    lock_file.read_bytes()
                else:
                    with open(lock_file, "a"):
                        pass
                res = subprocess.run(
                    [sys.executable, "-c", PROBE, str(lock_file)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    env=child_env(),
                )
                failures += res.stdout.strip() != "held"
        trials += 1
        res = subprocess.run(
            [sys.executable, "-c", PROBE, str(lock_file)],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
        )
        failures += res.stdout.strip() != "FREE"  # and it is released afterwards
    tally("6 concurrency: lock survives unrelated open/close", trials, failures)
    assert failures == 0
