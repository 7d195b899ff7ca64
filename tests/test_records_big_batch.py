"""Big batches with flat memory (issue 11): one ``append`` of a generator far beyond the old
in-memory caps (1,000,000 records / 512 MiB) is ONE all-or-nothing batch whose memory stays
flat: past ``codec.SPOOL_AT`` the prepared batch is spooled to nameless files in a locked
``.spool-*`` staging folder, and the log write and the index update stream from it.

The memory figure comes from a subprocess (``/proc/self/status`` ``VmHWM``, reset through
``/proc/self/clear_refs`` just before the append), so nothing else of the test run is counted.
The other tests lower ``SPOOL_AT`` to exercise the spooled path with small batches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import app
from app.backends.local.staging import PREFIXES, staging_folder
from app.core import codec
from app.core.layout import SPOOL_PURPOSE, staging_prefix
from app.core.spool import READ_CHUNK, SpooledStrings, SpoolFile
from app.formats import batchlog

SPOOL = staging_prefix(SPOOL_PURPOSE)
ENV = {**os.environ, "PYTHONPATH": str(Path(app.__file__).parents[1])}

BIG = r"""
import json, sys
from pathlib import Path
import app
from app.core.codec import derived_id

def status():
    with open("/proc/self/status") as fh:
        return {l.split(":")[0]: int(l.split()[1]) for l in fh if l.startswith(("VmHWM", "VmRSS"))}

root, n, pad = Path(sys.argv[1]), int(sys.argv[2]), "p" * int(sys.argv[3])
with app.open_store(root) as store:
    ctx = store.context("m", create=True)
    ctx.append("x", [{"id": "warm", "n": -1}], batch_id="warm")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := VmRSS now
    base = status()["VmRSS"]
    receipt = ctx.append("x", ({"n": i, "pad": pad} for i in range(n)), batch_id="big")
    peak = status()["VmHWM"]
    spools = [p.name for p in (root / "contexts").iterdir() if p.name.startswith(".spool-")]
    print(json.dumps({
        "count": receipt.count, "duplicate": receipt.duplicate, "total": ctx.count("x"),
        "base_kib": base, "peak_kib": peak, "log": (ctx.path / "x.jsonl").stat().st_size,
        "spools": spools, "last": ctx.get("x", derived_id("big", n - 1))["n"],
    }))
"""


@pytest.mark.parametrize(
    ("n", "pad", "log_mib"),
    [
        (1_100_000, 230, 290),  # more records than the old 1,000,000 cap
        (1_500, 100_000, 140),  # large records: steps and INSERTs shrink to a few MiB
    ],
)
def test_a_batch_beyond_the_old_caps_is_one_batch_with_flat_memory(
    tmp_path: Path, n: int, pad: int, log_mib: int
) -> None:
    """A generator of ~300 MB (1.1 million small records, beyond the old caps) or ~150 MB of
    100 KB records: one receipt counting every record, and peak memory growth well under
    150 MB (the old code held it all: ~1.5 GB for the first)."""
    res = subprocess.run(
        [sys.executable, "-c", BIG, str(tmp_path / "s"), str(n), str(pad)],
        capture_output=True,
        text=True,
        timeout=900,
        env=ENV,
    )
    assert res.returncode == 0, res.stderr
    found: dict[str, Any] = json.loads(res.stdout)
    growth_mib = (found["peak_kib"] - found["base_kib"]) / 1024
    print(f"\n{n:,} records, log {found['log'] / 2**20:.0f} MiB, peak growth {growth_mib:.0f} MiB")
    (tmp_path / "rss.json").write_text(json.dumps({**found, "growth_mib": growth_mib}))
    assert found["count"] == n and not found["duplicate"]
    assert found["total"] == n + 1
    assert found["last"] == n - 1
    assert found["log"] > log_mib << 20
    assert growth_mib < 150, found
    assert found["spools"] == []


# -- the spooled path, with a small threshold ------------------------------------------------


@pytest.fixture
def spooling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spool every batch past ~64 KiB and write the log in 64 KiB pieces."""
    monkeypatch.setattr(codec, "SPOOL_AT", 64 << 10)
    monkeypatch.setattr(codec, "PREPARE_STEP", 256)
    monkeypatch.setattr(batchlog, "WRITE_CHUNK", 64 << 10)


def _records(n: int, *, raise_at: int | None = None, start: int = 0) -> Iterator[dict[str, Any]]:
    for i in range(start, start + n):
        if i == raise_at:
            raise RuntimeError(f"producer failed at {i}")
        yield {"n": i, "text": f"record {i} " + "x" * (i % 300)}


def _spools(ctx: app.Context) -> list[str]:
    return sorted(p.name for p in ctx.path.parent.iterdir() if p.name.startswith(SPOOL))


