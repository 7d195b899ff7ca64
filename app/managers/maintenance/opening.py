"""Opening a store for maintenance: as ``open_store`` does, without its sweep of leftover
staging folders, so that ``ctxstore gc`` (dry run) can report them instead of having them
removed silently by the opening itself."""

from __future__ import annotations

from app.backends.registry import backend_for, scheme_of
from app.core.rules import UserPath
from app.managers.store import Store, given_root, resolve_root


def open_unswept(root: UserPath | None) -> Store:
    """The existing store at ``root`` (``NotFoundError`` if missing), versions checked,
    leftovers left in place (``Store.gc`` reports and removes them)."""
    given = given_root(root)
    if scheme_of(given) is None:
        given = resolve_root(given)
    backend = backend_for(given)
    backend.catalog().open(create=False)
    store = Store(backend)
    store.check_versions()
    return store


__all__ = ["open_unswept"]
