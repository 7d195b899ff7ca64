"""The history of a few ids in a large log without reading the whole log back.

As the embedded backend does (``CollectionLog.versions``): the batch bodies that may hold one of
the ids are found by a byte search, here run by the server (``position`` over every body part,
and over the seam between two consecutive parts, so a line cut by the 4 MiB part boundary is
found too); only those batches are fetched, each checksum-verified as a one-batch log with the
collection's header, and positions are the offsets the whole log read back would give them
(the header, plus the sizes of the batches before, plus the offset in the batch).

Everything is read from one REPEATABLE READ snapshot, so a compaction committing meanwhile is
seen entirely or not at all.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from app.backends.postgres.records.logread import version_of
from app.core.errors import IntegrityError
from app.core.schemas import RecordVersion
from app.formats.batchlog import DEL, BatchLog, LogScan, header_line

FEW_IDS = 4
SEARCH_ABOVE = 1 << 20
"""A log of at least this many bytes is searched for a few ids instead of read back whole."""

SIZES = (
    "SELECT seq, batch_id, size, sum(size) OVER (ORDER BY seq) - size"
    " FROM ctxstore_batches WHERE context = %s AND collection = %s ORDER BY seq"
)
CANDIDATES = (
    "SELECT DISTINCT w.seq FROM ("
    " SELECT p.seq, p.data,"
    "  lead(substring(p.data FROM 1 FOR %(n)s)) OVER (PARTITION BY p.seq ORDER BY p.part) AS nxt"
    " FROM ctxstore_batch_bodies p JOIN ctxstore_batches a ON a.seq = p.seq"
    " WHERE a.context = %(context)s AND a.collection = %(collection)s) w"
    " WHERE position(%(needle)s IN w.data) > 0"
    " OR position(%(needle)s IN substring(w.data FROM greatest(length(w.data) - %(n)s + 2, 1))"
    " || coalesce(w.nxt, ''::bytea)) > 0"
)
BODY = "SELECT data FROM ctxstore_batch_bodies WHERE seq = %s ORDER BY part"


def needles(record_id: str) -> list[bytes]:
    """The bytes a line about ``record_id`` holds (``BatchLog.find_id_lines``' needles)."""
    key = orjson.dumps(record_id)
    return [b'"id":' + key, DEL + key + b"}\n"]


@contextlib.contextmanager
def _snapshot(db: Any) -> Iterator[Any]:
    with db.session() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield conn


def versions_by_search(
    db: Any,
    context: str,
    collection: str,
    ids: list[str],
    folder: Path,
    where: str,
) -> dict[str, list[RecordVersion]] | None:
    """Every version of ``ids`` (a few) in the collection's log, oldest first, or None when the
    log is small or absent (then the caller reads it back whole). Damage is
    ``IntegrityError`` naming ``where`` (the collection's log)."""
    out: dict[str, list[RecordVersion]] = {rid: [] for rid in ids}
    with _snapshot(db) as conn:
        row = conn.execute(
            "SELECT generation FROM ctxstore_collections WHERE context = %s AND collection = %s",
            (context, collection),
        ).fetchone()
        if row is None:
            return None
        header = header_line(row[0])
        placed = {
            int(seq): (str(bid), int(size), int(before))
            for seq, bid, size, before in conn.execute(SIZES, (context, collection))
        }
        if len(header) + sum(size for _, size, _ in placed.values()) < SEARCH_ABOVE:
            return None
        found: set[int] = set()
        for rid in ids:
            for needle in needles(rid):
                args = {
                    "n": len(needle),
                    "needle": needle,
                    "context": context,
                    "collection": collection,
                }
                found.update(int(r[0]) for r in conn.execute(CANDIDATES, args))
        for seq in sorted(found):
            batch_id, _, before = placed[seq]
            _read_batch(conn, seq, batch_id, before, header, collection, folder, out, where)
    return out


def _read_batch(
    conn: Any,
    seq: int,
    batch_id: str,
    before: int,
    header: bytes,
    collection: str,
    folder: Path,
    out: dict[str, list[RecordVersion]],
    where: str,
) -> None:
    """Add the versions of ``out``'s ids found in batch ``seq`` (verified as a one-batch log)."""
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp") as fh:
        fh.write(header)
        for (data,) in conn.execute(BODY, (seq,)):
            fh.write(data)
        fh.flush()
        path = Path(fh.name)
        try:
            scan = LogScan(path, BatchLog(path).header().length)
            batches = list(scan)
        except IntegrityError as exc:
            text = str(exc).replace(f"{path}: ", "")
            raise IntegrityError(f"{where}: batch {batch_id[:80]!r}: {text}") from None
        if scan.tail or len(batches) != 1 or batches[0].batch_id != batch_id:
            raise IntegrityError(f"{where}: damaged data in batch {batch_id[:80]!r}")
        batch = batches[0]
        for e in batch.entries:
            versions = out.get(e.record_id)
            if versions is not None:
                versions.append(version_of(collection, batch, e, before + e.pos))


__all__ = ["FEW_IDS", "SEARCH_ABOVE", "needles", "versions_by_search"]
