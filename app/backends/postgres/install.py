"""Whole-context moves of records on PostgreSQL: what ``PgContexts`` does with a context's
records when the records live in the database (``PgRecords``).

A staged context (import, merge, ``save_context``) is a local folder in the embedded layout:
``context.json`` (the collection catalogue) and one batch log per collection. ``load_staged``
replaces, inside the caller's install transaction, everything the database holds for the
context's records (collections, batches and their bodies, the current-version table) by the
staged logs, byte-exact (``app.backends.postgres.records.apply.load_log``: the same batch ids,
receipts and commit times), with the catalogue's schemas and indexed fields. Readers on every
host see the old records or the new ones, never a mix.

``catalog_document`` is the reverse for export: the context's catalogue, built from the
``ctxstore_collections`` rows, in the embedded ``context.json`` format.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import orjson

from app.backends.local.records.catalog import CONTEXT_FORMAT
from app.backends.postgres.connect import Database
from app.backends.postgres.records.apply import load_log
from app.backends.postgres.records.records import PgRecords
from app.backends.postgres.records.tables import (
    DDL,
    DDL_LOCK,
    PART,
    VERSION,
    forget_context,
    index_name,
    index_sql,
)
from app.backends.postgres.schema import ensure_schema, schema_version
from app.core import layout
from app.core.errors import IntegrityError
from app.core.names import is_valid_name
from app.core.schemas import BUILTIN_INDEXES
from app.formats.batchlog import BatchLog

SQL_COLLECTION = (
    "INSERT INTO ctxstore_collections (context, collection, schema, indexes, generation)"
    " VALUES (%s, %s, %s, %s::jsonb, %s)"
)
SQL_COLLECTIONS = (
    "SELECT collection, schema, indexes FROM ctxstore_collections WHERE context = %s"
    ' ORDER BY collection COLLATE "C"'
)


def _staged_catalog(staged: Path) -> dict[str, Any]:
    path = layout.catalog(staged)
    try:
        data = orjson.loads(path.read_bytes())
        collections = data["collections"]
        assert isinstance(collections, dict)
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
        raise IntegrityError(f"{path}: damaged context description") from None
    return collections


def _ensure_indexes(conn: Any, specs: list[tuple[str, ...]]) -> None:
    if not specs:
        return
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
    for spec in specs:
        found = conn.execute("SELECT to_regclass(%s)", (index_name(spec),)).fetchone()
        if found is None or found[0] is None:
            conn.execute(index_sql(spec))


def load_staged(conn: Any, context: str, staged: Path) -> int:
    """Make the staged folder's logs the records of ``context`` (in the caller's transaction:
    the old ones are deleted first); returns the batches loaded."""
    ensure_schema(conn, PART, DDL, VERSION)
    forget_context(conn, context)
    catalog = _staged_catalog(staged)
    batches = 0
    indexes: list[tuple[str, ...]] = []
    for path in sorted(staged.iterdir()):
        collection = layout.collection_of(path.name)
        if collection is None or not is_valid_name(collection) or not path.is_file():
            continue
        entry = catalog.get(collection)
        entry = entry if isinstance(entry, dict) else {}
        defined = [list(i) for i in entry.get("indexes", []) if isinstance(i, list)]
        schema = entry.get("schema") if isinstance(entry.get("schema"), str) else None
        generation = BatchLog(path).header().generation
        conn.execute(
            SQL_COLLECTION,
            (context, collection, schema, orjson.dumps(defined).decode(), generation),
        )
        batches += load_log(conn, context, collection, path, None)
        indexes += [tuple(i) for i in BUILTIN_INDEXES.get(collection, ())]
        indexes += [tuple(str(f) for f in i) for i in defined]
    _ensure_indexes(conn, list(dict.fromkeys(indexes)))
    return batches


def catalog_document(conn: Any, context: str, stored: bytes | None) -> bytes:
    """The catalogue of ``context`` in the embedded ``context.json`` format, from its
    collections' rows (``stored``: the catalogue kept with the context's row, for its format
    and creation time)."""
    base: dict[str, Any] = {}
    if stored:
        try:
            loaded = orjson.loads(stored)
            base = loaded if isinstance(loaded, dict) else {}
        except orjson.JSONDecodeError:
            base = {}
    collections: dict[str, Any] = {}
    if schema_version(conn, PART) is not None:
        for collection, schema, indexes in conn.execute(SQL_COLLECTIONS, (context,)).fetchall():
            entry: dict[str, Any] = {}
            if schema is not None:
                entry["schema"] = str(schema)
            if indexes:
                entry["indexes"] = [list(i) for i in indexes]
            if entry:
                entry.setdefault("indexes", [])
                collections[str(collection)] = entry
    document = {
        "format": base.get("format", CONTEXT_FORMAT),
        "context": context,
        "created_at": base.get("created_at"),
        "collections": collections,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


class RecordsInDatabase:
    """What ``PgContexts`` does with a context's records when they live in the database
    ``db`` (the ``ContextRecords`` it is given): load a staged context's logs in its install
    transaction, forget them in its drop transaction, describe the catalogue, copy a log."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self, conn: Any, name: str, staged: Path) -> None:
        load_staged(conn, name, staged)

    def document(self, conn: Any, name: str, stored: bytes | None) -> bytes:
        return catalog_document(conn, name, stored)

    def copy_log(self, name: str, folder: Path, lock: Any, collection: str, fh: IO[bytes]) -> int:
        return PgRecords(self.db, name, folder, lock).write_log(collection, fh)


__all__ = ["RecordsInDatabase", "catalog_document", "load_staged"]
