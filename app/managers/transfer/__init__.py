"""Whole contexts (docs/api.md, "Whole contexts"): save / load in memory, export / import as
archives, merge on import. One module per operation; every one iterates over the registered
context parts (``app.managers.parts``) and never names a part, and works on the store through
``ContextHost`` (``app.managers.host``), never on ``Store`` itself.

- ``export``: snapshot under the writer lock, hash, manifest, archive.
- ``importing``: check everything in a staging folder, then install (or merge).
- ``merge``: ``on_conflict="merge" | "skip"`` applied to a staged copy of the live context.
- ``state``: ``save_context`` / ``load_context``.
- ``manifest``: building and reading manifests; ``fs``: snapshot copies and hashing.
"""

from __future__ import annotations

from app.managers.transfer.export import export_context
from app.managers.transfer.importing import import_context
from app.managers.transfer.state import load_context, save_context

__all__ = ["export_context", "import_context", "load_context", "save_context"]
