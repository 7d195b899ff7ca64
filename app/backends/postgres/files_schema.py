"""The tables of part files and documents on PostgreSQL (``PgFileStore``, ``PgMetaStore``).

One schema part, ``parts`` (``app.backends.postgres.schema``): ``ctxstore_files`` names the
blobs of each context part (the object store keeps only content-addressed blobs) and
``ctxstore_docs`` holds the parts' documents (an embedding set's ``metadata.json``, a model
version's record, a model's high-water mark). Keys are ``(context, part, item, name)``.
``ctxstore_trust`` holds the store's trust marks of model files whose reading runs code (one
row per SHA-256; what the embedded store keeps in its ``trust`` folder), so a mark signed on
one host counts on every host that shares the store and the trust key.
psycopg is imported lazily, only for its error type.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.backends.postgres.connect import Database
from app.backends.postgres.schema import ensure_schema, schema_version
from app.core.errors import StorageError

if TYPE_CHECKING:
    import psycopg

PART = "parts"
SCHEMA_VERSION = 1

DDL = (
    "CREATE TABLE IF NOT EXISTS ctxstore_files ("
    " context text NOT NULL,"
    " part text NOT NULL,"
    " item text NOT NULL,"
    " name text NOT NULL,"
    " sha256 text NOT NULL,"
    " size bigint NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (context, part, item, name))",
    "CREATE TABLE IF NOT EXISTS ctxstore_docs ("
    " context text NOT NULL,"
    " part text NOT NULL,"
    " item text NOT NULL,"
    " name text NOT NULL,"
    " body bytea NOT NULL,"
    " updated_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (context, part, item, name))",
    "CREATE TABLE IF NOT EXISTS ctxstore_trust ("
    " sha256 text PRIMARY KEY,"
    " mark bytea NOT NULL,"
    " updated_at timestamptz NOT NULL DEFAULT now())",
)


def gc_lock_key(context: str, part: str) -> int:
    """The advisory-lock key gc holds exclusively (and a row insert shared) for one part."""
    digest = hashlib.sha256(f"ctxstore:gc:{context}/{part}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def pg_errors(doing: str, where: str) -> Iterator[None]:
    """Turn a psycopg error into ``StorageError`` naming ``doing`` and the database (the URL
    without its password)."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        text = str(exc).strip() or type(exc).__name__
        raise StorageError(f"{doing} at {where}: {text}") from None


class PartsTables:
    """Transactions on the two tables in the database ``db`` (created on the first write)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._ready = False

    def where(self) -> str:
        """The database, as messages name it (password redacted)."""
        return self.db.where()

    @contextlib.contextmanager
    def reading(self, doing: str) -> Iterator[psycopg.Connection[Any] | None]:
        """A transaction for reads; None when the tables were never created (a store where no
        file was ever written reads as empty and creates nothing)."""
        with pg_errors(doing, self.db.where()), self.db.transaction() as conn:
            if not self._ready:
                if schema_version(conn, PART) is None:
                    yield None
                    return
                self._ready = True
            yield conn

    @contextlib.contextmanager
    def writing(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """A transaction for writes, creating the tables first when needed."""
        with pg_errors(doing, self.db.where()), self.db.transaction() as conn:
            if not self._ready:
                ensure_schema(conn, PART, DDL, SCHEMA_VERSION)
                self._ready = True
            yield conn


__all__ = ["DDL", "PART", "SCHEMA_VERSION", "PartsTables", "gc_lock_key", "pg_errors"]
