"""``PostgresBackend``: a store kept in PostgreSQL plus a files URL (docs/api.md, "Scale out").

PostgreSQL (one database per store, one shared ``Database`` pool per open store) holds the
catalogue of contexts and their writer locks (``PgContexts``), the tokens and audit log
(``PgAccess``), the record batches and the query index, and the workflow tracker. Embedding
shards and model files go to the ``files`` URL (``s3://bucket/prefix`` or a directory) as
content-addressed blobs through ``app.backends.objects``; which blob each file key names, and
the parts' documents, are rows in the database (``PgParts``: a file counts once its row
commits, and every host sees it at once). A local working folder (``work``) holds what one
host keeps for itself: verified copies of downloaded blobs, spools of large batches, staging
folders of whole-context operations.

``atomic()`` is one ``Database.transaction()``: every records and tracker write made inside
it by this thread joins that transaction (``Database.transaction`` is re-entrant per thread).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.backends.postgres.access import PgAccess
from app.backends.postgres.catalog import PgContexts
from app.backends.postgres.connect import Database
from app.backends.postgres.files import PgFileStore, PgParts
from app.backends.postgres.install import RecordsInDatabase
from app.backends.postgres.meta import PgMarks, PgMetaStore
from app.backends.postgres.records import PgRecords
from app.backends.postgres.tracker import PgTracker
from app.backends.postgres.tracker_items import ObjectItems
from app.backends.protocols import Records, WorkflowTracker
from app.core.layout import context_dir, object_cache_dir
from app.core.names import check_name
from app.core.urls import redact


class PostgresBackend:
    """The store in the PostgreSQL database ``url`` with its files under ``files``; ``work``
    is this host's working folder for the store."""

    def __init__(
        self,
        url: str,
        *,
        files: str,
        work: Path,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self._url = url
        self.files_url = files
        self.work = work
        self.db = Database(url)
        self.parts = PgParts(self.db, files, object_cache_dir(work), storage_options)
        self._catalog = PgContexts(
            self.db, work, parts=self.parts, records=RecordsInDatabase(self.db)
        )

    def __repr__(self) -> str:
        return f"PostgresBackend({self.url!r}, files={redact(self.files_url)!r})"

    @property
    def url(self) -> str:
        return redact(self._url)

    def records(self, context: str) -> Records:
        name = check_name(context, "context")
        return PgRecords(
            self.db, name, context_dir(self.work, name), self._catalog.context_lock(name)
        )

    def tracker(self) -> WorkflowTracker:
        """The store's ``PgTracker`` (rows in the database, staged items under ``files``)."""
        items = ObjectItems(self.parts.location, self.parts.cache)
        tracker: WorkflowTracker = PgTracker(self.db, items)
        return tracker

    def files(self, context: str, part: str) -> PgFileStore:
        return self.parts.files(context, part)

    def meta(self, context: str, part: str) -> PgMetaStore:
        return self.parts.meta(context, part)

    def trust_marks(self) -> PgMarks:
        """The store's trust marks of pickled models, in the database: a mark signed on one
        host counts on every host sharing the store and the trust key."""
        return self.parts.marks()

    def catalog(self) -> PgContexts:
        """The store's ``PgContexts`` (the same object on every call)."""
        return self._catalog

    def access(self) -> PgAccess:
        return PgAccess(self.db)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction for every records and tracker write of this thread in the block."""
        with self.db.transaction():
            yield

    def close(self) -> None:
        """Close the connection pool (reopened on next use)."""
        self.db.close()


__all__ = ["PostgresBackend"]
