"""Durable file helpers: whole-file atomic replace and directory fsync."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from app.core.errors import io_error


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename or create inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def removed_on_failure(partial: Path, action: str, shown: Path | None = None) -> Iterator[None]:
    """Remove the half-written file ``partial`` if the block fails; an ``OSError`` becomes a
    ``StorageError`` keeping its errno, naming ``shown`` (default: ``partial``)."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        if isinstance(exc, OSError):
            raise io_error(action, shown or partial, exc) from exc
        raise


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Yield a temp file beside ``path``; on success flush, fsync, rename over it, fsync dir.

    On any failure the temp file is removed and ``path`` keeps its old content.
    ``OSError`` is wrapped in ``StorageError`` keeping the errno.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise io_error("writing", path, exc) from exc
    with removed_on_failure(Path(tmp_name), "writing", path):
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_file(path) as fh:
        fh.write(data)


def unlink_durable(path: Path) -> bool:
    """Remove the file ``path`` and fsync its folder; False if it did not exist. Other
    failures raise ``StorageError`` keeping the errno."""
    try:
        path.unlink()
        fsync_dir(path.parent)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise io_error("deleting", path, exc) from exc
    return True