@pytest.mark.usefixtures("spooling")
def test_spooled_batch_commits_every_record_and_counts_them(ctx: app.Context) -> None:
    receipt = ctx.append("t", _records(5000), batch_id="b1")
    assert receipt.count == 5000 and not receipt.duplicate
    assert ctx.count("t") == 5000
    assert ctx.get("t", codec.derived_id("b1", 4321))["n"] == 4321
    assert [r["n"] for r in ctx.query("t", order_by="n", limit=3)] == [0, 1, 2]
    mine = ctx.append("t", ({"id": f"own{i}", "n": i} for i in range(3000)))
    assert mine.count == 3000
    assert ctx.get("t", "own2999") == {"id": "own2999", "n": 2999}
    assert ctx.count("t") == 8000
    assert _spools(ctx) == []
    assert ctx.verify().ok


def test_spooled_and_held_batches_are_the_same_bytes_ids_and_digest(tmp_path: Path) -> None:
    """The idempotency digest hashes the same bytes whether the batch was spooled or not."""
    records = [
        {"n": i, "s": "é" * (i % 7)} if i % 3 else {"id": f"k{i}", "n": i} for i in range(3000)
    ]
    held = codec.prepare_batch(records, None, batch_id="same", collection="t")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codec, "SPOOL_AT", 4096)
        mp.setattr(codec, "PREPARE_STEP", 100)
        with codec.prepare_batch(
            iter(records),
            None,
            batch_id="same",
            collection="t",
            spill=lambda: staging_folder(tmp_path, SPOOL_PURPOSE),
        ) as spooled:
            assert spooled.spooled and not held.spooled
            assert len(spooled) == len(held) == 3000
            assert spooled.digest == held.digest
            assert list(spooled.ids) == held.ids
            assert list(spooled.encoded) == held.encoded
            assert list(spooled.encoded) == held.encoded  # re-iterable
            assert [p.name[: len(SPOOL)] for p in tmp_path.iterdir()] == [SPOOL]
    assert list(tmp_path.iterdir()) == []  # closing removed the spool folder


@pytest.mark.usefixtures("spooling")
def test_spooled_retry_is_a_duplicate_and_another_payload_conflicts(ctx: app.Context) -> None:
    first = ctx.append("t", _records(4000), batch_id="req-1")
    again = ctx.append("t", _records(4000), batch_id="req-1")
    assert again.duplicate and again.count == 4000
    assert (again.sha256, again.committed_at) == (first.sha256, first.committed_at)
    with pytest.raises(app.ConflictError, match="different payload"):
        ctx.append("t", _records(4000, start=1), batch_id="req-1")
    assert ctx.count("t") == 4000
    assert _spools(ctx) == []


@pytest.mark.usefixtures("spooling")
def test_spooled_batch_is_all_or_nothing_when_the_producer_fails(ctx: app.Context) -> None:
    ctx.append("t", [{"id": "keep"}])
    with pytest.raises(RuntimeError, match="producer failed at 4000"):
        ctx.append("t", _records(5000, raise_at=4000), batch_id="half")
    bad = [*_records(3000), {"n": float("nan")}]
    with pytest.raises(app.InvalidInput, match=r"records\[3000\]"):
        ctx.append("t", iter(bad), batch_id="half")
    assert ctx.count("t") == 1
    assert _spools(ctx) == []
    assert ctx.append("t", _records(5000), batch_id="half").count == 5000  # id not taken
    assert ctx.count("t") == 5001
    assert ctx.verify().ok


@pytest.mark.usefixtures("spooling")
def test_spooled_batch_over_the_byte_cap_is_refused_naming_it(
    ctx: app.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "MAX_BATCH_BYTES", 256 << 10)
    with pytest.raises(app.InvalidInput, match=r"256 KiB of encoded records \(too many bytes\)"):
        ctx.append("t", _records(5000))
    monkeypatch.setattr(codec, "MAX_BATCH_RECORDS", 2000)
    with pytest.raises(app.InvalidInput, match=r"at most 2,000 records"):
        ctx.append("t", ({"n": i} for i in range(2001)))
    assert ctx.count("t") == 0
    assert _spools(ctx) == []


@pytest.mark.usefixtures("spooling")
def test_a_slow_producer_never_holds_the_writer_lock(ctx: app.Context) -> None:
    """While one append waits for its generator (already spooling), another thread appends
    to the same context and commits."""
    spooled, go = threading.Event(), threading.Event()
    result: list[object] = []

    def slow() -> Iterator[dict[str, Any]]:
        yield from _records(3000)
        spooled.set()
        assert go.wait(60)
        yield from _records(1000, start=3000)

    def run() -> None:
        try:
            result.append(ctx.append("t", slow(), batch_id="slow"))
        except BaseException as exc:  # reported by the assert below
            result.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert spooled.wait(60)
        assert len(_spools(ctx)) == 1
        assert ctx.append("t", [{"id": "quick"}]).count == 1
        assert ctx.count("t") == 1
    finally:
        go.set()
        worker.join(60)
    assert isinstance(result[0], app.BatchReceipt) and result[0].count == 4000
    assert ctx.count("t") == 4001


