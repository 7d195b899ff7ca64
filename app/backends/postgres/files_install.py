"""Whole-context moves of part files on PostgreSQL: loading a staged context's parts into the
tables (``install``) and forgetting a dropped context's rows (``drop``).

A staged context (import, merge, ``save_context``) is a local folder in the embedded layout
(``<part>/<item>/<file or document>``). ``upload_staged`` uploads every part file of it as a
content-addressed blob of the target context (durable before any row names it; a blob already
there is not uploaded again) and reads its documents; ``replace_rows`` then, inside the
caller's install transaction, deletes the context's old rows and inserts the new ones,
re-checking under the parts' gc locks that every blob exists. Readers on every host see the
old files and documents or the new ones, never a mix; a crash between the uploads and the
commit leaves only unreferenced blobs, which gc removes after its grace period.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.backends.local.backend import PARTS
from app.backends.postgres.files import PgParts
from app.backends.postgres.files_schema import DDL, PART, SCHEMA_VERSION, gc_lock_key
from app.backends.postgres.schema import ensure_schema, schema_version
from app.core.errors import IntegrityError, io_error
from app.core.layout import object_blob, object_part
from app.core.names import is_valid_name
from app.core.nofollow import entries, open_regular
from app.formats.hashio import sha256_fd

SQL_DELETE_FILES = "DELETE FROM ctxstore_files WHERE context = %s"
SQL_DELETE_DOCS = "DELETE FROM ctxstore_docs WHERE context = %s"
SQL_INSERT_FILE = (
    "INSERT INTO ctxstore_files (context, part, item, name, sha256, size)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
SQL_INSERT_DOC = (
    "INSERT INTO ctxstore_docs (context, part, item, name, body) VALUES (%s, %s, %s, %s, %s)"
)
SQL_SHARED_LOCK = "SELECT pg_advisory_xact_lock_shared(%s)"
SQL_MARK = "INSERT INTO ctxstore_trust (sha256, mark) VALUES (%s, %s) ON CONFLICT DO NOTHING"
MARK_BYTES = 64  # a hex HMAC-SHA256 (app.managers.models.trust)


@dataclass
class StagedParts:
    """What a staged context's parts hold, ready to be recorded: file rows (their blobs
    uploaded) and documents."""

    files: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    """``(part, item, name, sha256, size)``"""
    docs: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    """``(part, item, name, body)``"""


def _digest(path: Path) -> tuple[str, int]:
    try:
        fd = open_regular(path)
    except FileNotFoundError as exc:
        raise io_error("reading", path, exc) from exc
    try:
        return sha256_fd(fd), os.fstat(fd).st_size
    finally:
        os.close(fd)


def upload_staged(parts: PgParts, context: str, staged: Path) -> StagedParts:
    """Upload the part files of the staged folder ``staged`` as blobs of ``context`` and read
    its documents (nothing is recorded yet). Names no part keeps are ignored (the import
    checks refused anything else already); a link anywhere is ``IntegrityError``."""
    out = StagedParts()
    location = parts.location
    for part, kind in sorted(PARTS.items()):
        prefix = object_part(location.base, context, part)
        for item_entry in entries(staged / part):
            if not is_valid_name(item_entry.name):
                continue
            if not item_entry.is_dir(follow_symlinks=False):
                raise IntegrityError(f"{item_entry.path}: not a folder (damaged staged context)")
            item = item_entry.name
            for entry in entries(Path(item_entry.path)):
                path = Path(entry.path)
                if kind.documents.fullmatch(entry.name):
                    fd = open_regular(path)
                    try:
                        with os.fdopen(fd, "rb", closefd=False) as fh:
                            out.docs.append((part, item, entry.name, fh.read()))
                    finally:
                        os.close(fd)
                elif kind.files.fullmatch(entry.name):
                    sha, size = _digest(path)
                    blob = object_blob(prefix, sha)
                    if not location.exists(blob):
                        location.upload(path, blob)
                    out.files.append((part, item, entry.name, sha, size))
    return out


def tables_exist(conn: Any) -> bool:
    """Whether the part tables were ever created in this database."""
    return schema_version(conn, PART) is not None


def forget_rows(conn: Any, context: str) -> None:
    """Delete every file and document row of ``context`` in the caller's transaction (its
    blobs become unreferenced: gc removes them after the grace period)."""
    if tables_exist(conn):
        conn.execute(SQL_DELETE_FILES, (context,))
        conn.execute(SQL_DELETE_DOCS, (context,))


def replace_rows(conn: Any, parts: PgParts, context: str, staged: StagedParts) -> None:
    """In the caller's transaction: the context's rows become exactly ``staged``'s, after
    re-checking (under each part's shared gc lock) that every uploaded blob exists."""
    ensure_schema(conn, PART, DDL, SCHEMA_VERSION)
    location = parts.location
    for part in sorted({row[0] for row in staged.files}):
        conn.execute(SQL_SHARED_LOCK, (gc_lock_key(context, part),))
    for part, _, _, sha, _ in staged.files:
        blob = object_blob(object_part(location.base, context, part), sha)
        if not location.exists(blob):
            raise IntegrityError(f"{location.name(blob)}: the uploaded object is missing")
    forget_rows(conn, context)
    with conn.cursor() as cur:
        if staged.files:
            cur.executemany(SQL_INSERT_FILE, [(context, *row) for row in staged.files])
        if staged.docs:
            cur.executemany(SQL_INSERT_DOC, [(context, *row) for row in staged.docs])


def share_local_marks(conn: Any, trust_dir: Path, staged: StagedParts) -> int:
    """In the caller's transaction: the trust marks this host's trust folder holds for the
    staged files (written there by a trusted staged context: ``save_context`` of a pickle)
    become rows of ``ctxstore_trust``, so every host sees them; an existing row is kept.
    Only mark-shaped files are copied; every reader still checks the signature. Returns how
    many were offered."""
    offered = 0
    for sha in sorted({row[3] for row in staged.files}):
        try:
            fd = open_regular(trust_dir / sha)
        except (FileNotFoundError, IntegrityError):
            continue
        try:
            mark = os.read(fd, MARK_BYTES + 1)
        finally:
            os.close(fd)
        if len(mark) == MARK_BYTES:
            conn.execute(SQL_MARK, (sha, mark))
            offered += 1
    return offered


__all__ = [
    "StagedParts",
    "forget_rows",
    "replace_rows",
    "share_local_marks",
    "tables_exist",
    "upload_staged",
]
