"""``LocalMetaStore``: the embedded backend's commit-point documents, in a part folder.

A key ``"<item>/<document>"`` is the file ``<root>/<item>/<document>`` (for embeddings:
``contexts/<ctx>/embeddings/<set>/metadata.json``, ``layout.SET_META``). A write replaces the
file atomically and durably (``app.core.atomic.write_atomic``: temporary file, fsync, rename,
directory fsync); a delete unlinks it and fsyncs the folder. Reads open the file without
following a link and check every folder on the way (``app.core.nofollow``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from app.backends.local.files import check_item, split_key
from app.core.atomic import unlink_durable, write_atomic
from app.core.names import is_valid_name
from app.core.nofollow import check_chain, entries, exists_as, read_regular


class LocalMetaStore:
    """Documents below ``root`` (a part folder) whose names match ``pattern``."""

    def __init__(self, root: Path, pattern: re.Pattern[str]) -> None:
        self.root = root
        self.pattern = pattern

    def __repr__(self) -> str:
        return f"LocalMetaStore({str(self.root)!r})"

    def _checked(self, key: str) -> Path:
        item, name = split_key(key, self.pattern)
        return check_chain(self.root.parent, self.root.name, item, name)

    def where(self, key: str) -> Path:
        item, name = split_key(key, self.pattern)
        return self.root / item / name

    def exists(self, key: str) -> bool:
        return exists_as(self._checked(key), "file")

    def read(self, key: str) -> bytes | None:
        path = self._checked(key)
        try:
            return read_regular(path)
        except FileNotFoundError:  # missing, or deleted meanwhile
            return None

    def write(self, key: str, data: bytes) -> None:
        write_atomic(self._checked(key), data)

    def delete(self, key: str) -> bool:
        path = self._checked(key)
        return unlink_durable(path)

    def names(self, item: str) -> list[str]:
        folder = check_chain(self.root.parent, self.root.name, check_item(item), last="dir")
        return [e.name for e in entries(folder) if self.pattern.fullmatch(e.name)]

    def holders(self, name: str) -> list[str]:
        check_chain(self.root.parent, self.root.name, last="dir")
        return sorted(
            e.name
            for e in entries(self.root)
            if is_valid_name(e.name)
            and e.is_dir(follow_symlinks=False)
            and os.path.lexists(os.path.join(e.path, name))
        )

    def items(self) -> list[str]:
        check_chain(self.root.parent, self.root.name, last="dir")
        return [
            e.name
            for e in entries(self.root)
            if is_valid_name(e.name) and e.is_dir(follow_symlinks=False)
        ]
