"""Verification of one collection: its index rows and batches against its log's bytes.

The log is the truth (docs/api.md): ``verify`` reports an index that misses, adds or alters rows
(data, position or checksum; the row's bytes are compared with the log's through a digest, so
a row whose CRC was recomputed to match altered data is found too) and batches the index
misses, adds or alters. One verified pass over the log, one over the index rows.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

from app.backends.local.records.side_table import batch_row
from app.core.codec import legacy_value
from app.formats.batchlog import BatchLog
from app.formats.sqlindex import BatchRow, SqliteIndex

MAX_REPORTED = 10


def check_collection(name: str, log: BatchLog, index: SqliteIndex, problems: list[str]) -> None:
    """Append to ``problems`` every disagreement between the log and the index of ``name``."""
    path = log.path
    header = log.header()
    expected: dict[str, tuple[int, bytes]] = {}
    log_batches: dict[str, BatchRow] = {}
    scan = log.scan(header.length)
    legacy = 0
    for batch in scan:
        log_batches[batch.batch_id] = batch_row(name, batch)
        for e in batch.entries:
            if e.data is None:
                expected.pop(e.record_id, None)
                continue
            expected[e.record_id] = (e.pos, _fingerprint(e.data))
            found = legacy_value(e.data)  # v1 values that v2 refuses are listed (docs/api.md)
            if found is not None:
                legacy += 1
                if legacy <= MAX_REPORTED:
                    problems.append(
                        f"{path}: record {e.record_id[:80]!r} (byte {e.pos}) holds {found} "
                        "(written before v2; it reads back, but cannot be appended again)"
                    )
    state = index.collection_state(name)
    if scan.tail:
        inside = state is not None and scan.valid_end < state.log_end
        where = "inside the indexed range" if inside else "uncommitted"
        problems.append(
            f"{path}: {scan.size - scan.valid_end} damaged or torn bytes after byte "
            f"{scan.valid_end} ({where})"
        )
    if state is None or state.generation != header.generation:
        problems.append(f"{index.path}: collection {name!r} is not indexed")
        return
    if state.log_end != scan.valid_end:
        problems.append(
            f"{index.path}: index of {name!r} covers {state.log_end} bytes of {path}, "
            f"whose committed data ends at {scan.valid_end}"
        )
    _check_rows(name, path, index, expected, problems)
    _check_batches(name, path, index, log_batches, problems)


def _check_rows(
    name: str,
    path: Path,
    index: SqliteIndex,
    expected: dict[str, tuple[int, bytes]],
    problems: list[str],
) -> None:
    where = f"{index.path}: collection {name!r}"
    extra: list[str] = []
    altered: list[str] = []
    crc32 = zlib.crc32
    for pos, rid, data, crc in index.rows(name):
        raw = data.encode()
        exp = expected.pop(rid, None)
        if exp is None:
            extra.append(rid)
        elif exp != (pos, _fingerprint(raw)) or crc32(raw) != crc:
            altered.append(rid)
    _report(problems, where, "records", extra, f"are not current in {path}")
    _report(problems, where, "records", altered, f"differ from {path}")
    _report(problems, where, "current records", list(expected), f"of {path} are missing")


def _check_batches(
    name: str,
    path: Path,
    index: SqliteIndex,
    log_batches: dict[str, BatchRow],
    problems: list[str],
) -> None:
    where = f"{index.path}: collection {name!r}"
    extra: list[str] = []
    altered: list[str] = []
    for row in index.batches(name):
        exp = log_batches.pop(row.batch_id, None)
        if exp is None:
            extra.append(row.batch_id)
        elif exp != row:
            altered.append(row.batch_id)
    _report(problems, where, "batches", extra, f"are not in {path}")
    _report(problems, where, "batches", altered, f"differ from {path}")
    _report(problems, where, "batches", list(log_batches), f"of {path} are missing")


def _report(problems: list[str], where: str, unit: str, ids: list[str], what: str) -> None:
    if ids:
        shown = ", ".join(repr(i[:80]) for i in ids[:MAX_REPORTED])
        more = f" (+{len(ids) - MAX_REPORTED} more)" if len(ids) > MAX_REPORTED else ""
        problems.append(f"{where}: {len(ids)} {unit} {what}: {shown}{more}")


def _fingerprint(data: bytes) -> bytes:
    """A digest of a record's bytes (a CRC can be recomputed to match altered data)."""
    return hashlib.blake2b(data, digest_size=16).digest()
