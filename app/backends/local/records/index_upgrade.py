"""``ctxstore upgrade`` for a context's SQLite index: an older version is rebuilt from the logs.

The index is derived data: its migration is a rebuild (``rebuild_index(..., replace=True)``,
in bulk), never an in-place change, and never done on open (using an older index raises
``SchemaVersionError`` naming the command).
"""

from __future__ import annotations

from pathlib import Path

from app.backends.local.records.context_records import LocalRecords
from app.core.layout import index_name
from app.formats.sqlindex import INDEX_VERSION
from app.formats.sqlitefile import file_version


def index_version(folder: Path, name: str) -> int | None:
    """The version recorded in the index of context ``name`` kept in ``folder`` (None when
    there is no readable index: it is built on first use)."""
    path = folder / index_name(name)
    return file_version(path) if path.is_file() else None


def needs_upgrade(folder: Path, name: str) -> bool:
    """True when the context's index is of an older version than this one writes."""
    version = index_version(folder, name)
    return version is not None and 0 < version < INDEX_VERSION


def upgrade_index(folder: Path, name: str) -> None:
    """Rebuild the older index of context ``name`` from its logs, under the context's writer
    lock (the logs are read, never changed)."""
    records = LocalRecords(folder, name)
    try:
        records.rebuild(replace=True)
    finally:
        records.close()


__all__ = ["index_version", "needs_upgrade", "upgrade_index"]
