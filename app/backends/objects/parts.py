"""``ObjectParts``: the file and document stores of every context part under one URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.backends.objects.cache import BlobCache
from app.backends.objects.files import ObjectFileStore
from app.backends.objects.location import Location
from app.backends.objects.meta import ObjectMetaStore
from app.core.names import check_name


class ObjectParts:
    """``files(context, part)`` / ``meta(context, part)`` over ``url`` (``s3://bucket/prefix``,
    ``file:///dir`` or a path); verified copies of blobs are cached in ``cache``."""

    def __init__(
        self, url: str, cache: Path, storage_options: dict[str, Any] | None = None
    ) -> None:
        self.location = Location(url, storage_options)
        self.cache = BlobCache(cache, self.location)

    def __repr__(self) -> str:
        return f"ObjectParts({self.location.shown!r})"

    def files(self, context: str, part: str) -> ObjectFileStore:
        return ObjectFileStore(self.location, self.cache, check_name(context, "context"), part)

    def meta(self, context: str, part: str) -> ObjectMetaStore:
        return ObjectMetaStore(self.location, check_name(context, "context"), part)
