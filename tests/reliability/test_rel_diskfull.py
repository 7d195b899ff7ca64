"""Scenario 4: disk full for real. Writers run in forked children under RLIMIT_FSIZE (SIGXFSZ
ignored, so a write past the limit fails with EFBIG after a short write), for a sweep of
limits; and a collection log / export destination pointed at /dev/full (ENOSPC).

Pass: the operation raises a typed StorageError or succeeds; no file is corrupted (verify ok);
the previously committed files are byte-identical when it failed; the next operation works.
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import shutil
from pathlib import Path

import ops
import pytest
from harness import run_to_end, zygote
from relstats import scale, tally

import app

DATA_SUFFIXES = (".jsonl", ".npz", ".json", ".pth", ".joblib")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name.endswith(DATA_SUFFIXES) and not p.name.startswith(".")
    }


@pytest.mark.parametrize("op", ["append", "emb", "model", "import"])
def test_rlimit_fsize_sweep(tmp_path: Path, op: str) -> None:
    setup_steps = {"append": 2, "emb": 1, "model": 1}.get(op, 0)
    pristine = tmp_path / "pristine" / "store"
    ops.setup(op if op != "import" else "import", pristine, steps=setup_steps)
    if op == "import":
        with app.open_store(pristine) as s:
            s.export_context(ops.CTX, pristine.parent / "pristine.tar.gz")
    before = _files(pristine)
    biggest = max(p.stat().st_size for p in pristine.rglob("*") if p.is_file())
    # limits from "nothing fits" to "everything fits"; the op writes up to ~5 MB
    count = scale(13, 60)
    top = biggest + 12_000_000
    # (>= 16 KiB: the limit applies to the child's report file too)
    limits = sorted({16384 + top * i * i // ((count - 1) ** 2) for i in range(count)})

    outcomes = [0]

    def lane(i: int) -> list[str]:
        failures = []
        for j, limit in enumerate(limits[i::2]):
            trial = tmp_path / f"l{i}-{j}"
            shutil.copytree(pristine.parent, trial)
            root = trial / "store"
            text = run_to_end(
                zygote(i),
                trial / "out.txt",
                op=op,
                root=str(root),
                start=setup_steps,
                count=1,
                fsize=limit,
            )
            acks = ops.Acks(text)
            try:
                if not acks.done:
                    last = [ln for ln in text.splitlines() if ln.strip()][-1]
                    assert last.startswith("app.core.errors.StorageError"), text[-1500:]
                    assert any(w in last for w in ("too large", "full", "space", "I/O error")), last
                    outcomes[0] += 1
                    after = _files(root)
                    for name, data in before.items():
                        assert after.get(name) == data, f"{name} changed after a failed write"
                ops.check(op, root, acks, setup_steps, setup_steps)
            except Exception as exc:
                failures.append(f"{op} limit {limit}: {type(exc).__name__}: {exc}")
            shutil.rmtree(trial)
        return failures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        failures = [f for fs in pool.map(lane, range(2)) for f in fs]
    tally(f"4 disk full: RLIMIT_FSIZE sweep ({op})", len(limits), len(failures))
    assert not failures, "\n".join(failures[:5])
    assert 0 < outcomes[0] < len(limits), f"{outcomes[0]} of {len(limits)} writes failed"


def test_dev_full(tmp_path: Path) -> None:
    """A collection log and an export destination that are /dev/full."""
    trials = failures = 0
    root = tmp_path / "s"
    with app.open_store(root) as s:
        ctx = s.context(ops.CTX)
        ctx.append("items", ops.batch("A0", 0), batch_id="A0")
        committed = _files(root)
        log = root / "contexts" / ops.CTX / "full.jsonl"
        log.symlink_to("/dev/full")
        for attempt in range(3):
            trials += 1
            try:
                ctx.append("full", [{"id": f"x{attempt}"}])
            except app.StorageError as exc:
                if exc.errno not in (errno.ENOSPC, None) and not isinstance(
                    exc, app.IntegrityError
                ):
                    failures += 1
            else:
                failures += 1  # acknowledged a batch that went to /dev/full
            if _files(root) != committed or ctx.query("items") != ops.batch("A0", 0):
                failures += 1
        log.unlink()
        trials += 1
        dest = tmp_path / "x.tar.gz"
        dest.symlink_to("/dev/full")
        try:
            s.export_context(ops.CTX, dest)
            # an atomic export replaces the link with a complete archive: check it
            with app.open_store(tmp_path / "o") as o:
                o.import_context(dest, name="back")
                failures += ops.digest(o.context("back"))[0] != ops.digest(ctx)[0]
        except app.StorageError:
            pass
        ctx.append("items", ops.batch("A1", 1), batch_id="A1")  # the next write works
        failures += not s.verify().ok
    assert os.path.exists("/dev/full")
    tally("4 disk full: /dev/full", trials, failures)
    assert failures == 0
