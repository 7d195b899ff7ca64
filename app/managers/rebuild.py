"""Rebuilding a context's SQLite index from its logs (the repair for any index damage)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from app.core.atomic import fsync_dir
from app.core.errors import io_error
from app.formats.sqlindex import SqliteIndex


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def rebuild_index(index: SqliteIndex, recover: Callable[[], None]) -> None:
    """Replace the index file by an empty one, then let ``recover`` catch it up from the logs.

    Caller holds the writer lock. The old file (and its WAL, which must never be replayed
    into a new database) is removed first; connections of this process are invalidated.
    Other processes holding the context open should reopen it afterwards.
    """
    index.close()
    try:
        for suffix in ("-wal", "-shm", ""):
            _remove(Path(str(index.path) + suffix))
        fsync_dir(index.path.parent)
    except OSError as exc:
        raise io_error("removing", index.path, exc) from exc
    recover()
