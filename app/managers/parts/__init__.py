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

from app.core.names import is_valid_name
from app.managers.parts.embeddings import EMBEDDINGS
from app.managers.parts.models import MODELS
from app.managers.parts.protocol import MERGE_MODES, ContextPart, PartContext

RESERVED = frozenset(
    {"collections", "records", "index_bytes", "bytes", "problems", "files", "context"}
)
"""Keys of a context's stats, state and manifest that belong to the record core."""

_REGISTRY: list[ContextPart[Any]] = []


def register(part: ContextPart[Any]) -> ContextPart[Any]:
    """Add ``part`` after the registered ones (its name and folder must be new)."""
    if not (is_valid_name(part.name) and is_valid_name(part.folder)) or part.name in RESERVED:
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
