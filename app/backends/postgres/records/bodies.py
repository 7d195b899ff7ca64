"""Batch bodies in PostgreSQL: built by the batch-log code, stored in parts, read back as a log.

A body is what the embedded log holds for the batch (``app.formats.batchlog``): its entry
lines then its commit line, built by the same functions, so a batch's checksum is computed
the same way on both backends. It is written with ``COPY`` in parts of at most ``BODY_PART``
bytes as the records stream by (a spooled batch is never held), and read back, in commit
order after a header line, as a batch-log file (``write_log``, and every read of "the log":
history, compaction, verification, rebuilding).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import IO, Any, NamedTuple

from app.backends.postgres.records.tables import BODY_PART
from app.formats.batchlog import (
    CommitMeta,
    Receipt,
    _closing,
    _entry_chunks,
    header_line,
)

COPY_BODIES = "COPY ctxstore_batch_bodies (seq, part, data) FROM STDIN (FORMAT BINARY)"
BODY_TYPES = ["int8", "int4", "bytea"]
READ_PARTS = (
    "SELECT b.data FROM ctxstore_batches a JOIN ctxstore_batch_bodies b ON b.seq = a.seq"
    " WHERE a.context = %s AND a.collection = %s ORDER BY a.seq, b.part"
)


class Body(NamedTuple):
    """What was written of a batch body: its entry lines, digest (the commit line's
    ``sha256``) and size in bytes."""

    entries: int
    digest: str
    size: int


def _parts(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` re-cut into parts of at most ``BODY_PART`` bytes."""
    for chunk in chunks:
        for at in range(0, len(chunk), BODY_PART):
            yield chunk[at : at + BODY_PART]


def copy_parts(conn: Any, seq: int, chunks: Iterable[bytes]) -> int:
    """Store ``chunks`` (in order) as the body parts of batch ``seq``; returns the bytes."""
    size = 0
    with conn.cursor() as cur, cur.copy(COPY_BODIES) as copy:
        copy.set_types(BODY_TYPES)
        for number, part in enumerate(_parts(chunks)):
            copy.write_row((seq, number, part))
            size += len(part)
    return size


def write_body(
    conn: Any,
    seq: int,
    meta: CommitMeta,
    puts: Iterable[bytes],
    deletes: Iterable[str],
) -> Body:
    """Build and store the body of a new batch (``meta`` without its digest): the records
    ``puts`` (canonical JSON each), then tombstones of ``deletes``, then the commit line."""
    h = hashlib.sha256()
    digest = ""

    def chunks() -> Iterator[bytes]:
        nonlocal digest
        for chunk in _entry_chunks(puts, deletes):
            h.update(chunk)
            yield chunk
        commit, digest = _closing(h, meta)
        yield commit

    size = copy_parts(conn, seq, chunks())
    return Body(meta.entries, digest, size)


def receipt_of(meta: CommitMeta) -> Receipt:
    """The receipt a commit line carries (its own count and digest unless compacted)."""
    return meta.receipt or Receipt(meta.entries, meta.sha256)


def read_log(conn: Any, context: str, collection: str, generation: str, fh: IO[bytes]) -> int:
    """Write the collection's log (a header with ``generation``, then every batch body in
    commit order) to ``fh`` from the connection's snapshot, a part at a time; returns the
    bytes written. The caller runs it in one transaction (one snapshot)."""
    header = header_line(generation)
    fh.write(header)
    size = len(header)
    with conn.cursor(name="ctxstore_read_log") as cur:
        cur.itersize = 4
        cur.execute(READ_PARTS, (context, collection))
        for (data,) in cur:
            fh.write(data)
            size += len(data)
    return size


__all__ = ["Body", "copy_parts", "read_log", "receipt_of", "write_body"]
