"""``LocalFileStore``: the embedded backend's immutable files, in a part folder of a context.

A key ``"<item>/<file>"`` is the file ``<root>/<item>/<file>`` (for embeddings:
``contexts/<ctx>/embeddings/<set>/shard-NNNNNN.npz``). Only file names matching the store's
pattern (``layout.SHARD_PATTERN`` for embeddings) belong to it: the item folder also holds the
part's documents (``app.backends.local.meta``), which this store never lists or removes.

``put`` hands the final path to the writer, which creates the file atomically and durably
(temporary file, fsync, rename, directory fsync: ``app.core.atomic.atomic_file``); nothing is
visible under the key before that rename. Every path is checked on the way without following
links (``app.core.nofollow``): a link, or a file where a folder belongs, is damage
(``IntegrityError`` naming it), never written around.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from app.backends.protocols import FileWriter, StoredFile
from app.core.atomic import unlink_durable
from app.core.errors import ConflictError, IntegrityError, InvalidInput, NotFoundError, io_error
from app.core.names import is_valid_name
from app.core.nofollow import check_chain, entries, exists_as, open_regular, refuse_links
from app.formats.hashio import sha256_fd


def split_key(key: str, pattern: re.Pattern[str]) -> tuple[str, str]:
    """``(item, file name)`` of a key ``"<item>/<name>"``; ``InvalidInput`` for any other
    shape (a path never escapes the store: both parts are plain names)."""
    item, sep, name = key.partition("/")
    if not sep or not is_valid_name(item) or pattern.fullmatch(name) is None:
        raise InvalidInput(f"key: {key[:120]!r} is not '<item>/<file name>'", argument="key")
    return item, name


def check_item(item: str) -> str:
    """``item`` if it is a plain name (``InvalidInput`` otherwise)."""
    if not is_valid_name(item):
        raise InvalidInput(f"item: {item[:120]!r} is not a valid name", argument="item")
    return item


def is_leftover(name: str) -> bool:
    """A temporary file of an interrupted atomic write (``.<name>.<random>.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


class LocalFileStore:
    """Immutable files below ``root`` (a part folder), named by ``pattern``; ``what`` names a
    file in messages (``"shard"``). ``documents``: the names of the part's documents when
    ``pattern`` also matches them (``v0001.json`` is a model file name too): those are never
    files of this store (not listed, removed, read or written here)."""

    def __init__(
        self,
        root: Path,
        pattern: re.Pattern[str],
        what: str = "file",
        documents: re.Pattern[str] | None = None,
    ) -> None:
        self.root = root
        self.pattern = pattern
        self.what = what
        self.documents = documents

    def __repr__(self) -> str:
        return f"LocalFileStore({str(self.root)!r})"

    def _is_file(self, name: str) -> bool:
        return self.pattern.fullmatch(name) is not None and not (
            self.documents is not None and self.documents.fullmatch(name)
        )

    def _split(self, key: str) -> tuple[str, str]:
        item, name = split_key(key, self.pattern)
        if not self._is_file(name):
            raise InvalidInput(f"key: {key[:120]!r} names a document, not a file", argument="key")
        return item, name

    def _path(self, key: str) -> Path:
        item, name = self._split(key)
        return self.root / item / name

    def put(self, key: str, write: FileWriter) -> StoredFile:
        item, name = self._split(key)
        path = check_chain(self.root.parent, self.root.name, item, name)
        if exists_as(path, "file"):
            raise ConflictError(f"{path}: a stored {self.what} is never replaced")
        digest = write(path)
        return StoredFile(key=key, size=digest.size, sha256=digest.sha256)

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def open(self, key: str) -> int:
        path = self._path(key)
        try:
            return open_regular(path)
        except FileNotFoundError:
            raise NotFoundError(f"{path}: {self.what} file is missing") from None

    def check(self, key: str, size: int, sha256: str) -> str | None:
        path = self._path(key)
        try:
            fd = open_regular(path)
        except FileNotFoundError:
            return f"{path}: {self.what} file is missing"
        except IntegrityError as exc:  # a link or a directory where the file belongs
            return str(exc)
        try:
            found = os.fstat(fd).st_size
            if found != size:
                return f"{path}: size {found} differs from the recorded {size}"
            if sha256_fd(fd) != sha256:
                return f"{path}: SHA-256 mismatch (the {self.what} is damaged)"
        except OSError as exc:
            raise io_error("reading", path, exc) from exc
        finally:
            os.close(fd)
        return None

    def list(self, item: str) -> list[str]:
        folder = check_chain(self.root.parent, self.root.name, check_item(item), last="dir")
        refuse_links(folder)
        return [f"{item}/{e.name}" for e in entries(folder) if self._is_file(e.name)]

    def delete(self, key: str) -> bool:
        item, name = self._split(key)
        path = check_chain(self.root.parent, self.root.name, item, name)
        return unlink_durable(path)

    def retain(self, item: str, keep: set[str]) -> None:
        folder = self.root / check_item(item)
        for entry in entries(folder):
            stale = (
                self._is_file(entry.name) and f"{item}/{entry.name}" not in keep
            ) or is_leftover(entry.name)
            if stale:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        if not keep:  # an item with nothing left disappears (it still holds its documents)
            with contextlib.suppress(OSError):
                folder.rmdir()
