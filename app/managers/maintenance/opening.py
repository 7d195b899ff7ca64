"""Opening a store for maintenance.

``open_unswept``: as ``open_store`` does, without its sweep of leftover staging folders, so
that ``ctxstore gc`` (dry run) can report them instead of having them removed silently by the
opening itself. ``backend_of``: the backend of a root without opening the store at all, for
``ctxstore upgrade`` (a store too old to open is what it migrates).
"""

from __future__ import annotations

import os

from app.backends.protocols import Backend
from app.backends.registry import backend_for, scheme_of
from app.core.rules import UserPath
from app.managers.store import Store, given_root, resolve_root


def backend_of(root: UserPath | None, files: UserPath | None = None) -> Backend:
    """The backend ``open_store(root, files=files)`` would use, nothing opened or checked."""
    given = given_root(root)
    if scheme_of(given) is None:
        given = resolve_root(given)
    return backend_for(given, None if files is None else os.fspath(files))


def open_unswept(root: UserPath | None, files: UserPath | None = None) -> Store:
    """The existing store at ``root`` (``NotFoundError`` if missing), versions checked,
    leftovers left in place (``Store.gc`` reports and removes them)."""
    backend = backend_of(root, files)
    try:
        backend.catalog().open(create=False)
        store = Store(backend)
        store.check_versions()
    except BaseException:
        backend.close()
        raise
    return store


__all__ = ["backend_of", "open_unswept"]
