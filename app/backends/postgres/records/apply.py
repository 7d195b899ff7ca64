"""Putting batches into the tables, inside the caller's transaction.

- ``stage_rows`` + ``upsert_staged``: record versions streamed with ``COPY`` into a temporary
  table, then moved into ``ctxstore_records`` in one statement (the newest version of an id
  given twice in a batch wins), so a batch of any size costs two statements;
- ``insert_batch``: a ``ctxstore_batches`` row (``ConflictError`` for a batch id the context
  already holds);
- ``load_log``: every batch of a verified batch-log file (``write_log``'s format): bodies
  byte for byte, rows, and the current records derived from them (ingest, compaction,
  rebuild).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from app.backends.postgres.records.bodies import copy_parts, receipt_of
from app.backends.postgres.records.tables import STAGE
from app.core.errors import ConflictError, IntegrityError
from app.formats.batchlog import Batch, BatchLog, CommitMeta, LogScan, Receipt

COPY_STAGE = "COPY ctxstore_stage (id, seq, pos, raw) FROM STDIN (FORMAT BINARY)"
STAGE_TYPES = ["text", "int8", "int4", "bytea"]
UPSERT = (
    "INSERT INTO ctxstore_records (context, collection, id, seq, pos, doc, raw)"
    " SELECT %s, %s, id, seq, pos, convert_from(raw, 'UTF8')::jsonb, raw FROM"
    " (SELECT DISTINCT ON (id) id, seq, pos, raw FROM ctxstore_stage"
    "  ORDER BY id, seq DESC, pos DESC) s"
    " ON CONFLICT (context, collection, id) DO UPDATE SET"
    " seq = EXCLUDED.seq, pos = EXCLUDED.pos, doc = EXCLUDED.doc, raw = EXCLUDED.raw"
)
INSERT_BATCH = (
    "INSERT INTO ctxstore_batches (seq, context, collection, batch_id, kind, n, sha256,"
    " committed_at, req, entries, digest, size)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (context, batch_id) DO NOTHING"
)
NEXT_SEQ = "SELECT nextval(pg_get_serial_sequence('ctxstore_batches', 'seq'))"
DELETE_IDS = "DELETE FROM ctxstore_records WHERE context = %s AND collection = %s AND id = ANY(%s)"
DELETE_PART = 10_000


def next_seq(conn: Any) -> int:
    row = conn.execute(NEXT_SEQ).fetchone()
    return int(row[0])


Row = tuple[str, int, int, bytes]
"""``(id, seq, pos, canonical JSON)`` of a record version on its way to the index."""


def stage_rows(conn: Any, rows: Iterable[Row]) -> int:
    """COPY ``(id, seq, pos, raw)`` rows into the (emptied) stage table; returns how many."""
    conn.execute(STAGE)
    conn.execute("TRUNCATE ctxstore_stage")
    count = 0
    with conn.cursor() as cur, cur.copy(COPY_STAGE) as copy:
        copy.set_types(STAGE_TYPES)
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


COPY_RECORDS = (
    "COPY ctxstore_records (context, collection, id, seq, pos, doc, raw) FROM STDIN (FORMAT BINARY)"
)
RECORD_TYPES = ["text", "text", "text", "int8", "int4", "bytea", "bytea"]
"""The ``doc`` column goes as bytes in jsonb's binary input format: the version byte 1, then
the JSON text (the record's canonical bytes, parsed by the server; psycopg's jsonb dumper
would serialise a Python object again)."""
JSONB_V1 = b"\x01"


def put_rows(conn: Any, context: str, collection: str, rows: Iterable[Row]) -> None:
    """Make ``rows`` (a batch's records, re-iterable) the current versions of their ids.

    Most batches bring ids the collection does not hold yet, each once: they are COPYed
    straight into ``ctxstore_records`` under a savepoint. An id the collection holds (or one
    given twice) makes that COPY fail; the savepoint is rolled back and the batch goes through
    the stage table and one upsert instead (the newest version of an id wins)."""
    import psycopg

    try:
        with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_RECORDS) as copy:
            copy.set_types(RECORD_TYPES)
            for rid, seq, pos, data in rows:
                copy.write_row((context, collection, rid, seq, pos, JSONB_V1 + data, data))
    except psycopg.errors.UniqueViolation:
        stage_rows(conn, rows)
        upsert_staged(conn, context, collection)


def upsert_staged(conn: Any, context: str, collection: str) -> None:
    """Make the staged rows the current versions of their ids, then empty the stage."""
    conn.execute(UPSERT, (context, collection))
    conn.execute("TRUNCATE ctxstore_stage")


def delete_ids(conn: Any, context: str, collection: str, ids: Iterable[str]) -> None:
    part: list[str] = []
    for rid in ids:
        part.append(rid)
        if len(part) >= DELETE_PART:
            conn.execute(DELETE_IDS, (context, collection, part))
            part = []
    if part:
        conn.execute(DELETE_IDS, (context, collection, part))


def insert_batch(
    conn: Any,
    seq: int,
    context: str,
    collection: str,
    meta: CommitMeta,
    digest: str,
    size: int,
) -> None:
    """The batch row of ``meta`` (its receipt as first committed; ``digest`` and ``size``
    of the body as stored); ``ConflictError`` if the context holds the batch id."""
    receipt = receipt_of(meta._replace(sha256=digest))
    inserted = conn.execute(
        INSERT_BATCH,
        (
            seq,
            context,
            collection,
            meta.batch_id,
            meta.kind,
            receipt.entries,
            receipt.sha256,
            meta.committed_at,
            meta.req,
            meta.entries,
            digest,
            size,
        ),
    ).rowcount
    if inserted != 1:
        raise ConflictError(
            f"batch_id: {meta.batch_id[:80]!r} is already committed in context {context!r}"
        )


def _file_bytes(path: Path, start: int, end: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        left = end - start
        while left > 0:
            chunk = fh.read(min(left, 4 << 20))
            if not chunk:
                raise IntegrityError(f"{path}: ends before byte {end}")
            left -= len(chunk)
            yield chunk


def survivors(path: Path) -> tuple[dict[str, tuple[int, int]], int]:
    """From one verified pass over a log file: ``(batch number, entry number)`` of each
    current record's latest version, and the number of entries in the log."""
    latest: dict[str, tuple[int, int]] = {}
    entries = 0
    for number, batch in enumerate(scan(path)):
        for pos, e in enumerate(batch.entries):
            entries += 1
            if e.data is None:
                latest.pop(e.record_id, None)
            else:
                latest[e.record_id] = (number, pos)
    return latest, entries


def scan(path: Path) -> Iterator[Batch]:
    """The verified batches of a complete log file (a tail is damage here)."""
    log = BatchLog(path)
    found = LogScan(path, log.header().length)
    yield from found
    if found.tail:
        raise IntegrityError(f"{path}: damaged data at byte {found.valid_end}")


def load_log(
    conn: Any,
    context: str,
    collection: str,
    path: Path,
    seqs: list[int] | None,
    *,
    bodies: bool = True,
) -> int:
    """Load the verified log file ``path`` into the tables: with ``seqs`` None, every batch as
    a new row and body (new ``seq`` numbers); with ``seqs``, the bodies of the existing batches
    ``seqs`` (one per batch of the file, in order) are replaced. The collection's records are
    replaced by the current versions the file holds (only they, with ``bodies`` False: a
    rebuild of the index). Returns the batches."""
    if seqs is not None and not bodies:
        return _load_records(conn, context, collection, path, list(seqs))
    numbered: list[int] = []
    for number, batch in enumerate(scan(path)):
        meta = CommitMeta(
            batch.batch_id,
            batch.kind,
            batch.committed_at,
            len(batch.entries),
            batch.sha256,
            _kept_receipt(batch),
            batch.req,
        )
        if seqs is None:
            seq = next_seq(conn)
            size = copy_parts(conn, seq, _file_bytes(path, batch.start, batch.end))
            insert_batch(conn, seq, context, collection, meta, batch.sha256, size)
        else:
            seq = seqs[number] if number < len(seqs) else -1
            conn.execute("DELETE FROM ctxstore_batch_bodies WHERE seq = %s", (seq,))
            size = copy_parts(conn, seq, _file_bytes(path, batch.start, batch.end))
            updated = conn.execute(
                "UPDATE ctxstore_batches SET entries = %s, digest = %s, size = %s"
                " WHERE seq = %s AND batch_id = %s",
                (len(batch.entries), batch.sha256, size, seq, batch.batch_id),
            ).rowcount
            if updated != 1:
                raise IntegrityError(
                    f"{path}: batch {batch.batch_id[:80]!r} is not the collection's batch {seq}"
                )
        numbered.append(seq)
    return _load_records(conn, context, collection, path, numbered)


def _load_records(conn: Any, context: str, collection: str, path: Path, numbered: list[int]) -> int:
    """Replace the collection's records by the current versions of the log file ``path``,
    whose batches are the rows ``numbered`` (their ``seq``, in order)."""
    latest, _ = survivors(path)
    conn.execute(
        "DELETE FROM ctxstore_records WHERE context = %s AND collection = %s",
        (context, collection),
    )

    def rows() -> Iterator[tuple[str, int, int, bytes]]:
        for number, batch in enumerate(scan(path)):
            if number >= len(numbered):
                raise IntegrityError(f"{path}: more batches than the collection has rows")
            for pos, e in enumerate(batch.entries):
                if e.data is not None and latest.get(e.record_id) == (number, pos):
                    yield e.record_id, numbered[number], pos, e.data

    stage_rows(conn, rows())
    upsert_staged(conn, context, collection)
    return len(numbered)


def _kept_receipt(batch: Batch) -> Receipt | None:
    """The receipt a rewritten batch carries (None: the batch is as first committed)."""
    receipt = Receipt(batch.receipt_count, batch.receipt_sha256)
    return None if receipt == (len(batch.entries), batch.sha256) else receipt


__all__ = [
    "delete_ids",
    "insert_batch",
    "load_log",
    "next_seq",
    "put_rows",
    "scan",
    "stage_rows",
    "survivors",
    "upsert_staged",
]
