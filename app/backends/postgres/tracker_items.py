"""Staged workflow items of a PostgreSQL store, kept under its files URL (``ObjectItems``).

A workflow's items file is built exactly as on the embedded backend
(``app.formats.staged_items``: one encoded JSON object per line, a CRC-32 and byte range per
chunk, the whole file's SHA-256) in a private folder of the local object cache, then uploaded
once under ``<files>/_workflows/items/<workflow>.<token>.jsonl`` (``layout.object_items``). It
is unreferenced until the tracker row naming it commits (``PgTracker.insert`` / ``plan`` check
that the object exists first); a crash in between leaves an orphan that ``orphans`` lists once
it is old enough.

Why a unique name rather than a content address: an items file belongs to one workflow and is
removed when that workflow is purged; a unique, never-reused name makes that removal safe with
no reference counting, while the row keeps the SHA-256 so every read is still verified.

``read_chunk`` downloads the whole file once into the blob cache (``BlobCache.fetch`` checks its
size and SHA-256 against the row before it is used), then checks each chunk's CRC-32 as the
embedded reader does. The uploading host adopts its local file into the cache, so a worker on
the same host never downloads it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from app.backends.objects.cache import BlobCache
from app.backends.objects.location import Location
from app.core.errors import IntegrityError, NotFoundError, StorageError
from app.core.layout import ITEMS_SUFFIX, object_items
from app.formats.staged_items import ChunkIndex, ItemsDir, StagedItems


def items_size(index: ChunkIndex) -> int:
    """The size of an items file in bytes (its chunks are contiguous from byte 0)."""
    return index[-1][1] if index else 0


class ObjectItems:
    """The staged items files of one store under a files URL."""

    def __init__(self, location: Location, cache: BlobCache) -> None:
        self.location = location
        self.cache = cache
        self.folder = object_items(location.base)

    def __repr__(self) -> str:
        return f"ObjectItems({self.location.name(self.folder)!r})"

    def _object(self, name: str) -> str:
        if "/" in name or not name.endswith(ITEMS_SUFFIX) or name.startswith("."):
            raise IntegrityError(f"{self.location.name(self.folder)}: bad items name {name!r}")
        return f"{self.folder}/{name}"

    def where(self, name: str) -> str:
        """How messages name an items file (its URL, password redacted)."""
        return self.location.name(self._object(name))

    def stage(self, workflow_id: str, lines: Iterable[bytes], chunk_size: int) -> StagedItems:
        """Write the items locally (durably), upload them; the local copy joins the cache."""
        self.cache.folder.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".items-", dir=self.cache.folder))
        try:
            staged = ItemsDir(folder).stage(workflow_id, lines, chunk_size)
            path = folder / staged.name
            self.location.upload(path, self._object(staged.name))
            with contextlib.suppress(OSError):
                self.cache.adopt(path, staged.sha256)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return staged

    def exists(self, name: str) -> bool:
        return self.location.exists(self._object(name))

    def read_chunk(self, name: str, sha256: str, index: ChunkIndex, chunk_no: int) -> list[bytes]:
        """One chunk's encoded items; the file is verified (size, SHA-256) into the cache and
        the chunk's CRC-32 checked. ``IntegrityError`` names the object."""
        shown = self.where(name)
        try:
            path = self.cache.fetch(self._object(name), sha256, items_size(index))
        except NotFoundError:
            raise IntegrityError(f"{shown}: staged items file is missing") from None
        except IntegrityError:
            raise IntegrityError(f"{shown}: staged items fail their SHA-256 check") from None
        start, end, crc = index[chunk_no]
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                data = fh.read(end - start)
        except OSError as exc:
            raise StorageError(f"{shown}: reading the cached copy failed: {exc}") from None
        if len(data) != end - start or zlib.crc32(data) != crc:
            raise IntegrityError(f"{shown}: chunk {chunk_no} of the staged items is damaged")
        return data.splitlines()

    def discard(self, name: str | None) -> None:
        if name:
            self.location.remove(self._object(name))

    def orphans(self, referenced: set[str], older_than: float) -> list[Path]:
        """Items files not in ``referenced``, last modified before ``older_than`` (epoch); a
        ``Path`` of the bare name each (what ``discard`` takes back)."""
        found: list[Path] = []
        for name, kind in self.location.entries(self.folder):
            if kind != "file" or name in referenced or not name.endswith(ITEMS_SUFFIX):
                continue
            with contextlib.suppress(StorageError):
                if self.location.modified(self._object(name)) < older_than:
                    found.append(Path(name))
        return found

    def check(self, wid: str, name: str, sha256: str | None, size: int) -> list[str]:
        """Problems with one workflow's items file (missing, size or SHA-256 differing)."""
        shown = self.where(name)
        got = self.cache.download(self._object(name))
        if got is None:
            return [f"{shown}: staged items of workflow {wid!r} are missing"]
        path, digest, found = got
        with contextlib.suppress(OSError):
            path.unlink()
        if found != size or (sha256 is not None and digest != sha256):
            return [f"{shown}: staged items of workflow {wid!r} fail their SHA-256 check"]
        return []
