"""``ContextHost``: what whole-context operations and workflows need of the store that holds
the contexts (``app.managers.store.Store`` implements it). See docs/api.md, "Opening a store".

Transfer (``app.managers.transfer``), stats and workflows depend on this protocol, not on
``Store``: the store calls them, they never import it, so the managers floor has no import
cycle, and nothing outside the store touches its fields. The store owns its contexts: only
it creates staging folders, installs a staged context (through its backend's
``ContextCatalog``: on the embedded backend a rename, or an atomic exchange with the live
folder) and forgets the contexts it has open.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from app.core.locks import Lock
from app.managers.context import Context


class ContextHost(Protocol):
    """The store directory as seen by the operations that work on whole contexts."""

    @property
    def root(self) -> Path:
        """The store's folder."""
        ...

    @property
    def contexts_dir(self) -> Path:
        """The folder holding one folder per context (``app.core.layout.CONTEXTS_DIR``)."""
        ...

    @property
    def writer_lock(self) -> Lock:
        """The store's writer lock (held to create, drop and install contexts)."""
        ...

    def check_open(self) -> None:
        """``StorageError`` once the store is closed."""
        ...

    def contexts(self) -> list[str]:
        """Names of the store's contexts, sorted."""
        ...

    def context(self, name: str = "default", *, create: bool = True) -> Context:
        """The live context ``name`` (created unless ``create`` is False)."""
        ...

    def exists(self, name: str) -> bool:
        """Whether the context ``name`` exists (its ``context.json`` is a file)."""
        ...

    def staging(self, purpose: str) -> AbstractContextManager[Path]:
        """A fresh private folder inside the contexts folder, locked while in use and removed
        afterwards unless it was installed (``purpose`` in ``layout.STAGING_PURPOSES``)."""
        ...

    def open_staged(self, name: str, folder: Path, *, trusted: bool) -> Context:
        """A ``Context`` named ``name`` on the staged copy ``folder`` (not one of the store's
        open contexts; close it). ``trusted``: it sees the store's trust marks; otherwise an
        empty private trust folder (an imported archive is never trusted)."""
        ...

    def install(self, name: str, staged: Path, *, replace: bool) -> None:
        """Make ``staged`` the context ``name``: a rename when it is new; with ``replace`` an
        atomic exchange with the live folder (then ``staged`` holds the old content). The
        caller holds ``writer_lock`` and, when replacing, the live context's writer lock."""
        ...

    def forget(self, name: str) -> None:
        """Close and drop the store's open ``Context`` of ``name`` (its files were replaced)."""
        ...


__all__ = ["ContextHost"]
