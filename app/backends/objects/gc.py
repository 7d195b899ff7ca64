"""Removing blobs no name refers to (``layout.object_blob`` objects of one part).

An upload interrupted between the blob and its name object, or a deleted file, leaves a blob
nothing refers to. ``list_unreferenced`` finds those last modified before ``older_than`` (a
POSIX time: the grace period protects an upload whose name is still being written); ``delete``
removes them. ``collect`` does both for one ``ObjectFileStore``.
"""

from __future__ import annotations

from app.backends.objects.files import ObjectFileStore
from app.core.layout import OBJECT_BLOBS


def list_unreferenced(store: ObjectFileStore, referenced: set[str], older_than: float) -> list[str]:
    """The digests of the part's blobs not in ``referenced`` and last modified before
    ``older_than``, sorted."""
    folder = f"{store.prefix}/{OBJECT_BLOBS}"
    return [
        sha
        for sha, kind in store.location.entries(folder)
        if kind == "file"
        and sha not in referenced
        and store.location.modified(store.blob(sha)) < older_than
    ]


def delete(store: ObjectFileStore, digests: list[str]) -> int:
    """Remove these blobs; returns how many existed."""
    return sum(store.location.remove(store.blob(sha)) for sha in digests)


def collect(store: ObjectFileStore, older_than: float) -> list[str]:
    """Remove the part's unreferenced blobs older than ``older_than``; returns their digests."""
    stale = list_unreferenced(store, store.referenced(), older_than)
    delete(store, stale)
    return stale
