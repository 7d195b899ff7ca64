"""``PgMetaStore``: a context part's documents as rows of ``ctxstore_docs`` (``MetaStore``).

A key ``"<item>/<document>"`` is the row ``(context, part, item, name)``; ``write`` is one
``INSERT ... ON CONFLICT DO UPDATE`` transaction, ``delete`` one ``DELETE``: a reader on any
host sees the old document or the new one. The files a document names are rows of
``ctxstore_files`` committed before it (``FileStore.put`` first), so a document never names a
file that does not exist. See PERSISTENCE_LAYER_STRATEGY.md, "Metadata store".
"""

from __future__ import annotations

from pathlib import Path

from app.backends.local.backend import part_files
from app.backends.local.files import check_item, split_key
from app.backends.postgres.files_schema import PartsTables

SQL_READ = (
    "SELECT body FROM ctxstore_docs WHERE context = %s AND part = %s AND item = %s AND name = %s"
)
SQL_WRITE = (
    "INSERT INTO ctxstore_docs (context, part, item, name, body) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (context, part, item, name)"
    " DO UPDATE SET body = excluded.body, updated_at = now()"
)
SQL_DELETE = (
    "DELETE FROM ctxstore_docs WHERE context = %s AND part = %s AND item = %s AND name = %s"
)
SQL_NAMES = (
    "SELECT name FROM ctxstore_docs WHERE context = %s AND part = %s AND item = %s"
    ' ORDER BY name COLLATE "C"'
)
SQL_HOLDERS = (
    "SELECT item FROM ctxstore_docs WHERE context = %s AND part = %s AND name = %s"
    ' ORDER BY item COLLATE "C"'
)
SQL_ITEMS = (
    'SELECT DISTINCT item COLLATE "C" AS item FROM ctxstore_docs'
    " WHERE context = %s AND part = %s ORDER BY 1"
)


class PgMetaStore:
    def __init__(self, parts: PartsTables, context: str, part: str) -> None:
        self.parts = parts
        self.context = context
        self.part = part
        self.pattern = part_files(part).documents

    def __repr__(self) -> str:
        return f"PgMetaStore({self.parts.where()!r}, {self.context!r}, {self.part!r})"

    def _split(self, key: str) -> tuple[str, str]:
        return split_key(key, self.pattern)

    def _shown(self, key: str) -> str:
        return f"{self.parts.where()}#{self.context}/{self.part}/{key}"

    def where(self, key: str) -> Path:
        self._split(key)
        return Path(self._shown(key))

    def exists(self, key: str) -> bool:
        return self.read(key) is not None

    def read(self, key: str) -> bytes | None:
        item, name = self._split(key)
        with self.parts.reading(f"reading {self._shown(key)}") as conn:
            if conn is None:
                return None
            row = conn.execute(SQL_READ, (self.context, self.part, item, name)).fetchone()
        return None if row is None else bytes(row[0])

    def write(self, key: str, data: bytes) -> None:
        item, name = self._split(key)
        with self.parts.writing(f"writing {self._shown(key)}") as conn:
            conn.execute(SQL_WRITE, (self.context, self.part, item, name, data))

    def delete(self, key: str) -> bool:
        item, name = self._split(key)
        with self.parts.reading(f"deleting {self._shown(key)}") as conn:
            if conn is None:
                return False
            return bool(conn.execute(SQL_DELETE, (self.context, self.part, item, name)).rowcount)

    def names(self, item: str) -> list[str]:
        check_item(item)
        with self.parts.reading(f"listing {self._shown(item)}") as conn:
            if conn is None:
                return []
            rows = conn.execute(SQL_NAMES, (self.context, self.part, item)).fetchall()
        return [str(r[0]) for r in rows if self.pattern.fullmatch(str(r[0]))]

    def holders(self, name: str) -> list[str]:
        with self.parts.reading(f"listing {self._shown(name)}") as conn:
            if conn is None:
                return []
            rows = conn.execute(SQL_HOLDERS, (self.context, self.part, name)).fetchall()
        return [str(r[0]) for r in rows]

    def items(self) -> list[str]:
        with self.parts.reading(f"listing {self._shown('')}") as conn:
            if conn is None:
                return []
            rows = conn.execute(SQL_ITEMS, (self.context, self.part)).fetchall()
        return [str(r[0]) for r in rows]


SQL_MARK = "SELECT substring(mark from 1 for %s) FROM ctxstore_trust WHERE sha256 = %s"
SQL_SET_MARK = (
    "INSERT INTO ctxstore_trust (sha256, mark) VALUES (%s, %s)"
    " ON CONFLICT (sha256) DO UPDATE SET mark = excluded.mark, updated_at = now()"
)
MARK_READ = 65  # a mark is a 64-character hex HMAC: never read more than one byte beyond


class PgMarks:
    """The store's trust marks as rows of ``ctxstore_trust`` (the ``Marks`` of
    ``app.managers.models.trust``; shared by every host)."""

    def __init__(self, tables: PartsTables) -> None:
        self.tables = tables

    def __repr__(self) -> str:
        return f"PgMarks({self.tables.where()!r})"

    def where(self, sha256: str) -> str:
        return f"{self.tables.where()}#trust/{sha256}"

    def read(self, sha256: str) -> bytes | None:
        with self.tables.reading(f"reading {self.where(sha256)}") as conn:
            if conn is None:
                return None
            row = conn.execute(SQL_MARK, (MARK_READ, sha256)).fetchone()
        return None if row is None else bytes(row[0])

    def write(self, sha256: str, data: bytes) -> None:
        with self.tables.writing(f"writing {self.where(sha256)}") as conn:
            conn.execute(SQL_SET_MARK, (sha256, data))


__all__ = ["PgMarks", "PgMetaStore"]
