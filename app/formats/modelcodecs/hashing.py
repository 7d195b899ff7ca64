"""Helpers every model codec shares: writing a file atomically while hashing it, and opening
or reading a file only after its size and SHA-256 match the record (docs/api.md, "Models").

A check and the read that follows it use the same descriptor, opened without following a
link: the bytes decoded are the bytes checked."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from app.core.atomic import atomic_file
from app.core.errors import IntegrityError
from app.core.nofollow import open_regular, read_regular
from app.formats.hashio import HashingWriter, chunk_digests_fd, sha256_fd
from app.formats.modelcodecs.codec import Recorded

PROC_FD = Path("/proc/self/fd")
CHUNK = 8 << 20  # a record's piece digests (older .pth versions) cover pieces of this size


def class_path(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def write_hashed(
    path: Path, dump: Callable[[HashingWriter], None], *, immutable: bool = False
) -> tuple[str, int]:
    """Replace ``path`` atomically with what ``dump`` writes; ``(sha256, size)`` of it.
    ``immutable``: see ``HashingWriter``; the pages written are handed to the device as the
    write goes (``app.formats.writeback``)."""
    with atomic_file(path) as fh:
        writer = HashingWriter(fh, immutable=immutable, writeback=True)
        try:
            dump(writer)
            return writer.hexdigest(), writer.tell()
        finally:
            writer.close()


def damaged(path: Path) -> IntegrityError:
    return IntegrityError(f"{path}: SHA-256 mismatch (the model file is damaged)")


def missing(path: Path) -> IntegrityError:
    return IntegrityError(f"{path}: model file is missing")


def check_size(fd: int, path: Path, size: int) -> None:
    actual_size = os.fstat(fd).st_size
    if actual_size != size:
        raise IntegrityError(f"{path}: size {actual_size} differs from the recorded {size}")


def check_fd(fd: int, path: Path, recorded: Recorded) -> None:
    """Size, then SHA-256 (of each piece, on two threads, when the record lists them)."""
    check_size(fd, path, recorded.size_bytes)
    if recorded.chunks and recorded.chunk_bytes > 0:
        if chunk_digests_fd(fd, recorded.chunk_bytes) != recorded.chunks:
            raise damaged(path)
    elif sha256_fd(fd) != recorded.sha256:
        raise damaged(path)


def open_verified(path: Path, recorded: Recorded) -> int:
    """A read-only descriptor of ``path`` (never through a link) whose content matches
    ``recorded``; the caller closes it."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise missing(path) from None
    try:
        check_fd(fd, path, recorded)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_bytes(data: bytes, path: Path, sha256: str, size: int) -> None:
    if len(data) != size:
        raise IntegrityError(f"{path}: size {len(data)} differs from the recorded {size}")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise damaged(path)


def read_verified(path: Path, sha256: str, size: int) -> bytes:
    """The file's bytes after checking their size and SHA-256."""
    try:
        data = read_regular(path)  # never through a link
    except FileNotFoundError:
        raise missing(path) from None
    check_bytes(data, path, sha256, size)
    return data
