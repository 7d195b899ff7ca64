"""``ObjectFileStore``: a part's immutable files in an object store (``FileStore`` contract).

``put`` lets the writer create the file in a private folder of the local cache, hashes it,
uploads it as ``<part>/blobs/<sha256>`` (``layout.object_blob``; skipped when that blob is
already there), then writes the name object ``<part>/names/<item>/<file>``
(``layout.object_name``: ``{"sha256", "size"}``). The file is visible only once the name
object is written: a crash before that leaves an unreferenced blob for ``gc``. ``delete`` and
``retain`` remove name objects; the blobs they leave are ``gc``'s. Immutability is checked
before the upload (a race between two writers of the same key is the caller's writer lock's).
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from app.backends.local.backend import part_files
from app.backends.local.files import check_item, split_key
from app.backends.objects.cache import BlobCache
from app.backends.objects.location import Location
from app.backends.protocols import FileWriter, StoredFile
from app.core.errors import ConflictError, IntegrityError, InvalidInput, NotFoundError
from app.core.layout import OBJECT_BLOBS, OBJECT_NAMES, object_blob, object_name, object_part
from app.core.nofollow import open_regular
from app.formats.hashio import sha256_fd

SHA256_NAME = re.compile(r"[0-9a-f]{64}")


class ObjectFileStore:
    def __init__(self, location: Location, cache: BlobCache, context: str, part: str) -> None:
        kind = part_files(part)
        self.location = location
        self.cache = cache
        self.prefix = object_part(location.base, context, part)
        self.pattern, self.what, self.documents = kind.files, kind.what, kind.documents

    def __repr__(self) -> str:
        return f"ObjectFileStore({self.location.name(self.prefix)!r})"

    def _is_file(self, name: str) -> bool:
        return self.pattern.fullmatch(name) is not None and not self.documents.fullmatch(name)

    def _split(self, key: str) -> tuple[str, str]:
        item, name = split_key(key, self.pattern)
        if not self._is_file(name):
            raise InvalidInput(f"key: {key[:120]!r} names a document, not a file", argument="key")
        return item, name

    def _record(self, key: str) -> tuple[str, int] | None:
        self._split(key)
        where = object_name(self.prefix, key)
        data = self.location.get(where)
        if data is None:
            return None
        try:
            doc = json.loads(data)
            sha, size = str(doc["sha256"]), int(doc["size"])
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{self.location.name(where)}: damaged name record") from None
        return sha, size

    def blob(self, sha256: str) -> str:
        """Where the blob with this digest lives."""
        return object_blob(self.prefix, sha256)

    def put(self, key: str, write: FileWriter) -> StoredFile:
        _, name = self._split(key)
        where = object_name(self.prefix, key)
        if self.location.exists(where):
            raise ConflictError(
                f"{self.location.name(where)}: a stored {self.what} is never replaced"
            )
        self.cache.folder.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".put-", dir=self.cache.folder))
        try:
            path = folder / name
            write(path)
            fd = open_regular(path)
            try:
                sha, size = sha256_fd(fd), os.fstat(fd).st_size
            finally:
                os.close(fd)
            blob = self.blob(sha)
            if not self.location.exists(blob):
                self.location.upload(path, blob)
            self.cache.adopt(path, sha)
            self.location.put(where, json.dumps({"sha256": sha, "size": size}).encode())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return StoredFile(key=key, size=size, sha256=sha)

    def local_path(self, key: str) -> Path:
        found = self._record(key)
        if found is None:
            raise NotFoundError(
                f"{self.location.name(object_name(self.prefix, key))}: {self.what} file is missing"
            )
        sha, size = found
        return self.cache.fetch(self.blob(sha), sha, size)

    def open(self, key: str) -> int:
        return open_regular(self.local_path(key))

    def check(self, key: str, size: int, sha256: str) -> str | None:
        shown = self.location.name(object_name(self.prefix, key))
        found = self._record(key)
        if found is None:
            return f"{shown}: {self.what} file is missing"
        return self.cache.check(self.blob(found[0]), found[0], size, sha256, shown, self.what)

    def list(self, item: str) -> list[str]:
        folder = f"{self.prefix}/{OBJECT_NAMES}/{check_item(item)}"
        return [
            f"{item}/{name}"
            for name, kind in self.location.entries(folder)
            if kind == "file" and self._is_file(name)
        ]

    def delete(self, key: str) -> bool:
        self._split(key)
        return self.location.remove(object_name(self.prefix, key))

    def retain(self, item: str, keep: set[str]) -> None:
        for key in self.list(item):
            if key not in keep:
                self.location.remove(object_name(self.prefix, key))

    def referenced(self) -> set[str]:
        """The digests of the blobs some name object of this part refers to."""
        found: set[str] = set()
        for item, kind in self.location.entries(f"{self.prefix}/{OBJECT_NAMES}"):
            if kind != "directory":
                continue
            for key in self.list(item):
                record = self._record(key)
                if record is not None:
                    found.add(record[0])
        return found

    def garbage(self, older_than: float) -> builtins.list[tuple[str, int]]:
        """``(url, bytes)`` of this part's blobs no name object refers to, last modified
        before ``older_than`` (POSIX seconds), sorted; what ``remove_garbage`` removes (the
        ``Collectable`` side of ``Store.gc``). URLs are shown with the password redacted."""
        referenced = self.referenced()
        out: builtins.list[tuple[str, int]] = []
        for sha, kind in self.location.entries(f"{self.prefix}/{OBJECT_BLOBS}"):
            blob = self.blob(sha)
            if kind != "file" or sha in referenced or not SHA256_NAME.fullmatch(sha):
                continue  # referenced, or an upload's temporary file
            stamp = self.location.stamp_if_present(blob)
            if stamp is not None and stamp[0] < older_than:
                out.append((self.location.name(blob), stamp[1]))
        return out

    def remove_garbage(self, paths: builtins.list[str]) -> None:
        """Remove the blobs ``garbage`` listed (by the URLs it returned)."""
        for shown in paths:
            sha = shown.rpartition("/")[2]
            self.location.remove(self.blob(sha))
