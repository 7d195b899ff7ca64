"""``ObjectMetaStore``: a part's documents in an object store (``MetaStore`` contract).

A key ``"<item>/<document>"`` is the object ``<part>/docs/<item>/<document>``
(``layout.object_doc``). One write is one PUT (atomic on S3; temporary file + rename on a
directory URL), so a reader sees the old or the new document, never a mix.
"""

from __future__ import annotations

from pathlib import Path

from app.backends.local.backend import part_files
from app.backends.local.files import check_item, split_key
from app.backends.objects.location import Location
from app.core.layout import OBJECT_DOCS, object_doc, object_part


class ObjectMetaStore:
    def __init__(self, location: Location, context: str, part: str) -> None:
        self.location = location
        self.prefix = object_part(location.base, context, part)
        self.pattern = part_files(part).documents

    def __repr__(self) -> str:
        return f"ObjectMetaStore({self.location.name(self.prefix)!r})"

    def _path(self, key: str) -> str:
        split_key(key, self.pattern)
        return object_doc(self.prefix, key)

    def where(self, key: str) -> Path:
        return Path(self.location.name(self._path(key)))

    def exists(self, key: str) -> bool:
        return self.location.exists(self._path(key))

    def read(self, key: str) -> bytes | None:
        return self.location.get(self._path(key))

    def write(self, key: str, data: bytes) -> None:
        self.location.put(self._path(key), data)

    def delete(self, key: str) -> bool:
        return self.location.remove(self._path(key))

    def names(self, item: str) -> list[str]:
        folder = f"{self.prefix}/{OBJECT_DOCS}/{check_item(item)}"
        return [
            name
            for name, kind in self.location.entries(folder)
            if kind == "file" and self.pattern.fullmatch(name)
        ]

    def holders(self, name: str) -> list[str]:
        folder = f"{self.prefix}/{OBJECT_DOCS}"
        return [
            item
            for item, kind in self.location.entries(folder)
            if kind == "directory" and self.location.exists(f"{folder}/{item}/{name}")
        ]

    def items(self) -> list[str]:
        folder = f"{self.prefix}/{OBJECT_DOCS}"
        return [item for item, kind in self.location.entries(folder) if kind == "directory"]