KILLED = r"""
import os, sys, time
from pathlib import Path
import app
from app.core.codec import derived_id
from app.core import codec
from app.formats import batchlog
root, where, marker, go = sys.argv[1:5]
codec.SPOOL_AT = 64 << 10
codec.PREPARE_STEP = 256
batchlog.WRITE_CHUNK = 64 << 10

def pause():
    Path(marker).touch()
    while not os.path.exists(go):
        time.sleep(0.01)

def records():
    for i in range(6000):
        if where == "prepare" and i == 5000:
            pause()
        yield {"n": i, "text": "x" * 200}

if where == "log":  # after part of the batch's lines are written, before the commit line
    real, calls = batchlog._pwrite_all, []
    def pwrite(fd, data, pos):
        calls.append(pos)
        if len(calls) == 3:
            pause()
        return real(fd, data, pos)
    batchlog._pwrite_all = pwrite
with app.open_store(root) as store:
    store.context("c").append("t", records(), batch_id="killed")
print("done", flush=True)
"""


@pytest.mark.parametrize("where", ["prepare", "log"])
def test_a_killed_spooled_append_leaves_no_batch_and_its_spool_is_swept(
    tmp_path: Path, where: str
) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as store:
        store.context("c").append("t", [{"id": "keep"}])
    marker, go = tmp_path / "paused", tmp_path / "go"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(root), where, str(marker), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise AssertionError(child.communicate())
        time.sleep(0.01)
    contexts = root / "contexts"
    left = sorted(p.name for p in contexts.iterdir() if p.name.startswith(SPOOL))
    assert len(left) == 1
    assert list((contexts / left[0]).iterdir()) == []  # its files have no name
    log = contexts / "c" / "t.jsonl"
    size_at_pause = log.stat().st_size
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert sorted(p.name for p in contexts.iterdir() if p.name.startswith(PREFIXES)) == left
    with app.open_store(root) as store:
        assert [p.name for p in contexts.iterdir() if p.name.startswith(PREFIXES)] == []
        ctx = store.context("c")
        assert ctx.count("t") == 1
        assert log.stat().st_size < size_at_pause or where == "prepare"  # torn tail cut
        assert ctx.verify().ok
        assert ctx.append("t", [{"n": 1}], batch_id="killed").count == 1  # never committed


FULL = r"""
import errno, json, resource, signal, sys
from pathlib import Path
import app
from app.core import codec
root = Path(sys.argv[1])
codec.SPOOL_AT = 64 << 10
codec.PREPARE_STEP = 256
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
out = {}
with app.open_store(root) as store:
    ctx = store.context("c")
    ctx.append("t", [{"id": "keep"}])
    records = [{"n": i, "text": "x" * 500} for i in range(6000)]  # ~3.2 MiB encoded
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # no file may pass 1 MiB
    try:
        ctx.append("t", iter(records), batch_id="full")
    except app.StorageError as exc:
        out["error"] = [exc.errno == errno.EFBIG, "spool" in str(exc)]
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space is back
    out["count"] = ctx.count("t")
    out["spools"] = [p.name for p in (root / "contexts").iterdir() if p.name.startswith(".")]
    out["retry"] = ctx.append("t", iter(records), batch_id="full").count
    out["ok"] = ctx.verify().ok
print(json.dumps(out))
"""


def test_a_spool_that_cannot_be_written_is_a_storage_error_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """A file-size limit (as a full disk would) stops the spool: ``StorageError`` with the
    errno, nothing committed, the spool folder gone, and the same batch id commits later."""
    res = subprocess.run(
        [sys.executable, "-c", FULL, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assert found == {"error": [True, True], "count": 1, "spools": [], "retry": 6000, "ok": True}


# -- the spool files themselves --------------------------------------------------------------


def test_spool_file_is_a_sized_reiterable_view_of_its_items(tmp_path: Path) -> None:
    items = [b"", b"a", b"x" * (READ_CHUNK + 17), b"\x00" * 9, b"tail" * 1000, b"z" * READ_CHUNK]
    spool = SpoolFile(tmp_path)
    try:
        for item in items * 3:
            spool.add(item)
        with pytest.raises(RuntimeError, match="sealed"):
            iter(spool)
        spool.seal()
        assert len(spool) == 18
        assert list(spool) == items * 3
        assert list(spool) == items * 3
        assert list(tmp_path.iterdir()) == []  # nameless
    finally:
        spool.close()


def test_spooled_strings_round_trip_any_str(tmp_path: Path) -> None:
    values = ["plain", "é\u2028", "\udc80lone surrogate", "x" * 300]
    spool = SpoolFile(tmp_path)
    try:
        strings = SpooledStrings(spool)
        for value in values:
            strings.add(value)
        spool.seal()
        assert len(strings) == 4
        assert list(strings) == values
    finally:
        spool.close()
