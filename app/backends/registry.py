"""``backend_for(root)``: the backend a store's root names (docs/api.md "Opening").

A directory (a path, or a string without a ``scheme://``) is the embedded backend. A URL is
looked up by its scheme in ``SCHEMES``; a server backend is added with one registration line,
e.g. ``SCHEMES["postgresql"] = SCHEMES["postgres"] = open_postgres``, and ``open_store`` builds
the ``Store`` on the backend it returns (its ``ContextCatalog`` checks or creates the store).
Messages show a URL with its password redacted (``redact``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from app.backends.local import LocalBackend
from app.backends.protocols import Backend
from app.core.errors import InvalidInput

Opener = Callable[[str], Backend]
"""Opens the backend of a URL (the URL as given, password included)."""

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def redact(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _not_built(name: str) -> Opener:
    def refuse(url: str) -> Backend:
        raise InvalidInput(
            f"root: {redact(url)} names a {name} store; the {name} backend is not built into "
            "this version of ctxstore (use a directory)",
            argument="root",
        )

    return refuse


SCHEMES: dict[str, Opener] = {
    "postgresql": _not_built("PostgreSQL"),
    "postgres": _not_built("PostgreSQL"),
}


def scheme_of(root: str | os.PathLike[str]) -> str | None:
    """The URL scheme of ``root`` (lower case), or None for a directory."""
    if not isinstance(root, str):
        return None
    found = _SCHEME.match(root)
    return found.group(1).lower() if found else None


def backend_for(root: str | os.PathLike[str]) -> Backend:
    """The backend of a store root: ``LocalBackend`` for a directory, the registered opener
    for a URL; ``InvalidInput`` (argument ``root``) for a scheme no backend serves."""
    scheme = scheme_of(root)
    if scheme is None:
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
    return opener(root)
