"""The indexed fields of a collection (``define_collection(..., indexes=)``, docs/api.md
"Records"): validated and normalised the same way on every backend."""

from __future__ import annotations

from app.core.errors import InvalidInput
from app.core.filters import field_path

Indexes = tuple[tuple[str, ...], ...]


def normalise_indexes(indexes: object) -> Indexes:
    """``("a", ("b", "c"))`` -> ``(("a",), ("b", "c"))`` after validating every field path."""
    if isinstance(indexes, str) or not isinstance(indexes, list | tuple):
        raise InvalidInput("indexes: expected a sequence of field names or of tuples of them")
    out: list[tuple[str, ...]] = []
    for spec in indexes:
        fields = (spec,) if isinstance(spec, str) else spec
        if not isinstance(fields, list | tuple) or not fields:
            raise InvalidInput("indexes: each index is a field name or a non-empty tuple")
        for f in fields:
            field_path(f, "indexes")
        out.append(tuple(fields))
    return tuple(out)


__all__ = ["Indexes", "normalise_indexes"]
