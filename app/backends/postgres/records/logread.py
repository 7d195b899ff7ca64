"""Reads of "the log" (the truth) over a collection's log read back into a local file.

``PgRecords`` writes the collection's batch bodies into a batch-log file (``bodies.read_log``)
and these functions read it exactly as the embedded backend reads its log: every batch
checksum-verified (``app.formats.batchlog.LogScan``), positions are offsets in that file (so
oldest first, as on the embedded backend).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from app.backends.postgres.records.apply import scan, survivors
from app.core.codec import decode
from app.core.schemas import LatestCommit, RecordVersion
from app.formats.batchlog import Batch, Entry, LogWriter


def versions(path: Path, collection: str, ids: Iterable[str]) -> dict[str, list[RecordVersion]]:
    """Every version and deletion of ``ids`` in the log file, oldest first."""
    out: dict[str, list[RecordVersion]] = {rid: [] for rid in ids}
    if not out:
        return out
    for batch in scan(path):
        for e in batch.entries:
            found = out.get(e.record_id)
            if found is not None:
                found.append(version_of(collection, batch, e, e.pos))
    return out


def latest_commits(path: Path, ids: Iterable[str]) -> dict[str, LatestCommit]:
    wanted = set(ids)
    out: dict[str, LatestCommit] = {}
    if not wanted:
        return out
    for batch in scan(path):
        for e in batch.entries:
            if e.record_id in wanted:
                out[e.record_id] = LatestCommit(batch.committed_at, e.data is None)
    return out


def current_records(path: Path) -> Iterator[dict[str, Any]]:
    """The current version of every record in commit order (two verified passes)."""
    latest, _ = survivors(path)
    for number, batch in enumerate(scan(path)):
        for pos, e in enumerate(batch.entries):
            if e.data is not None and latest.get(e.record_id) == (number, pos):
                yield decode(e.data)


def write_compacted(path: Path, fh: IO[bytes], generation: str) -> tuple[int, int]:
    """Write the log file without superseded versions and tombstones to ``fh`` (every batch
    kept, an emptied one as its commit line): ``(entries before, records after)``."""
    latest, before = survivors(path)
    writer = LogWriter(fh, generation, path)
    kept = 0
    for number, batch in enumerate(scan(path)):
        counted = _Counted(
            e
            for pos, e in enumerate(batch.entries)
            if e.data is not None and latest.get(e.record_id) == (number, pos)
        )
        writer.rewrite(batch, counted, keep_entries=False)
        kept += counted.count
    return before, kept


class _Counted(Iterator[Entry]):
    """Entries passed through, counted (a huge batch is streamed, never held)."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self._entries = entries
        self.count = 0

    def __next__(self) -> Entry:
        entry = next(self._entries)
        self.count += 1
        return entry


def version_of(collection: str, batch: Batch, e: Entry, position: int) -> RecordVersion:
    """The version (or deletion) ``e`` of ``batch``, at ``position`` in the whole log."""
    return RecordVersion(
        id=e.record_id,
        collection=collection,
        batch_id=batch.batch_id,
        committed_at=batch.committed_at,
        sha256=hashlib.sha256(e.data if e.data is not None else b"null").hexdigest(),
        deleted=e.data is None,
        data=None if e.data is None else decode(e.data),
        position=position,
    )


__all__ = ["current_records", "latest_commits", "version_of", "versions", "write_compacted"]
