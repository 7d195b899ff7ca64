"""Records on PostgreSQL (``PgRecords``): what holds there beyond the shared record suites.

Also ``write_log`` / ``ingest_log`` on both record backends (whole-context transfer moves
collections as batch-log streams): a log written by one backend ingests into the other, batch
for batch and byte for byte.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

import app
from app.core.errors import ConflictError, IntegrityError, NotFoundError
from app.formats.batchlog import BatchLog, LogScan


def _local_ctx(tmp_path: Path, name: str = "c") -> app.Context:
    store = app.open_store(tmp_path / name)
    return store.context("default")


def _log_of(ctx: app.Context, collection: str) -> bytes:
    buf = io.BytesIO()
    with ctx._records.writing():
        n = ctx._records.write_log(collection, buf)
    data = buf.getvalue()
    assert n == len(data)
    return data


def _batches(data: bytes, tmp_path: Path) -> list[tuple[str, bytes]]:
    """``(batch id, its bytes)`` of every batch of a batch-log stream."""
    path = tmp_path / "scan.jsonl"
    path.write_bytes(data)
    scan = LogScan(path, BatchLog(path).header().length)
    found = [(b.batch_id, data[b.start : b.end]) for b in scan]
    assert not scan.tail
    return found


def _fill(ctx: app.Context) -> list[dict[str, Any]]:
    ctx.append("notes", [{"id": f"n{i}", "v": i, "x": 1e20, "z": -0.0} for i in range(5)])
    ctx.append("notes", [{"id": "n1", "v": "changed", "s": "é\u2028\U0001f600"}], batch_id="b2")
    ctx.delete("notes", ["n2"], batch_id="b3")
    ctx.append("notes", [{"id": "n9", "big": 2**63 - 1, "neg": -(2**63)}])
    return ctx.query("notes")


def test_local_write_log_is_the_log_file_and_ingests_elsewhere(tmp_path: Path) -> None:
    src = _local_ctx(tmp_path, "a")
    current = _fill(src)
    data = _log_of(src, "notes")
    assert data == (Path(src.path) / "notes.jsonl").read_bytes()
    dst = _local_ctx(tmp_path, "b")
    with dst._records.writing():
        assert dst._records.ingest_log("notes", io.BytesIO(data)) == 4
    assert dst.query("notes") == current
    assert _log_of(dst, "notes") == data
    assert [v.batch_id for v in dst.history("notes", "n1")] == [
        v.batch_id for v in src.history("notes", "n1")
    ]
    # the ingested batch ids are taken: a repeat is a duplicate, not a second copy
    again = dst.append(
        "notes", [{"id": "n1", "v": "changed", "s": "é\u2028\U0001f600"}], batch_id="b2"
    )
    assert again.duplicate
    assert dst.verify().ok


def test_local_ingest_refuses_damage_a_non_empty_collection_and_taken_ids(tmp_path: Path) -> None:
    src = _local_ctx(tmp_path, "a")
    _fill(src)
    data = _log_of(src, "notes")
    dst = _local_ctx(tmp_path, "b")
    records = dst._records
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    with records.writing(), pytest.raises(IntegrityError):
        records.ingest_log("notes", io.BytesIO(bytes(flipped)))
    assert dst.count("notes") == 0 and dst.collections() == []
    with records.writing(), pytest.raises(IntegrityError):
        records.ingest_log("notes", io.BytesIO(data[:-3]))  # a torn last batch
    dst.append("other", [{"id": "x"}], batch_id="b2")
    with records.writing(), pytest.raises(ConflictError):
        records.ingest_log("notes", io.BytesIO(data))
    assert dst.count("notes") == 0
    with records.writing(), pytest.raises(ConflictError):
        records.ingest_log("other", io.BytesIO(data))
    with records.writing(), pytest.raises(NotFoundError):
        records.write_log("missing", io.BytesIO())
