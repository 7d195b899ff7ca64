"""Part files on PostgreSQL + an object store: names in a table, contents as blobs.

PERSISTENCE_LAYER_STRATEGY.md sections 9.1 ("File store") and 11 ("Files"). A file's bytes are
uploaded under a content-addressed name (``layout.object_blob``: ``<base>/<context>/<part>/
blobs/<sha256>``) to the ``files`` URL (S3 through s3fs, or a directory); the row
``ctxstore_files(context, part, item, name, sha256, size)`` is what makes the file exist. The
transaction that inserts the row re-checks that the blob exists, holding a shared advisory lock
on the part that ``collect`` (gc) holds exclusively while it deletes blobs: a file counts only
once its row commits, and gc can never delete a blob between that check and the commit. The
object store keeps only blobs: no name objects, no documents (``PgMetaStore`` keeps those in
the database), so every host that shares the database sees the same files at once.

``PgParts`` hands out each context part's ``PgFileStore`` and ``PgMetaStore`` over one shared
``Database`` and one ``Location``; ``collect`` removes the blobs no row names once older than
a grace period (an upload whose row never committed, a deleted or dropped file).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from app.backends.local.backend import part_files
from app.backends.local.files import check_item, split_key
from app.backends.objects.cache import BlobCache
from app.backends.objects.location import Location
from app.backends.postgres.connect import Database
from app.backends.postgres.files_schema import PartsTables, gc_lock_key
from app.backends.postgres.meta import PgMarks, PgMetaStore
from app.backends.protocols import FileWriter, StoredFile
from app.core.errors import ConflictError, IntegrityError, InvalidInput, NotFoundError
from app.core.layout import OBJECT_BLOBS, object_blob, object_part
from app.core.names import check_name
from app.core.nofollow import open_regular
from app.formats.hashio import sha256_fd

SQL_ROW = (
    "SELECT sha256, size FROM ctxstore_files"
    " WHERE context = %s AND part = %s AND item = %s AND name = %s"
)
SQL_INSERT = (
    "INSERT INTO ctxstore_files (context, part, item, name, sha256, size)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
SQL_LIST = (
    "SELECT name FROM ctxstore_files WHERE context = %s AND part = %s AND item = %s"
    ' ORDER BY name COLLATE "C"'
)
SQL_DELETE = (
    "DELETE FROM ctxstore_files WHERE context = %s AND part = %s AND item = %s AND name = %s"
)
SQL_RETAIN = (
    "DELETE FROM ctxstore_files WHERE context = %s AND part = %s AND item = %s"
    " AND NOT (name = ANY(%s))"
)
SQL_REFERENCED = "SELECT DISTINCT sha256 FROM ctxstore_files WHERE context = %s AND part = %s"
SQL_BYTES = (
    "SELECT (SELECT coalesce(sum(size), 0) FROM ctxstore_files WHERE context = %s AND part = %s)"
    " + (SELECT coalesce(sum(octet_length(body)), 0) FROM ctxstore_docs"
    " WHERE context = %s AND part = %s)"
)
SQL_SHARED_LOCK = "SELECT pg_advisory_xact_lock_shared(%s)"
SHA256_NAME = re.compile(r"[0-9a-f]{64}")
SQL_LOCK = "SELECT pg_advisory_xact_lock(%s)"


class PgParts:
    """``files(context, part)`` / ``meta(context, part)`` of a store whose state is in the
    PostgreSQL database ``db`` and whose file contents are blobs under ``files_url``
    (``s3://bucket/prefix``, ``file:///dir`` or a path); verified copies are cached in
    ``cache``."""

    def __init__(
        self,
        db: Database,
        files_url: str,
        cache: Path,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.db = db
        self.location = Location(files_url, storage_options)
        self.cache = BlobCache(cache, self.location)
        self.tables = PartsTables(db)

    def __repr__(self) -> str:
        return f"PgParts({self.db.where()!r}, {self.location.shown!r})"

    def files(self, context: str, part: str) -> PgFileStore:
        return PgFileStore(self, check_name(context, "context"), part)

    def meta(self, context: str, part: str) -> PgMetaStore:
        return PgMetaStore(self.tables, check_name(context, "context"), part)

    def marks(self) -> PgMarks:
        """The store's trust marks (shared by every host)."""
        return PgMarks(self.tables)

    # -- gc -------------------------------------------------------------------------------

    def collect(self, older_than: float) -> list[str]:
        """Remove every blob under the files URL that no row names and that was last modified
        before ``older_than`` (POSIX seconds; the grace period protects an upload whose row is
        still being committed); returns the removed objects' names (URL, password redacted).
        Each part's sweep holds that part's gc lock, so a row committing meanwhile either sees
        its blob gone (and fails) or keeps it."""
        return self.remove_garbage([url for url, _size in self.garbage(older_than)])

    def _stored_parts(self) -> list[tuple[str, str]]:
        """``(context, part)`` of every part folder under the files URL (dropped contexts'
        included: their rows are gone, so all their blobs are unreferenced)."""
        base = self.location.base
        return [
            (context, part)
            for context, kind in self.location.entries(base)
            if kind == "directory"
            for part, kind2 in self.location.entries(f"{base}/{context}")
            if kind2 == "directory"
        ]

    def garbage(self, older_than: float) -> list[tuple[str, int]]:
        """``(url, bytes)`` of the blobs ``collect`` would remove now (no row names them, last
        modified before ``older_than``), sorted; reads only (``Store.gc``'s dry run).
        ``remove_garbage`` removes exactly these, re-checking each under its part's gc lock."""
        out: list[tuple[str, int]] = []
        for context, part in self._stored_parts():
            prefix = object_part(self.location.base, context, part)
            blobs = [  # digests only: an upload's temporary file is no blob
                sha
                for sha, kind in self.location.entries(f"{prefix}/{OBJECT_BLOBS}")
                if kind == "file" and SHA256_NAME.fullmatch(sha)
            ]
            if not blobs:
                continue
            named: set[str] = set()
            with self.tables.reading(f"listing files of {context}/{part}") as conn:
                if conn is not None:
                    rows = conn.execute(SQL_REFERENCED, (context, part)).fetchall()
                    named = {str(r[0]) for r in rows}
            for sha in blobs:
                blob = object_blob(prefix, sha)
                if sha in named:
                    continue
                stamp = self.location.stamp_if_present(blob)
                if stamp is not None and stamp[0] < older_than:
                    out.append((self.location.name(blob), stamp[1]))
        return out

    def remove_garbage(self, paths: list[str]) -> list[str]:
        """Remove the blobs ``garbage`` listed (by their URLs), each part under its gc lock,
        skipping any that a row has named since; returns those removed."""
        removed: list[str] = []
        shown = self.location.shown
        by_part: dict[tuple[str, str], list[str]] = {}
        for url in paths:
            rest = url[len(shown) :].strip("/").split("/") if url.startswith(shown) else []
            if len(rest) == 4 and rest[2] == OBJECT_BLOBS:
                by_part.setdefault((rest[0], rest[1]), []).append(rest[3])
        for (context, part), digests in sorted(by_part.items()):
            prefix = object_part(self.location.base, context, part)
            with self.tables.writing(f"removing unreferenced files of {context}/{part}") as conn:
                conn.execute(SQL_LOCK, (gc_lock_key(context, part),))
                named = {str(r[0]) for r in conn.execute(SQL_REFERENCED, (context, part))}
                for sha in digests:
                    blob = object_blob(prefix, sha)
                    if sha not in named and self.location.remove(blob):
                        removed.append(self.location.name(blob))
        return removed


class PgFileStore:
    """One context part's files (``FileStore`` contract): rows in ``ctxstore_files``, bytes
    in content-addressed blobs."""

    def __init__(self, parts: PgParts, context: str, part: str) -> None:
        kind = part_files(part)
        self.parts = parts
        self.context = context
        self.part = part
        self.location = parts.location
        self.cache = parts.cache
        self.prefix = object_part(self.location.base, context, part)
        self.pattern, self.what, self.documents = kind.files, kind.what, kind.documents

    def __repr__(self) -> str:
        return f"PgFileStore({self.parts.db.where()!r}, {self.context!r}, {self.part!r})"

    def _is_file(self, name: str) -> bool:
        return self.pattern.fullmatch(name) is not None and not self.documents.fullmatch(name)

    def _split(self, key: str) -> tuple[str, str]:
        item, name = split_key(key, self.pattern)
        if not self._is_file(name):
            raise InvalidInput(f"key: {key[:120]!r} names a document, not a file", argument="key")
        return item, name

    def shown(self, key: str) -> str:
        """How messages name the file ``key`` (database URL without password)."""
        return f"{self.parts.db.where()}#{self.context}/{self.part}/{key}"

    def blob(self, sha256: str) -> str:
        """Where the blob with this digest lives."""
        return object_blob(self.prefix, sha256)

    def _row(self, key: str) -> tuple[str, int] | None:
        item, name = self._split(key)
        with self.parts.tables.reading(f"reading {self.shown(key)}") as conn:
            if conn is None:
                return None
            row = conn.execute(SQL_ROW, (self.context, self.part, item, name)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def put(self, key: str, write: FileWriter) -> StoredFile:
        item, name = self._split(key)
        if self._row(key) is not None:
            raise ConflictError(f"{self.shown(key)}: a stored {self.what} is never replaced")
        self.cache.folder.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".put-", dir=self.cache.folder))
        try:
            path = folder / name
            write(path)
            fd = open_regular(path)
            try:
                sha, size = sha256_fd(fd), os.fstat(fd).st_size
            finally:
                os.close(fd)
            blob = self.blob(sha)
            if not self.location.exists(blob):
                self.location.upload(path, blob)  # durable before the row that names it
            self.cache.adopt(path, sha)
            self.commit_row(item, name, sha, size)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return StoredFile(key=key, size=size, sha256=sha)

    def commit_row(self, item: str, name: str, sha256: str, size: int) -> None:
        """Insert the row naming an uploaded blob; the transaction re-checks that the blob
        exists under the part's shared gc lock (``IntegrityError`` if it is gone)."""
        key = f"{item}/{name}"
        with self.parts.tables.writing(f"recording {self.shown(key)}") as conn:
            conn.execute(SQL_SHARED_LOCK, (gc_lock_key(self.context, self.part),))
            if not self.location.exists(self.blob(sha256)):
                raise IntegrityError(
                    f"{self.location.name(self.blob(sha256))}: the uploaded object is missing; "
                    f"{self.shown(key)} is not recorded"
                )
            inserted = conn.execute(
                SQL_INSERT, (self.context, self.part, item, name, sha256, size)
            ).rowcount
        if inserted != 1:
            raise ConflictError(f"{self.shown(key)}: a stored {self.what} is never replaced")

    def local_path(self, key: str) -> Path:
        found = self._row(key)
        if found is None:
            raise NotFoundError(f"{self.shown(key)}: {self.what} file is missing")
        sha, size = found
        return self.cache.fetch(self.blob(sha), sha, size)

    def open(self, key: str) -> int:
        return open_regular(self.local_path(key))

    def check(self, key: str, size: int, sha256: str) -> str | None:
        shown = self.shown(key)
        found = self._row(key)
        if found is None:
            return f"{shown}: {self.what} file is missing"
        return self.cache.check(self.blob(found[0]), found[0], size, sha256, shown, self.what)

    def list(self, item: str) -> list[str]:
        check_item(item)
        with self.parts.tables.reading(f"listing {self.shown(item)}") as conn:
            if conn is None:
                return []
            rows = conn.execute(SQL_LIST, (self.context, self.part, item)).fetchall()
        return [f"{item}/{r[0]}" for r in rows if self._is_file(str(r[0]))]

    def delete(self, key: str) -> bool:
        item, name = self._split(key)
        with self.parts.tables.reading(f"deleting {self.shown(key)}") as conn:
            if conn is None:
                return False
            return bool(conn.execute(SQL_DELETE, (self.context, self.part, item, name)).rowcount)

    def retain(self, item: str, keep: set[str]) -> None:
        check_item(item)
        names = [k.partition("/")[2] for k in keep if k.partition("/")[0] == item]
        with self.parts.tables.reading(f"removing files of {self.shown(item)}") as conn:
            if conn is not None:
                conn.execute(SQL_RETAIN, (self.context, self.part, item, names))

    def stored_bytes(self) -> int:
        """The bytes of the part's files and documents (what the embedded part folder would
        weigh), summed by the database."""
        with self.parts.tables.reading(f"measuring {self.shown('')}") as conn:
            if conn is None:
                return 0
            row = conn.execute(SQL_BYTES, (self.context, self.part) * 2).fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    def referenced(self) -> set[str]:
        """The digests of the blobs some row of this part names."""
        with self.parts.tables.reading(f"listing {self.shown('')}") as conn:
            if conn is None:
                return set()
            rows = conn.execute(SQL_REFERENCED, (self.context, self.part)).fetchall()
        return {str(r[0]) for r in rows}


__all__ = ["PgFileStore", "PgParts"]
