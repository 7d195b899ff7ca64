"""``Location``: an fsspec filesystem and the base path a URL names in it.

Every call maps the filesystem's errors to the store's: a missing object is ``None`` /
``False`` / ``[]`` where the contracts say so, other failures are ``StorageError`` naming the
object by its URL with the password redacted (``app.core.urls.redact``); a URL's
credentials never appear in a message or a ``repr``. On a directory URL writes are atomic and
durable as the embedded backend's (temporary file, fsync, rename); on S3 one PUT is atomic.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import fsspec

from app.core.atomic import atomic_file, unlink_durable, write_atomic
from app.core.errors import StorageError
from app.core.urls import redact

_LOCAL = {"file", "local"}


class Location:
    """The filesystem and base path of ``url`` (``storage_options`` go to fsspec; S3 listings
    are never cached, so another process's writes are seen at once)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        options = dict(storage_options or {})
        shown = redact(url).rstrip("/")
        protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
        self.local = protocol in _LOCAL
        if not self.local:
            parts = urlsplit(url)
            if parts.username is not None:  # s3://key:secret@bucket/prefix
                options.setdefault("key", unquote(parts.username))
                if parts.password is not None:
                    options.setdefault("secret", unquote(parts.password))
                url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
            options.setdefault("use_listings_cache", False)
            options.setdefault("skip_instance_cache", True)
        try:
            self.fs, base = fsspec.core.url_to_fs(url, **options)
        except Exception as exc:
            raise StorageError(f"{shown}: cannot open ({type(exc).__name__})") from None
        self.base: str = str(base).rstrip("/")
        self.shown = shown

    def __repr__(self) -> str:
        return f"Location({self.shown!r})"

    def name(self, path: str) -> str:
        """How messages name the object at ``path`` (the URL, password redacted)."""
        rest = path[len(self.base) :] if path.startswith(self.base) else path
        return f"{self.shown}{rest}"

    def _fail(self, action: str, path: str, exc: Exception) -> StorageError:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        errno = exc.errno if isinstance(exc, OSError) else None
        return StorageError(f"{action} failed for {self.name(path)}: {detail}", errno=errno)

    def get(self, path: str) -> bytes | None:
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # the filesystem's own errors (botocore's are no OSError)
            raise self._fail("reading", path, exc) from None
        return bytes(data)

    def put(self, path: str, data: bytes) -> None:
        try:
            if self.local:
                write_atomic(Path(path), data)
            else:
                self.fs.pipe_file(path, data)
        except Exception as exc:  # the filesystem's own errors (botocore's are no OSError)
            raise self._fail("writing", path, exc) from None

    def upload(self, source: Path, path: str) -> None:
        try:
            if self.local:
                with atomic_file(Path(path)) as out, source.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                self.fs.put_file(str(source), path)
        except Exception as exc:  # the filesystem's own errors (botocore's are no OSError)
            raise self._fail("uploading", path, exc) from None

    def download(self, path: str, target: Path) -> bool:
        """Copy the object to ``target`` (a new local file); False if it is missing."""
        try:
            self.fs.get_file(path, str(target))
        except FileNotFoundError:
            return False
        except Exception as exc:  # the filesystem's own errors (botocore's are no OSError)
            raise self._fail("downloading", path, exc) from None
        return True

    def exists(self, path: str) -> bool:
        try:
            return bool(self.fs.isfile(path))
        except Exception as exc:  # the filesystem's own errors (botocore's are no OSError)
            raise self._fail("checking", path, exc) from None

    def remove(self, path: str) -> bool:
        try:
            if self.local:
                return unlink_durable(Path(path))
            if not self.fs.isfile(path):
                return False
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        except Exception as exc:  # the filesystem's own errors (botocore's are no OSError)
            raise self._fail("deleting", path, exc) from None
        return True

    def entries(self, folder: str) -> list[tuple[str, str]]:
        """``(name, "file" | "directory")`` of the folder's entries, sorted by name;
        ``[]`` for a missing folder."""
        try:
            found = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            return []
        except Exception as exc:  # the filesystem's own errors (botocore's are no OSError)
            raise self._fail("listing", folder, exc) from None
        out = []
        for info in found:
            name = str(info["name"]).rstrip("/").rpartition("/")[2]
            if str(info["name"]).rstrip("/") == folder.rstrip("/"):
                continue  # S3 may list a folder marker as its own entry
            out.append((name, "directory" if info.get("type") == "directory" else "file"))
        return sorted(out)

    def modified(self, path: str) -> float:
        """The object's last modification time (POSIX seconds)."""
        try:
            info = self.fs.info(path)
        except Exception as exc:  # the filesystem's own errors (botocore's are no OSError)
            raise self._fail("checking", path, exc) from None
        if "mtime" in info:
            return float(info["mtime"])
        stamp = info.get("LastModified")
        if isinstance(stamp, datetime):
            return stamp.timestamp()
        return float(os.path.getmtime(path)) if self.local else 0.0
