"""Unit tests of the batch-log format (``app.formats.batchlog``), straight on its module.

A template for a new format's tests: write then read back, the exact bytes (pinned: old files
must keep reading), a torn tail (reported, never raised), corruption (raised, never skipped),
checksums, and the helpers a manager relies on. Nothing here opens a store or a context.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson
import pytest

from app.core.errors import IntegrityError, SchemaVersionError, StorageError
from app.formats.batchlog import (
    BatchLog,
    Entry,
    LogWriter,
    commit_line,
    put_line,
    put_offsets,
)

AT = "2026-01-01T00:00:00+00:00"


def _record(rid: str, **fields: object) -> bytes:
    """A record's canonical JSON, as the codec hands it to the log."""
    return orjson.dumps({"id": rid, **fields}, option=orjson.OPT_SORT_KEYS)


def _log(tmp_path: Path, generation: str = "g1") -> tuple[BatchLog, int]:
    log = BatchLog(tmp_path / "c.jsonl")
    return log, log.create(generation)


def _append(log: BatchLog, offset: int, batch_id: str, *records: bytes) -> int:
    return log.write_batch(
        offset, batch_id=batch_id, kind="append", committed_at=AT, puts=list(records)
    ).end


# -- write and read back ---------------------------------------------------------------------


def test_a_new_log_holds_only_its_header(tmp_path: Path) -> None:
    log, end = _log(tmp_path, "abc")
    assert log.exists() and log.size() == end
    header = log.header()
    assert (header.generation, header.length) == ("abc", end)
    scan = log.scan(header.length)
    assert list(scan) == []
    assert (scan.valid_end, scan.tail) == (end, False)


def test_batches_read_back_with_their_offsets(tmp_path: Path) -> None:
    log, start = _log(tmp_path)
    records = [_record("a", v=1), _record("b", v=2), _record("a", v=3)]
    written = log.write_batch(
        start, batch_id="b1", kind="append", committed_at=AT, puts=records, req="r" * 64
    )
    deleted = log.write_batch(
        written.end, batch_id="b2", kind="delete", committed_at=AT, deletes=["b"]
    )
    assert written.start == start and deleted.start == written.end
    assert log.size() == deleted.end

    scan = log.scan(start)
    first, second = list(scan)
    assert (scan.valid_end, scan.tail, scan.size) == (deleted.end, False, deleted.end)
    assert (first.batch_id, first.kind, first.committed_at, first.req) == (
        "b1",
        "append",
        AT,
        "r" * 64,
    )
    assert (first.start, first.end, first.sha256) == (start, written.end, written.sha256)
    assert [e.data for e in first.entries] == records
    assert [e.record_id for e in first.entries] == ["a", "b", "a"]
    assert [e.pos for e in first.entries] == list(put_offsets(start, records))
    assert second.entries == [Entry(written.end, "b", None)]
    assert (second.receipt_count, second.receipt_sha256) == (1, deleted.sha256)


def test_a_scan_can_start_at_any_batch_boundary(tmp_path: Path) -> None:
    log, start = _log(tmp_path)
    middle = _append(log, start, "b1", _record("a"))
    end = _append(log, middle, "b2", _record("b"))
    scan = log.scan(middle)
    assert [b.batch_id for b in scan] == ["b2"]
    assert scan.valid_end == end
    assert list(log.scan(end)) == []


def test_an_empty_batch_is_its_commit_line(tmp_path: Path) -> None:
    log, start = _log(tmp_path)
    written = log.write_batch(start, batch_id="none", kind="delete", committed_at=AT)
    (batch,) = log.scan(start)
    assert batch.entries == [] and batch.end == written.end


# -- the bytes on disk (pinned) ---------------------------------------------------------------


