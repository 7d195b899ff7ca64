"""``LogCalls``: ``PgRecords``' calls that read "the log" (the batch bodies in commit
order, read back into a local batch-log file and read with the embedded backend's reader) and
that replace a collection's batches whole (``ingest_log``, ``compact``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from app.backends.local.records.collection import new_generation
from app.backends.local.records.logio import spooled, verified_batches
from app.backends.postgres.records import logread
from app.backends.postgres.records.apply import (
    load_log,
    survivors,
)
from app.backends.postgres.records.base import PgBase
from app.backends.postgres.records.bodies import read_log
from app.backends.postgres.records.search import FEW_IDS, versions_by_search
from app.core.errors import ConflictError, IntegrityError, NotFoundError, StorageError
from app.core.schemas import (
    CompactionReport,
    LatestCommit,
    RecordVersion,
)
from app.formats.batchlog import BatchLog


class LogCalls(PgBase):
    """``log_file``, ``write_log``, ``history``, ``latest_commits``, ``current_records``,
    ``write_compacted``, ``ingest_log``, ``compact``."""

    # -- reading the log -----------------------------------------------------------------

    @contextlib.contextmanager
    def log_file(self, collection: str) -> Iterator[Path | None]:
        """The collection's log read back into a local batch-log file (None: no log); damage
        found in it is named as the collection's log in the database, not as the file."""
        self.ready()
        with self.spool_folder() as folder:
            fd, name = tempfile.mkstemp(dir=folder)
            path = Path(name)
            with self.transaction("reading the log") as conn, os.fdopen(fd, "wb") as fh:
                row = self._row(conn, collection)
                if row is not None:
                    read_log(conn, self.name, collection, row[2], fh)
            try:
                yield None if row is None else path
            except IntegrityError as exc:
                where = f"{self.where()}: the log of {collection!r}"
                raise IntegrityError(str(exc).replace(str(path), where)) from None

    def write_log(self, collection: str, fh: IO[bytes]) -> int:
        self.ready()
        with self.transaction("reading the log") as conn:
            row = self._row(conn, collection)
            if row is None:
                raise NotFoundError(f"collection {collection!r} not found in {self.name!r}")
            return read_log(conn, self.name, collection, row[2], fh)

    def _searched(
        self, collection: str, wanted: list[str]
    ) -> dict[str, list[RecordVersion]] | None:
        """The versions of a few ids found by searching a large log (None: read it whole)."""
        if not 0 < len(wanted) <= FEW_IDS:
            return None
        import psycopg

        self.ready()
        where = f"{self.where()}: the log of {collection!r}"
        try:
            with self.spool_folder() as folder:
                return versions_by_search(self._db, self.name, collection, wanted, folder, where)
        except psycopg.Error as exc:
            raise StorageError(f"reading {where}: {exc}") from None

    def history(self, collection: str, ids: Iterable[str]) -> dict[str, list[RecordVersion]]:
        wanted = list(dict.fromkeys(ids))
        found = self._searched(collection, wanted)
        if found is not None:
            return found
        with self.log_file(collection) as path:
            if path is None:
                return {rid: [] for rid in wanted}
            return logread.versions(path, collection, wanted)

    def latest_commits(self, collection: str, ids: Iterable[str]) -> dict[str, LatestCommit]:
        wanted = list(dict.fromkeys(ids))
        with self.writer_lock.hold():
            found = self._searched(collection, wanted)
            if found is not None:
                return {
                    rid: LatestCommit(vs[-1].committed_at, vs[-1].deleted)
                    for rid, vs in found.items()
                    if vs
                }
            with self.log_file(collection) as path:
                return {} if path is None else logread.latest_commits(path, wanted)

    def current_records(self, collection: str) -> list[dict[str, Any]]:
        with self.writer_lock.hold(), self.log_file(collection) as path:
            return [] if path is None else list(logread.current_records(path))

    def write_compacted(self, collection: str, fh: IO[bytes]) -> int:
        with self.log_file(collection) as path:
            if path is None:
                raise NotFoundError(f"collection {collection!r} not found in {self.name!r}")
            return logread.write_compacted(path, fh, new_generation())[1]

    # -- whole collections ----------------------------------------------------------------

    def ingest_log(self, collection: str, fh: IO[bytes]) -> int:
        self.ready()
        where = f"{self.where()} collection {collection!r}"
        with self.spool_folder() as folder, spooled(fh, folder, "ingest") as path:
            for _ in verified_batches(path, where):
                pass
            generation = BatchLog(path).header().generation
            with self.write_transaction(f"ingesting {collection!r}") as conn:
                taken = conn.execute(
                    "SELECT 1 FROM ctxstore_batches WHERE context = %s AND collection = %s LIMIT 1",
                    (self.name, collection),
                ).fetchone()
                if taken is not None:
                    raise ConflictError(
                        f"{where}: the collection is not empty; a log is only ingested into "
                        "an empty collection"
                    )
                self._ensure_collection(conn, collection)
                conn.execute(
                    "UPDATE ctxstore_collections SET generation = %s"
                    " WHERE context = %s AND collection = %s",
                    (generation, self.name, collection),
                )
                return load_log(conn, self.name, collection, path, None)

    def compact(self, collection: str) -> CompactionReport:
        with self.log_file(collection) as path:
            if path is None:
                return CompactionReport(
                    collection=collection,
                    records_before=0,
                    records_after=0,
                    bytes_before=0,
                    bytes_after=0,
                )
            bytes_before = path.stat().st_size
            latest, before = survivors(path)
            generation = None
            new = path
            if before != len(latest):  # superseded versions or tombstones to drop
                generation = new_generation()
                new = path.with_name(path.name + ".compacted")
                with open(new, "wb") as fh:
                    logread.write_compacted(path, fh, generation)
            with self.write_transaction(f"compacting {collection!r}") as conn:
                seqs = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT seq FROM ctxstore_batches WHERE context = %s AND collection = %s"
                        " ORDER BY seq",
                        (self.name, collection),
                    )
                ]
                load_log(conn, self.name, collection, new, seqs)
                if generation is not None:
                    conn.execute(
                        "UPDATE ctxstore_collections SET generation = %s"
                        " WHERE context = %s AND collection = %s",
                        (generation, self.name, collection),
                    )
            return CompactionReport(
                collection=collection,
                records_before=before,
                records_after=len(latest),
                bytes_before=bytes_before,
                bytes_after=new.stat().st_size,
            )


__all__ = ["LogCalls"]
