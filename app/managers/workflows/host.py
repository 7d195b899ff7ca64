"""What workflows need from the store that runs them: a narrow protocol, so that this package
never imports ``Store`` (the store imports ``WorkflowManager``, not the reverse)."""

from __future__ import annotations

from typing import Protocol

from app.managers.context import Context


class WorkflowHost(Protocol):
    """The store as workflows see it (``app.managers.store.Store`` satisfies it)."""

    def check_open(self) -> None:
        """``StorageError`` if the store was closed."""
        ...

    def context(self, name: str = "default", *, create: bool = True) -> Context:
        """Open (by default create) a context."""
        ...