def test_the_bytes_on_disk_are_pinned(tmp_path: Path) -> None:
    """The exact syntax of every line kind (digests computed by v0.1): a change here breaks
    every existing log."""
    log, start = _log(tmp_path, "0011223344556677")
    end = _append(log, start, "b1", _record("a", v=1))
    log.write_batch(end, batch_id="b2", kind="delete", committed_at=AT, deletes=["a"], req="q")
    assert log.path.read_bytes() == (
        b'{"log":{"format":1,"generation":"0011223344556677"}}\n'
        b'{"put":{"id":"a","v":1}}\n'
        b'{"commit":{"batch":"b1","kind":"append","at":"2026-01-01T00:00:00+00:00","n":1,'
        b'"sha256":"0d28830c1dccd30a73e16ef9266f0627854e257c94a0e3416e1b79a3c4662d5f"}}\n'
        b'{"del":"a"}\n'
        b'{"commit":{"batch":"b2","kind":"delete","at":"2026-01-01T00:00:00+00:00","n":1,'
        b'"sha256":"b7557071bb202eecc6fb67ceeaef5fc270f7a1fdb29c005f18709cddbde4c417",'
        b'"req":"q"}}\n'
    )


def test_the_checksum_covers_entry_lines_and_commit_fields(tmp_path: Path) -> None:
    """``sha256`` = SHA-256(entry-line bytes + canonical JSON of [batch, kind, at, n(, req)])."""
    log, start = _log(tmp_path)
    records = [_record("a"), _record("b", x=[1, 2])]
    written = log.write_batch(start, batch_id="b", kind="append", committed_at=AT, puts=records)
    lines = b"".join(put_line(r) for r in records)
    expected = hashlib.sha256(lines + orjson.dumps(["b", "append", AT, 2])).hexdigest()
    assert written.sha256 == expected
    assert commit_line([put_line(r) for r in records], "b", "append", AT)[1] == expected


def test_large_batches_are_written_in_chunks_with_the_same_bytes(tmp_path: Path) -> None:
    """A batch larger than one write chunk is laid out exactly as line after line."""
    log, start = _log(tmp_path)
    records = [_record(f"r{i}", pad="x" * 1000) for i in range(6000)]  # ~6 MB > 4 MiB chunk
    written = log.write_batch(start, batch_id="big", kind="append", committed_at=AT, puts=records)
    lines = [put_line(r) for r in records]
    commit, digest = commit_line(lines, "big", "append", AT)
    assert digest == written.sha256
    assert log.path.read_bytes()[start:] == b"".join(lines) + commit
    assert log.count_verified(start) == len(records)


def test_a_log_written_line_by_line_reads(tmp_path: Path) -> None:
    """Logs forged with ``put_line``/``commit_line`` (as v1 wrote them: no request digest) read
    back, and their batches count as legacy (``req`` is None)."""
    log, start = _log(tmp_path)
    lines = [put_line(_record("a")), put_line(_record("b"))]
    commit, digest = commit_line(lines, "old", "append", AT)
    with open(log.path, "ab") as fh:
        fh.write(b"".join(lines) + commit)
    (batch,) = log.scan(start)
    assert (batch.sha256, batch.req, len(batch.entries)) == (digest, None, 2)


# -- torn tails and corruption -----------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        b'{"put":{"id":"c"',  # a partial last line
        b'{"put":{"id":"c"}}\n',  # whole entry lines without their commit
        b'{"put":{"id":"c"}}\n{"commit":{"batch":"b3"',  # a partial commit line
        b"\x00\x00\x00",  # zeros after a crash
    ],
)
def test_a_torn_tail_is_reported_not_raised(tmp_path: Path, tail: bytes) -> None:
    log, start = _log(tmp_path)
    end = _append(log, start, "b1", _record("a"))
    with open(log.path, "ab") as fh:
        fh.write(tail)
    scan = log.scan(start)
    assert [b.batch_id for b in scan] == ["b1"]
    assert (scan.tail, scan.valid_end, scan.size) == (True, end, end + len(tail))
    log.truncate(scan.valid_end)  # what the owner does under its writer lock
    assert log.size() == end
    after = log.scan(start)
    assert len(list(after)) == 1 and not after.tail


def test_a_flipped_byte_in_a_committed_batch_raises(tmp_path: Path) -> None:
    log, start = _log(tmp_path)
    _append(log, start, "b1", _record("a", v=1))
    data = bytearray(log.path.read_bytes())
    data[data.index(b'"v":1') + 4] = ord("2")  # still valid JSON: only the checksum sees it
    log.path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        list(log.scan(start))
    with pytest.raises(IntegrityError):
        log.count_verified(start)


