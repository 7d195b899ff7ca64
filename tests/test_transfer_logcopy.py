"""Export's log copy (``app.managers.transfer.logcopy``): the live log's batches as they
stand when compaction would drop nothing, the compacted log otherwise; either imports to the
same records."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import orjson
import pytest

import app
from app.core.errors import IntegrityError, NotFoundError
from app.formats.batchlog import BatchLog
from app.managers.transfer.logcopy import _all_current

pytestmark = pytest.mark.embedded_only("reads and damages the context's log file")

CASES = ("fresh", "upsert", "delete", "key_before_id", "escaped_id", "unicode_id")


def _fill(ctx: app.Context, case: str) -> int:
    """Three batches of records (and the case's twist); the number of current records."""
    for b in range(3):
        ctx.append("t", [{"id": f"r{b}-{i}", "v": i, "s": "é\n\t"} for i in range(40)])
    if case == "upsert":
        ctx.append("t", [{"id": "r1-3", "v": "again"}])
    elif case == "delete":
        ctx.delete("t", ["r0-0"])
        return 119
    elif case == "key_before_id":
        ctx.append("t", [{"a": 1, "id": "x"}])
        return 121
    elif case == "escaped_id":
        ctx.append("t", [{"id": 'q"uote', "v": 1}])
        return 121
    elif case == "unicode_id":
        ctx.append("t", [{"id": "é-日本", "v": 1}])
        return 121
    return 120


def _archived(archive: Path, name: str) -> bytes:
    with tarfile.open(archive, "r:gz") as tf:
        fh = tf.extractfile(name)
        assert fh is not None
        return fh.read()


def _split(log: bytes) -> tuple[str, bytes]:
    """The generation in a log's header, and everything after the header."""
    header, rest = log.split(b"\n", 1)
    return orjson.loads(header)["log"]["generation"], rest


@pytest.mark.parametrize("case", CASES)
def test_exported_log_is_the_live_or_the_compacted_log(
    store: app.Store, tmp_path: Path, case: str
) -> None:
    ctx = store.context("c")
    current = _fill(ctx, case)
    live = ctx.path / "t.jsonl"
    archive = tmp_path / "c.tar.gz"
    manifest = store.export_context("c", archive)
    assert manifest.collections == {"t": current}
    compacted = io.BytesIO()
    assert ctx.write_compacted_log("t", compacted) == current
    exported_gen, exported = _split(_archived(archive, "t.jsonl"))
    compacted_gen, compacted_body = _split(compacted.getvalue())
    live_gen, live_body = _split(live.read_bytes())
    assert exported_gen not in (live_gen, compacted_gen)  # always a new generation
    header_len = live.read_bytes().index(b"\n") + 1
    puts = BatchLog(live).count_verified(header_len)
    copied = case in ("fresh", "unicode_id")
    assert _all_current(live, header_len, puts) is copied
    assert exported == (live_body if copied else compacted_body)
    store.import_context(archive, name="copy")
    copy = store.context("copy")
    assert copy.count("t") == current
    assert copy.query("t", order_by="id") == ctx.query("t", order_by="id")
    assert copy.verify().ok


def test_export_refuses_a_damaged_log(store: app.Store, tmp_path: Path) -> None:
    ctx = store.context("c")
    _fill(ctx, "fresh")
    live = ctx.path / "t.jsonl"
    data = bytearray(live.read_bytes())
    at = data.index(b'"v":7')
    data[at + 4] = ord("8")  # same length, checksum now wrong
    live.write_bytes(bytes(data))
    archive = tmp_path / "c.tar.gz"
    with pytest.raises(IntegrityError, match=r"t\.jsonl"):
        store.export_context("c", archive)
    assert not archive.exists()


def test_export_cuts_a_torn_tail_of_the_live_log(store: app.Store, tmp_path: Path) -> None:
    ctx = store.context("c")
    _fill(ctx, "fresh")
    store.close()
    live = store.root / "contexts" / "c" / "t.jsonl"
    with open(live, "ab") as fh:
        fh.write(b'{"put":{"id":"torn","v"')  # a crash in the middle of an append
    with app.open_store(store.root) as again:
        archive = tmp_path / "c.tar.gz"
        assert again.export_context("c", archive).collections == {"t": 120}
        again.import_context(archive, name="copy")
        assert again.context("copy").count("t") == 120
        with pytest.raises(NotFoundError):
            again.context("copy").get("t", "torn")
