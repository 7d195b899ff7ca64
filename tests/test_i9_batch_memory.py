"""Memory per batch is bounded (issue 9 item 20): no ~4.5 KB per record any more, and batches
beyond the documented limits are refused with ``InvalidInput`` naming the limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import app
from app.core import codec

PEAK = """
import json, resource, sys, tempfile
from pathlib import Path
import app
n = int(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp, app.open_store(Path(tmp) / "s") as store:
    ctx = store.context("m", create=True)
    ctx.append("x", [{"id": "warm", "n": -1}], batch_id="warm")
    records = [{"n": i} for i in range(n)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    receipt = ctx.append("x", records, batch_id=sys.argv[2])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert receipt.count == n and ctx.count("x") == n + 1
    print(json.dumps({"delta_kib": peak - base, "log": (ctx.path / "x.jsonl").stat().st_size}))
"""


def _peak(n: int) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": str(Path(app.__file__).parent.parent)}
    res = subprocess.run(
        [sys.executable, "-c", PEAK, str(n), "big"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    out: dict[str, int] = json.loads(res.stdout)
    return out


@pytest.mark.parametrize("n", [200_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_peak_memory_of_one_large_batch_is_bounded(n: int) -> None:
    """Peak RSS growth while appending ``n`` tiny records (~60 bytes in the log each): v0.1
    took ~4,650 bytes a record (orjson's 4 KiB buffers held per record); now ~300."""
    found = _peak(n)
    per_record = found["delta_kib"] * 1024 / n
    assert per_record < 1_000, found
    assert found["delta_kib"] * 1024 < 25 * found["log"], found  # a small multiple of the data


def test_oversized_batches_are_refused_naming_the_limit(
    ctx: app.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx.append("notes", [{"id": "keep"}])
    monkeypatch.setattr(codec, "MAX_BATCH_RECORDS", 100)
    monkeypatch.setattr(codec, "PREPARE_STEP", 16)
    with pytest.raises(app.InvalidInput, match=r"records: a batch holds at most 100 records"):
        ctx.append("notes", ({"n": i} for i in range(101)))
    assert ctx.append("notes", [{"n": i} for i in range(100)]).count == 100
    monkeypatch.setattr(codec, "MAX_BATCH_BYTES", 4 << 20)
    with pytest.raises(app.InvalidInput, match=r"4 MiB of encoded records.*split it"):
        ctx.append("notes", [{"text": "x" * 100_000} for _ in range(50)])
    assert ctx.count("notes") == 101