def test_damage_followed_by_a_valid_commit_is_corruption(tmp_path: Path) -> None:
    """Bytes that are not an entry are a torn tail only if no valid commit follows them."""
    log, start = _log(tmp_path)
    end = _append(log, start, "b1", _record("a"))
    end = _append(log, end, "b2", _record("b"))
    data = bytearray(log.path.read_bytes())
    at = data.index(b'{"put":{"id":"a"')
    data[at : at + 7] = b"garbage"
    log.path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="damaged data"):
        list(log.scan(start))


def test_an_entry_count_that_disagrees_with_n_raises(tmp_path: Path) -> None:
    log, start = _log(tmp_path)
    line = put_line(_record("a"))
    commit, _ = commit_line([line, line], "b", "append", AT)  # claims two entries
    with open(log.path, "ab") as fh:
        fh.write(line + commit)
    with pytest.raises(IntegrityError):
        list(log.scan(start))


def test_a_damaged_or_newer_header_is_refused(tmp_path: Path) -> None:
    log, _ = _log(tmp_path)
    log.path.write_bytes(b'{"log":{"format":1}}\n')
    with pytest.raises(IntegrityError, match="damaged log header"):
        log.header()
    log.path.write_bytes(b'{"log":{"format":99,"generation":"g"}}\n')
    with pytest.raises(SchemaVersionError):
        log.header()


def test_a_failed_write_leaves_the_log_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, start = _log(tmp_path)
    end = _append(log, start, "b1", _record("a"))
    before = log.path.read_bytes()
    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError):
        _append(log, end, "b2", _record("b"))
    assert log.path.read_bytes() == before


# -- helpers the records part relies on -------------------------------------------------------


def test_request_digest_is_read_from_the_commit_line(tmp_path: Path) -> None:
    log, start = _log(tmp_path)
    w1 = log.write_batch(start, batch_id="b1", kind="append", committed_at=AT, puts=[_record("a")])
    w2 = log.write_batch(
        w1.end, batch_id="b2", kind="append", committed_at=AT, puts=[_record("b")], req="d" * 64
    )
    assert log.request_digest(w1.start, w1.end, "b1") is None  # legacy: no digest
    assert log.request_digest(w2.start, w2.end, "b2") == "d" * 64
    with pytest.raises(IntegrityError):
        log.request_digest(w2.start, w2.end, "other")


def test_find_id_lines_and_count_verified(tmp_path: Path) -> None:
    log, start = _log(tmp_path)
    end = _append(log, start, "b1", _record("a"), _record("b"))
    end = log.write_batch(end, batch_id="b2", kind="delete", committed_at=AT, deletes=["a"]).end
    a_lines = log.find_id_lines("a")
    entries = [e for b in log.scan(start) for e in b.entries]
    assert a_lines == [e.pos for e in entries if e.record_id == "a"]
    assert log.count_verified(start) == 2


def test_log_writer_rewrites_batches_keeping_their_receipts(tmp_path: Path) -> None:
    """What compaction does: a new log keeping some entries of each batch; every batch keeps
    its id, time, request digest and original receipt, and the new file verifies."""
    log, start = _log(tmp_path)
    end = log.write_batch(
        start,
        batch_id="b1",
        kind="append",
        committed_at=AT,
        puts=[_record("a", v=1), _record("b")],
        req="q" * 64,
    ).end
    _append(log, end, "b2", _record("a", v=2))
    old = list(log.scan(start))

    new = BatchLog(tmp_path / "new.jsonl")
    with open(new.path, "wb") as fh:
        writer = LogWriter(fh, "g2")
        rewritten = [
            writer.rewrite(old[0], [old[0].entries[1]]),  # keeps b, drops the old a
            writer.rewrite(old[1], old[1].entries),
        ]
    assert new.header().generation == "g2"
    read = list(new.scan(new.header().length))
    assert read == rewritten
    first = read[0]
    assert [e.record_id for e in first.entries] == ["b"]
    assert (first.batch_id, first.committed_at, first.req) == ("b1", AT, "q" * 64)
    assert (first.receipt_count, first.receipt_sha256) == (2, old[0].sha256)
    assert first.sha256 != old[0].sha256  # recomputed for the kept lines
    assert writer.end == new.size()
