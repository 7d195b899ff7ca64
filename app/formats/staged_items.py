"""Staged workflow items: one file per workflow under ``workflows/items/``.

``<workflow>.<token>.jsonl`` holds one encoded JSON object per line, written through
``atomic_file`` (fsync'd and renamed into place) before any tracker row names it. Each chunk's
byte range and CRC-32 are returned to be kept in the row (the chunk index) and are checked on
every read; the whole file's SHA-256 is kept too, for ``verify``. This module knows files, not
SQLite.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.atomic import atomic_file
from app.core.errors import IntegrityError, io_error
from app.core.layout import ITEMS_SUFFIX, staged_items_name

ChunkIndex = list[tuple[int, int, int]]
"""Per chunk: (start byte, end byte, CRC-32 of those bytes) in the items file."""


@dataclass(frozen=True)
class StagedItems:
    """An items file written and fsync'd, not yet referenced by any row."""

    name: str
    count: int
    index: ChunkIndex
    sha256: str


class ItemsDir:
    """The directory of staged items files."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def stage(self, workflow_id: str, lines: Iterable[bytes], chunk_size: int) -> StagedItems:
        """Write the items (one encoded JSON object per element) to a new file, durably."""
        name = staged_items_name(workflow_id, os.urandom(6).hex())
        index: ChunkIndex = []
        digest = hashlib.sha256()
        count = 0
        pos = 0
        with atomic_file(self.path / name) as fh:
            chunk: list[bytes] = []
            for line in lines:
                chunk.append(line)
                chunk.append(b"\n")
                count += 1
                if len(chunk) >= 2 * chunk_size:
                    pos = _write_chunk(fh, chunk, pos, index, digest)
                    chunk = []
            if chunk:
                pos = _write_chunk(fh, chunk, pos, index, digest)
        return StagedItems(name=name, count=count, index=index, sha256=digest.hexdigest())

    def read_chunk(self, name: str, index: ChunkIndex, chunk_no: int) -> list[bytes]:
        """The encoded items of one chunk, CRC-checked; ``IntegrityError`` names the file."""
        path = self.path / name
        start, end, crc = index[chunk_no]
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                data = fh.read(end - start)
        except FileNotFoundError:
            raise IntegrityError(f"{path}: staged items file is missing") from None
        except OSError as exc:
            raise io_error("reading", path, exc) from exc
        if len(data) != end - start or zlib.crc32(data) != crc:
            raise IntegrityError(f"{path}: chunk {chunk_no} of the staged items is damaged")
        return data.splitlines()

    def discard(self, name: str | None) -> None:
        if not name:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.path / name).unlink()

    def orphans(self, referenced: set[str], older_than: float) -> list[Path]:
        """Items files not in ``referenced``, last modified before ``older_than`` (epoch)."""
        found: list[Path] = []
        with contextlib.suppress(OSError):
            for path in self.path.iterdir():
                if path.name in referenced or not path.name.endswith(ITEMS_SUFFIX):
                    continue
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < older_than:
                        found.append(path)
        return found

    def check(self, wid: str, name: str, sha: str | None) -> list[str]:
        """Problems with one workflow's items file (missing, unreadable, SHA-256 mismatch)."""
        path = self.path / name
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except FileNotFoundError:
            return [f"{path}: staged items of workflow {wid!r} are missing"]
        except OSError as exc:
            return [f"{path}: unreadable ({exc.strerror or exc})"]
        if sha is not None and digest.hexdigest() != sha:
            return [f"{path}: staged items of workflow {wid!r} fail their SHA-256 check"]
        return []


def _write_chunk(fh: Any, parts: list[bytes], pos: int, index: ChunkIndex, digest: Any) -> int:
    data = b"".join(parts)
    fh.write(data)
    digest.update(data)
    index.append((pos, pos + len(data), zlib.crc32(data)))
    return pos + len(data)
