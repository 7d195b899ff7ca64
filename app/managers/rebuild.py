"""Rebuilding a context's SQLite index from its logs (the repair for any index damage)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from app.core.atomic import fsync_dir
from app.core.errors import StorageError, io_error
from app.formats.sqlindex import SqliteIndex
from app.managers.collection import CollectionLog

SIDE_FILES = ("-wal", "-shm", "-journal")


def _remove_db(path: Path) -> None:
    for suffix in (*SIDE_FILES, ""):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + suffix)


def _witness(index: SqliteIndex, name: str) -> int | None:
    """How far the old index says a log was committed, if the old index can still say."""
    try:
        state = index.collection_state(name)
    except StorageError:
        return None
    return None if state is None else state[1]


def rebuild_index(index: SqliteIndex, logs: Iterable[CollectionLog]) -> None:
    """Build a new index file from the logs, then swap it in for the old one.

    Caller holds the writer lock. Until the new file is complete the old one stays in place,
    so a rebuild that stops on a damaged log leaves reads as they were. The old file's WAL is
    removed before the swap: an old WAL must never be replayed into a new database. Other
    processes notice the new file at their next operation and reconnect.
    """
    fresh_path = index.path.with_name(f".{index.path.name}.rebuild")
    _remove_db(fresh_path)
    fresh = SqliteIndex(fresh_path)
    try:
        fresh.initialise()
        for log in logs:
            log.rebuild_into(fresh, _witness(index, log.name))
        fresh.checkpoint_and_close()
    except BaseException:
        fresh.close()
        _remove_db(fresh_path)
        raise
    index.invalidate()
    try:
        for suffix in SIDE_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(index.path) + suffix)
        os.replace(fresh_path, index.path)
        fsync_dir(index.path.parent)
    except OSError as exc:
        raise io_error("replacing", index.path, exc) from exc
