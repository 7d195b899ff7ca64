"""A collection's whole log as a stream: ``write_log`` / ``ingest_log``
(docs/api.md, "Whole contexts").

Whole-context transfer moves collections between stores, whatever their backends, as batch-log
streams (``app.formats.batchlog``): a header line, then every committed batch byte-exact as
committed. Here are the helpers both record backends share: copying bytes out
(``copy_bytes``), taking a stream in as a named local file (``spooled``: the batch-log reader
verifies files, not streams) and verifying every batch of such a file (``verified_batches``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from app.core.errors import ConflictError, IntegrityError, io_error
from app.formats.batchlog import Batch, BatchLog, LogScan

COPY_CHUNK = 4 << 20


def copy_bytes(path: Path, end: int, fh: IO[bytes]) -> int:
    """Write bytes ``[0, end)`` of the file ``path`` to ``fh``; returns ``end``."""
    try:
        src = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise io_error("reading", path, exc) from exc
    done = 0
    with src:
        while done < end:
            try:
                chunk = src.read(min(COPY_CHUNK, end - done))
            except OSError as exc:
                raise io_error("reading", path, exc) from exc
            if not chunk:
                raise IntegrityError(f"{path}: the log ends at byte {done}, before {end}")
            fh.write(chunk)
            done += len(chunk)
    return done


@contextlib.contextmanager
def spooled(fh: IO[bytes], folder: Path, prefix: str) -> Iterator[Path]:
    """The stream ``fh`` copied into a new dot file of ``folder`` (fsync'd), removed after the
    block unless the block renamed it away."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{prefix}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise io_error("writing", folder, exc) from exc
    path = Path(name)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := fh.read(COPY_CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise io_error("writing", path, exc) from exc
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def verified_batches(path: Path, where: str) -> Iterator[Batch]:
    """Every batch of the batch-log file ``path``, checksum verified, in order.
    ``IntegrityError`` naming ``where`` for a damaged header or batch, a torn tail or a batch
    id given twice (nothing should be written from such a stream)."""
    log = BatchLog(path)
    try:
        header = log.header()
    except IntegrityError as exc:
        raise IntegrityError(f"{where}: not a batch log ({exc})") from None
    scan = LogScan(path, header.length)
    seen: set[str] = set()
    try:
        for batch in scan:
            if batch.batch_id in seen:
                raise IntegrityError(f"{where}: batch id {batch.batch_id[:80]!r} given twice")
            seen.add(batch.batch_id)
            yield batch
    except IntegrityError as exc:
        raise IntegrityError(f"{where}: {exc}") from None
    if scan.tail:
        raise IntegrityError(f"{where}: damaged or incomplete data at byte {scan.valid_end}")


def refuse_taken(where: str, batch_id: str) -> ConflictError:
    """The error for a batch id of an ingested log that the context already holds."""
    return ConflictError(f"{where}: batch id {batch_id[:80]!r} is already taken in the context")
