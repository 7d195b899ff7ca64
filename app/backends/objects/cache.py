"""``BlobCache``: verified local copies of blobs, what ``FileStore.local_path`` returns.

A blob is downloaded to a private temporary file in the cache folder
(``.<sha256>.<random>.part``), its SHA-256 and size checked against the name record, then
renamed to ``<cache>/<sha256>`` (``layout.cached_blob``): a cached file is whole and verified,
so it is served (and memory-mapped) without another download. A damaged download is
``IntegrityError`` naming the object and leaves nothing in the cache.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from app.backends.objects.location import Location
from app.core.errors import IntegrityError, NotFoundError
from app.core.layout import OBJECT_CACHE_SUFFIX, cached_blob
from app.formats.hashio import sha256_fd


class BlobCache:
    def __init__(self, folder: Path, location: Location) -> None:
        self.folder = folder
        self.location = location

    def __repr__(self) -> str:
        return f"BlobCache({str(self.folder)!r})"

    def download(self, blob: str) -> tuple[Path, str, int] | None:
        """A fresh private copy of ``blob`` with its SHA-256 and size (None if missing); the
        caller removes or adopts the file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=OBJECT_CACHE_SUFFIX, dir=self.folder)
        os.close(fd)
        path = Path(tmp)
        try:
            if not self.location.download(blob, path):
                path.unlink()
                return None
            fd = os.open(path, os.O_RDONLY)
            try:
                return path, sha256_fd(fd), os.fstat(fd).st_size
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise

    def adopt(self, path: Path, sha256: str) -> Path:
        """Move a verified local file into the cache; returns its cached path."""
        target = cached_blob(self.folder, sha256)
        os.replace(path, target)
        return target

    def fetch(self, blob: str, sha256: str, size: int) -> Path:
        """The verified cached copy of ``blob`` (expected ``sha256``, ``size``)."""
        target = cached_blob(self.folder, sha256)
        with contextlib.suppress(OSError):
            if target.stat().st_size == size:
                return target
        got = self.download(blob)
        if got is None:
            raise NotFoundError(f"{self.location.name(blob)}: object is missing")
        path, digest, found = got
        if digest != sha256 or found != size:
            path.unlink()
            raise IntegrityError(
                f"{self.location.name(blob)}: SHA-256 or size differs from the recorded ones"
            )
        return self.adopt(path, sha256)

    def check(
        self, blob: str, recorded: str, size: int, sha256: str, shown: str, what: str
    ) -> str | None:
        """The problem with the blob ``recorded`` names (None if whole): downloaded afresh
        (never the cached copy), its size and SHA-256 compared with ``size`` / ``sha256``.
        ``shown`` names the file in the problem, ``what`` its kind (``shard``, ``model``)."""
        got = self.download(blob)
        if got is None:
            return f"{self.location.name(blob)}: {what} object is missing"
        path, digest, found_size = got
        with contextlib.suppress(OSError):
            path.unlink()
        if found_size != size:
            return f"{shown}: size {found_size} differs from the recorded {size}"
        if digest != sha256 or recorded != sha256:
            return f"{shown}: SHA-256 mismatch (the {what} is damaged)"
        return None
