"""Scenario "index/log disagreement" (issue 9, SPEC 22: the logs are the truth).

For random single-row damages made directly in the SQLite index (a row deleted, a row added, a
row's data altered with its CRC recomputed, a row moved, a batch row deleted), each of
compact, export, merge import, rebuild and verify either repairs from the log or refuses
(``IntegrityError`` / a problem reported); afterwards the log still holds every committed
version (counted by replaying the log's lines) and reads agree with it.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from index_damage import KINDS, damage, index_path, log_current
from relstats import scale, tally

import app

SCENARIO = "index/log disagreement"
OPERATIONS = ("compact", "export", "merge-import", "rebuild", "verify")


def _base(root: Path, archive: Path) -> None:
    """Context ``c`` (collection ``t``: versions, upserts, tombstones over several batches)
    and an archive of another context sharing some ids, for merge imports."""
    rng = random.Random(7)
    with app.open_store(root) as s:
        ctx = s.context("c")
        for b in range(8):
            ids = rng.sample(range(120), 40)
            ctx.append("t", [{"id": f"r{i}", "v": b, "g": i % 5} for i in ids])
        ctx.delete("t", [f"r{i}" for i in rng.sample(range(120), 10)])
        src = s.context("src")
        src.append("t", [{"id": f"r{i}", "v": "imported"} for i in range(100, 140)])
        s.export_context("src", archive)
        s.drop_context("src")


def _puts(log: Path) -> int:
    return sum(1 for line in log.read_bytes().splitlines() if line.startswith(b'{"put":'))


def _reads_agree(ctx: app.Context, current: dict[str, dict[str, object]]) -> bool:
    if ctx.count("t") != len(current) or sum(1 for _ in ctx.iter("t")) != len(current):
        return False
    return all(ctx.get("t", rid) == rec for rid, rec in current.items())


def _trial(work: Path, archive: Path, operation: str, kind: str, rng: random.Random) -> str | None:
    """One damage + one operation; None if it repaired from the log or refused, else what
    went wrong. Merge imports alternate between on_conflict="merge" and "skip"."""
    mode = rng.choice(["merge", "skip"])
    log = work / "contexts" / "c" / "t.jsonl"
    before = log_current(log)
    puts_before = _puts(log)
    damage(index_path(work, "c"), "t", kind, rng.choice(sorted(before)))
    with app.open_store(work) as s:
        ctx = s.context("c")
        try:
            if operation == "verify":
                return None if not ctx.verify().ok else "verify said ok"
            if operation == "compact":
                ctx.compact("t")
            elif operation == "rebuild":
                ctx.rebuild_index()
            elif operation == "export":
                out = work.parent / f"{work.name}.tar.gz"
                s.export_context("c", out)
                s.import_context(out, name="copy")
                if not _reads_agree(s.context("copy"), before):
                    return "export: the archive does not hold the log's records"
            elif operation == "merge-import":
                s.import_context(archive, name="c", on_conflict=mode)
        except app.IntegrityError:
            return None  # refused
        after = log_current(log)
        expected = dict(before)
        if operation == "merge-import":  # the archive's versions were committed later
            for i in range(100, 140):
                if mode == "merge":
                    expected[f"r{i}"] = {"id": f"r{i}", "v": "imported"}
                else:
                    expected.setdefault(f"r{i}", {"id": f"r{i}", "v": "imported"})
        if after != expected:
            return f"{operation}: the log lost or changed committed records"
        if operation != "compact" and _puts(log) < puts_before:
            return f"{operation}: the log lost committed versions"
        if operation in ("compact", "rebuild", "merge-import"):
            if not _reads_agree(ctx, after):
                return f"{operation}: reads disagree with the log after the repair"
            if not ctx.verify().ok:
                return f"{operation}: verify not ok after the repair"
    return None


@pytest.mark.parametrize("operation", OPERATIONS)
def test_index_log_disagreement(tmp_path: Path, operation: str) -> None:
    base, archive = tmp_path / "base", tmp_path / "src.tar.gz"
    _base(base, archive)
    trials = scale(10, 100)
    rng = random.Random(f"{operation}-9")
    failures: list[str] = []
    for k in range(trials):
        work = tmp_path / f"w{k}"
        shutil.copytree(base, work)
        kind = KINDS[k % len(KINDS)]
        problem = _trial(work, archive, operation, kind, rng)
        if problem is not None:
            failures.append(f"{kind}: {problem}")
        shutil.rmtree(work)
    tally(SCENARIO, trials, len(failures))
    assert not failures, failures[:10]
