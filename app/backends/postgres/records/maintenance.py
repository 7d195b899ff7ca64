"""``verify`` and ``rebuild`` of a context's records on PostgreSQL.

Both read every collection's log back (``PgRecords.log_file``: the batch bodies in commit
order as a batch-log file, each batch checksum-verified by the embedded backend's reader).
``verify`` then compares the batch rows with their bodies' commit lines and the
current-version table with the versions the log says are current (same bytes, a ``doc``
that is the parse of ``raw``); it reports, never raises, for damage. ``rebuild`` re-derives the
current-version table of every collection from the log in one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from app.backends.postgres.records.apply import load_log, scan, survivors
from app.core.errors import IntegrityError, environmental


class PgRecords(Protocol):
    """What verification and rebuilding use of ``records.PgRecords``."""

    @property
    def name(self) -> str: ...

    def where(self) -> str: ...

    def collections(self) -> list[str]: ...

    def log_file(self, collection: str) -> AbstractContextManager[Path | None]: ...

    def transaction(self, doing: str) -> AbstractContextManager[Any]: ...

    def write_transaction(self, doing: str) -> AbstractContextManager[Any]: ...

    def snapshot(self, sql: str, args: Sequence[Any]) -> Iterator[tuple[Any, ...]]: ...


OtherChecks = Callable[[], tuple[list[str], list[str]]]
MAX_ROW_PROBLEMS = 20

BATCH_ROWS = (
    "SELECT seq, batch_id, kind, committed_at, req, entries, digest, n, sha256"
    " FROM ctxstore_batches WHERE context = %s AND collection = %s ORDER BY seq"
)
RECORD_ROWS = (
    "SELECT id, seq, pos, sha256(raw), doc = convert_from(raw, 'UTF8')::jsonb"
    " FROM ctxstore_records WHERE context = %s AND collection = %s ORDER BY seq, pos"
)


def _damage(exc: Exception) -> str:
    """The problem ``exc`` reports; an I/O or connection error is raised instead."""
    raise_instead = environmental(exc)
    if raise_instead is not None:
        raise raise_instead from exc
    return str(exc)


def _batch_problems(where: str, rows: list[tuple[Any, ...]], path: Path) -> list[int]:
    """The ``seq`` of each batch row, in order, after checking each against the commit line
    of its body; ``IntegrityError`` for the first disagreement."""
    seqs: list[int] = []
    found = scan(path)
    for row in rows:
        seq, batch_id, kind, at, req, entries, digest, n, sha256 = row
        batch = next(found, None)
        if batch is None:
            raise IntegrityError(f"{where}: batch {batch_id[:80]!r} (seq {seq}) has no body")
        got = (batch.batch_id, batch.kind, batch.committed_at, batch.req, len(batch.entries))
        receipt = (batch.receipt_count, batch.receipt_sha256)
        if got != (batch_id, kind, at, req, entries) or batch.sha256 != digest:
            raise IntegrityError(
                f"{where}: the row of batch {batch_id[:80]!r} (seq {seq}) does not match "
                "its body's commit line"
            )
        if receipt != (n, sha256):
            raise IntegrityError(f"{where}: the receipt of batch {batch_id[:80]!r} differs")
        seqs.append(int(seq))
    if next(found, None) is not None:
        raise IntegrityError(f"{where}: the log holds a batch without a row")
    return seqs


def _current(path: Path, seqs: list[int]) -> Iterator[tuple[int, int, str, bytes]]:
    """``(seq, pos, id, SHA-256 of the record)`` of every current version in the log file, in
    commit order (what the index must hold, in its ``(seq, pos)`` order)."""
    latest, _ = survivors(path)
    for number, batch in enumerate(scan(path)):
        for pos, e in enumerate(batch.entries):
            if e.data is not None and latest.get(e.record_id) == (number, pos):
                yield seqs[number], pos, e.record_id, hashlib.sha256(e.data).digest()


def _check_collection(rec: PgRecords, collection: str, path: Path, where: str) -> list[str]:
    """Problems of the collection's index rows against its log: both walked once, side by
    side in commit order (memory: the log's id -> newest entry map only)."""
    with rec.transaction("verifying the records") as conn:
        rows = conn.execute(BATCH_ROWS, (rec.name, collection)).fetchall()
    seqs = _batch_problems(where, rows, path)
    problems: list[str] = []
    wanted = _current(path, seqs)
    held = rec.snapshot(RECORD_ROWS, (rec.name, collection))
    want = next(wanted, None)
    row = next(held, None)
    while want is not None or row is not None:
        if row is None or (want is not None and want[:2] < (int(row[1]), int(row[2]))):
            assert want is not None
            problems.append(f"{where}: the index misses {want[2][:80]!r}")
            want = next(wanted, None)
            continue
        rid, seq, pos, digest, doc_ok = row
        if want is None or want[:2] > (int(seq), int(pos)):
            problems.append(f"{where}: the index holds {rid[:80]!r}, which the log does not")
        elif want[2] != rid or want[3] != bytes(digest):
            problems.append(f"{where}: the index row of {rid[:80]!r} differs from the log")
        elif not doc_ok:
            problems.append(f"{where}: the index row of {rid[:80]!r} has a damaged doc")
        if want is not None and want[:2] == (int(seq), int(pos)):
            want = next(wanted, None)
        row = next(held, None)
    if len(problems) > MAX_ROW_PROBLEMS:
        rest = len(problems) - MAX_ROW_PROBLEMS
        problems = [*problems[:MAX_ROW_PROBLEMS], f"{where}: and {rest} more index problems"]
    if problems:
        problems.append(f"{where}: repair the index with rebuild_index()")
    return problems


def verify(rec: PgRecords) -> tuple[list[str], list[str]]:
    """``(problems, checked)`` over every collection's log and index rows (the caller holds
    the writer lock)."""
    problems: list[str] = []
    checked: list[str] = []
    for collection in rec.collections():
        where = f"{rec.where()} collection {collection!r}"
        checked.append(where)
        try:
            with rec.log_file(collection) as path:
                if path is not None:
                    problems += _check_collection(rec, collection, path, where)
        except Exception as exc:  # damage is reported, not raised
            text = _damage(exc)
            problems.append(text if text.startswith(rec.where()) else f"{where}: {text}")
    return problems, checked


def rebuild(rec: PgRecords) -> None:
    """Re-derive every collection's current records from its log, in one transaction (the
    caller holds the writer lock). ``IntegrityError`` for a damaged log (nothing changed)."""
    with contextlib.ExitStack() as stack:
        files: list[tuple[str, Path]] = []
        for collection in rec.collections():
            path = stack.enter_context(rec.log_file(collection))
            if path is not None:
                for _ in scan(path):  # verified before anything changes
                    pass
                files.append((collection, path))
        with rec.write_transaction("rebuilding the index") as conn:
            conn.execute("DELETE FROM ctxstore_records WHERE context = %s", (rec.name,))
            for collection, path in files:
                seqs = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT seq FROM ctxstore_batches WHERE context = %s"
                        " AND collection = %s ORDER BY seq",
                        (rec.name, collection),
                    )
                ]
                load_log(conn, rec.name, collection, path, seqs, bodies=False)


__all__ = ["OtherChecks", "rebuild", "verify"]
