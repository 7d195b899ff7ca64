"""``backend_for(root)``: the backend a store's root names (docs/api.md "Opening").

A directory (a path, or a string without a ``scheme://``) is the embedded backend. A URL is
looked up by its scheme in ``SCHEMES``; a server backend is added with one registration line
(``SCHEMES["postgresql"] = SCHEMES["postgres"] = _open_postgres``), and ``open_store`` builds
the ``Store`` on the backend it returns (its ``ContextCatalog`` checks or creates the store).
A server store also names where its files go (``files``, default ``$CTXSTORE_FILES``) and keeps
a local working folder (``$CTXSTORE_WORK``, default one folder per store under
``$XDG_CACHE_HOME/ctxstore/work``). Messages show a URL with its password redacted
(``redact``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from app.backends.local import LocalBackend
from app.backends.protocols import Backend
from app.core.errors import InvalidInput
from app.core.layout import WORK_ENV, work_dir
from app.core.urls import redact

Opener = Callable[[str, "str | None"], Backend]
"""Opens the backend of a URL (the URL as given, password included) with its files URL (None:
not given, ``$CTXSTORE_FILES`` applies)."""

FILES_ENV = "CTXSTORE_FILES"

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def files_url(root: str, files: str | None) -> str:
    """The files URL of the server store ``root``: ``files``, else ``$CTXSTORE_FILES``; a
    plain path becomes absolute. ``InvalidInput`` (argument ``files``) when neither is set."""
    given = files if files is not None else os.environ.get(FILES_ENV) or None
    if given is None or not given.strip():
        raise InvalidInput(
            f"files: {redact(root)} keeps its embedding shards, model files and staged items "
            f"under a files URL: pass files= (CLI --files) or set ${FILES_ENV} "
            "(s3://bucket/prefix, or a directory)",
            argument="files",
        )
    if "://" not in given:
        return str(Path(given).expanduser().absolute())
    return given


def work_folder(root: str, files: str) -> Path:
    """This host's working folder for the server store ``root`` + ``files``:
    ``$CTXSTORE_WORK``, else one folder per store under ``$XDG_CACHE_HOME/ctxstore/work``."""
    given = os.environ.get(WORK_ENV)
    if given:
        return Path(given).expanduser().absolute()
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    key = hashlib.sha256(f"{redact(root)}\0{redact(files)}".encode()).hexdigest()[:16]
    return work_dir(Path(home).expanduser().absolute(), key)


def _open_postgres(url: str, files: str | None) -> Backend:
    where = files_url(url, files)
    try:
        from app.backends.postgres.backend import PostgresBackend
    except ImportError as exc:  # the optional extras are missing
        raise InvalidInput(
            f"root: {redact(url)} needs the PostgreSQL backend's packages "
            f"({exc.name or exc}): pip install 'ctxstore[postgres,objects]'",
            argument="root",
        ) from None
    return PostgresBackend(url, files=where, work=work_folder(url, where))


SCHEMES: dict[str, Opener] = {"postgresql": _open_postgres, "postgres": _open_postgres}


def scheme_of(root: str | os.PathLike[str]) -> str | None:
    """The URL scheme of ``root`` (lower case), or None for a directory."""
    if not isinstance(root, str):
        return None
    found = _SCHEME.match(root)
    return found.group(1).lower() if found else None


def backend_for(root: str | os.PathLike[str], files: str | None = None) -> Backend:
    """The backend of a store root: ``LocalBackend`` for a directory, the registered opener
    for a URL; ``InvalidInput`` (argument ``root``) for a scheme no backend serves, (argument
    ``files``) for ``files`` given with a directory (an embedded store keeps its files)."""
    scheme = scheme_of(root)
    if scheme is None:
        if files is not None:
            raise InvalidInput(
                f"files: {redact(files)} was given, but {root} is an embedded store, which "
                "keeps its files in its own directory (files= is for a postgresql:// root)",
                argument="files",
            )
        return LocalBackend(Path(root))
    assert isinstance(root, str)
    opener = SCHEMES.get(scheme)
    if opener is None:
        known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise InvalidInput(
            f"root: {redact(root)} has the scheme {scheme}://, which no backend serves "
            f"(a directory, or one of: {known})",
            argument="root",
        )
    return opener(root, files)
