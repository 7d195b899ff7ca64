"""Rebuilding a context's SQLite index from its logs (the repair for any index damage)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from app.backends.local.records.collection import CollectionLog
from app.core.atomic import fsync_dir
from app.core.errors import IntegrityError, StorageError, io_error
from app.core.layout import rebuild_name
from app.formats.sqlbulk import BulkIndex
from app.formats.sqlindex import SqliteIndex

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
    return None if state is None else state.log_end


def rebuild_index(
    index: SqliteIndex, logs: Iterable[CollectionLog], *, replace: bool = False
) -> None:
    """Build a new index file from the logs, then put its content in place of the old one.

    Caller holds the writer lock. The new file is built in bulk (``app.formats.sqlbulk``: one
    transaction without a journal, rows in log order, indexes sorted after the load, one
    fsync) beside the old one, which stays in place until the new file is complete: a rebuild
    that stops on a damaged log leaves reads as they were. Where there is no live file (a new
    or imported context) the new file is renamed into place. Otherwise its content is copied
    into the live file page by page in ONE write transaction (SQLite's backup API), so
    readers in every thread and process, old connections included, see the old index or the
    new one, never a partial one, and keep their connections. Only when the live file cannot
    take it (unreadable, not a database) or ``replace`` is set (``ctxstore upgrade``: the
    live file is of an older version, which this version never writes to) is the file itself
    replaced; its old WAL is removed first (an old WAL must never be replayed into a new
    database) and other processes notice the new file at their next operation and reconnect.
    """
    logs = list(logs)
    fresh_path = index.path.with_name(rebuild_name(index.path.name))
    _remove_db(fresh_path)
    old = index.path.exists() and not replace  # else no old index can witness anything
    witnesses = {log.name: _witness(index, log.name) if old else None for log in logs}
    try:
        bulk = BulkIndex(fresh_path)
    except BaseException:
        _remove_db(fresh_path)
        raise
    try:
        for log in logs:
            log.rebuild_into(bulk, witnesses[log.name])
        bulk.commit()
        if replace or not _copy_into(fresh_path, index):
            _replace(fresh_path, index)
    finally:
        bulk.close()
        _remove_db(fresh_path)


def _copy_into(fresh_path: Path, index: SqliteIndex) -> bool:
    """Copy the rebuilt database into the live index file in one transaction; False when the
    live file cannot be written that way (then it is replaced)."""
    if not index.path.is_file():
        return False
    index.invalidate()  # a fresh connection: the file may have been replaced since ours opened
    try:
        dest = index.conn()
    except IntegrityError:
        return False
    try:
        src = sqlite3.connect(f"file:{fresh_path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"{fresh_path}: {exc}") from exc
    try:
        src.backup(dest)
    except sqlite3.DatabaseError as exc:
        error = index.damaged(exc)
        if isinstance(error, IntegrityError):
            return False
        raise error from exc  # busy, disk full, I/O error: not a reason to replace the file
    finally:
        src.close()
    index.invalidate()  # forget cached table names; other threads keep valid connections
    return True


def _replace(fresh_path: Path, index: SqliteIndex) -> None:
    index.invalidate()
    try:
        for suffix in SIDE_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(index.path) + suffix)
        os.replace(fresh_path, index.path)
        fsync_dir(index.path.parent)
    except OSError as exc:
        raise io_error("replacing", index.path, exc) from exc
