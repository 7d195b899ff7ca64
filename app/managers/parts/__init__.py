"""The registry of context parts: the one list of what a context holds besides its records.

A context is its record core (``context.json``, the collections' batch logs and the query
index derived from them: ``app.managers.context``) plus the parts registered here, in this
order. Export, import, merge, ``save_context`` / ``load_context``, ``stats`` and ``verify``
iterate over ``parts()`` and never name a part.

Adding a part = one new module implementing ``ContextPart`` (see ``protocol``; copy
``embeddings.py``) + one ``register(...)`` line below. See docs/api.md, "Context parts".
"""

from __future__ import annotations

from typing import Any

from app.core import layout
from app.core.names import is_valid_name
from app.managers.parts.embeddings import EMBEDDINGS
from app.managers.parts.models import MODELS
from app.managers.parts.protocol import MERGE_MODES, ContextPart, PartContext

RESERVED = frozenset(
    {
        # a context's stats and state: the record core's keys ("index" would give "index_bytes")
        "collections",
        "records",
        "index",
        "index_bytes",
        "bytes",
        "problems",
        # the manifest's own fields
        "format",
        "format_version",
        "context",
        "library_version",
        "created_at",
        "files",
    }
)
"""Names a part cannot take: keys of a context's stats, state and manifest that belong to the
record core or the manifest itself."""

_REGISTRY: list[ContextPart[Any]] = []


def register(part: ContextPart[Any]) -> ContextPart[Any]:
    """Add ``part`` after the registered ones (its name and folder must be new)."""
    usable = is_valid_name(part.name) and is_valid_name(part.folder)
    usable = usable and layout.collection_of(part.folder) is None  # never a log's name
    if not usable or part.name in RESERVED or f"{part.name}_bytes" in part_names():
        raise ValueError(f"part name {part.name!r} / folder {part.folder!r} is not usable")
    if any(p.name == part.name or p.folder == part.folder for p in _REGISTRY):
        raise ValueError(f"a part named {part.name!r} or kept in {part.folder!r} is registered")
    _REGISTRY.append(part)
    return part


def unregister(name: str) -> None:
    """Remove the part ``name`` (tests; a part registered by a plug-in that is unloaded)."""
    _REGISTRY[:] = [p for p in _REGISTRY if p.name != name]


def parts() -> tuple[ContextPart[Any], ...]:
    """The registered parts, in registration order."""
    return tuple(_REGISTRY)


def part_names() -> frozenset[str]:
    return frozenset(p.name for p in _REGISTRY)


register(EMBEDDINGS)
register(MODELS)

__all__ = [
    "MERGE_MODES",
    "RESERVED",
    "ContextPart",
    "PartContext",
    "part_names",
    "parts",
    "register",
    "unregister",
]
