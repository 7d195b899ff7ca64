"""A context's collection catalogue: schemas and indexed fields, kept in ``context.json``.

Built-in collections (``analogies``, ``frames``, ``concepts``) have fixed pydantic schemas and
default indexes. Other collections get theirs from ``define_collection``; the schema is kept as
an importable ``module:QualName`` path so other processes apply it too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from app.core.atomic import write_atomic
from app.core.clock import utc_iso
from app.core.errors import IntegrityError, InvalidInput, SchemaVersionError, io_error
from app.core.indexes import Indexes
from app.core.schemas import BUILTIN_INDEXES, BUILTIN_SCHEMAS

CONTEXT_FORMAT = 1


def _schema_path(schema: type[BaseModel]) -> str:
    return f"{schema.__module__}:{schema.__qualname__}"


def _import_schema(path: str) -> type[BaseModel] | None:
    """The schema class named ``module:QualName`` if its module is already imported.

    Never imports a module itself: ``context.json`` may come from an imported archive, and
    importing an arbitrary installed module runs its code."""
    module, _, qualname = path.partition(":")
    try:
        obj: Any = sys.modules[module]
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (KeyError, AttributeError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseModel) else None


class Catalog:
    """Reads and writes ``context.json``; re-reads it when another process changed it."""

    def __init__(self, path: Path, context: str) -> None:
        self.path = path
        self.context = context
        self._stamp: tuple[int, int, int] | None = None
        self._data: dict[str, Any] = {}
        self._local_schemas: dict[str, type[BaseModel]] = {}

    @staticmethod
    def initial(context: str) -> bytes:
        return orjson.dumps(
            {
                "format": CONTEXT_FORMAT,
                "context": context,
                "created_at": utc_iso(),
                "collections": {},
            },
            option=orjson.OPT_INDENT_2,
        )

    def _load(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise IntegrityError(f"{self.path}: context description missing") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                raw = self.path.read_bytes()
            except OSError as exc:
                raise io_error("reading", self.path, exc) from exc
            try:
                data = orjson.loads(raw)
                fmt = data["format"]
                assert isinstance(data["collections"], dict)
            except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
                raise IntegrityError(f"{self.path}: damaged context description") from None
            if not isinstance(fmt, int) or fmt > CONTEXT_FORMAT:
                raise SchemaVersionError(f"{self.path}: context format {fmt} is unknown")
            self._data, self._stamp = data, stamp
        return self._data

    def check(self) -> None:
        """``IntegrityError`` naming ``context.json`` if it is missing or damaged."""
        self._load()

    def indexes(self, collection: str) -> Indexes:
        defined = self._load()["collections"].get(collection, {}).get("indexes", [])
        base = BUILTIN_INDEXES.get(collection, ())
        extra = tuple(tuple(i) for i in defined if tuple(i) not in base)
        return base + extra

    def schema(self, collection: str) -> type[BaseModel] | None:
        builtin = BUILTIN_SCHEMAS.get(collection)
        if builtin is not None:
            return builtin
        local = self._local_schemas.get(collection)
        if local is not None:
            return local
        path = self._load()["collections"].get(collection, {}).get("schema")
        if path is None:
            return None
        schema = _import_schema(path)
        if schema is None:
            raise InvalidInput(
                f"collection: the schema {path!r} of {collection!r} is not loaded in this "
                "process; import its module or call define_collection() with the class first"
            )
        self._local_schemas[collection] = schema
        return schema

    def define(self, collection: str, schema: type[BaseModel] | None, indexes: Indexes) -> Indexes:
        """Record a definition (caller holds the writer lock); returns all its indexes."""
        data = dict(self._load())
        collections = dict(data["collections"])
        entry = dict(collections.get(collection, {}))
        if schema is not None:
            entry["schema"] = _schema_path(schema)
            self._local_schemas[collection] = schema
        known = [tuple(i) for i in entry.get("indexes", [])]
        entry["indexes"] = [list(i) for i in known + [i for i in indexes if i not in known]]
        collections[collection] = entry
        data["collections"] = collections
        write_atomic(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        self._stamp = None
        return self.indexes(collection)
