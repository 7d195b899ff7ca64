"""Readers during compaction and rebuild (issue 9 item 16, SPEC 22): while one thread compacts
a collection again and again (and rebuilds the index now and then), reader threads sharing the
same Store and a reader in another process see the whole collection on every read: ``count``
is N, ``iter`` yields N, ``query`` finds its whole group, ``get`` finds live records, ``history``
(which reads the log being replaced) finds their versions. Never an empty or partial collection."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import child_env
from relstats import scale, tally

import app

WORKER = Path(__file__).resolve().parent.parent / "workers" / "swap_reader.py"
SCENARIO = "readers during compaction and rebuild"


def _records(n: int, version: int, ids: range | list[int]) -> list[dict[str, object]]:
    return [{"id": f"r{i}", "g": i % 10, "v": version, "pad": "x" * 80} for i in ids]


def _thread_reader(
    ctx: app.Context, n: int, stop: threading.Event, out: list[int], bad: list[str]
) -> None:
    rng = random.Random(threading.get_ident())
    ok = 0
    while not stop.is_set():
        checks: list[tuple[str, bool]] = []
        c = ctx.count("items")
        checks.append((f"count {c}", c == n))
        seen = sum(1 for _ in ctx.iter("items"))
        checks.append((f"iter {seen}", seen == n))
        g = rng.randrange(10)
        q = ctx.query("items", {"g": g})
        checks.append((f"query {len(q)}", len(q) == len(range(g, n, 10))))
        rid = f"r{rng.randrange(n)}"
        try:
            found = ctx.get("items", rid)["id"] == rid
        except app.NotFoundError:
            found = False
        checks.append((f"get {rid}", found))
        try:  # history reads the log (> 1 MiB: searched, with batch positions from the index)
            hist = ctx.history("items", rid)
            checks.append((f"history {rid}", bool(hist) and hist[-1].id == rid))
        except app.IntegrityError as exc:
            checks.append((f"history {rid}: {exc}", False))
        for what, good in checks:
            if good:
                ok += 1
            else:
                bad.append(what)
        stop.wait(0.05)  # leave the GIL to the compacting thread now and then
    out.append(ok)


def test_readers_see_whole_collection_during_compaction_and_rebuild(tmp_path: Path) -> None:
    root = tmp_path / "s"
    n = scale(10_000, 100_000)
    rounds = scale(20, 60)
    rng = random.Random(9)
    with app.open_store(root) as store:
        ctx = store.context("c")
        ctx.define_collection("items", indexes=["g"])
        for start in range(0, n, 10_000):
            ctx.append("items", _records(n, 0, range(start, min(n, start + 10_000))))
        stopfile, ready = tmp_path / "stop", tmp_path / "ready"
        proc = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(root),
                "c",
                "items",
                str(n),
                str(stopfile),
                str(ready),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        stop = threading.Event()
        oks: list[int] = []
        bad: list[str] = []
        readers = [
            threading.Thread(target=_thread_reader, args=(ctx, n, stop, oks, bad)) for _ in range(2)
        ]
        for t in readers:
            t.start()
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        compactions = rebuilds = 0
        try:
            for k in range(rounds):
                ids = rng.sample(range(n), n // 20)
                ctx.append("items", _records(n, k + 1, ids))  # superseded versions to drop
                ctx.compact("items")
                compactions += 1
                if k % 4 == 3:
                    ctx.rebuild_index()
                    rebuilds += 1
        finally:
            stop.set()
            stopfile.touch()
            for t in readers:
                t.join(timeout=120)
            out, err = proc.communicate(timeout=120)
        assert ctx.count("items") == n
        assert ctx.verify().ok
    lines = out.splitlines()
    summary = [line for line in lines if line.startswith("reads ")]
    assert proc.returncode == 0 and summary, (out, err[-2000:])
    p_ok, p_bad = (int(x) for x in summary[-1].split()[1:])
    failures = len(bad) + p_bad
    trials = sum(oks) + len(bad) + p_ok + p_bad
    tally(SCENARIO, trials, failures)
    shown = bad[:10] + [line for line in lines if line.startswith("BAD")]
    assert failures == 0, (
        f"{failures} wrong reads of {trials} over {compactions} compactions, "
        f"{rebuilds} rebuilds: {shown}"
    )
    assert compactions >= 20 and p_ok > 0 and sum(oks) > 0
