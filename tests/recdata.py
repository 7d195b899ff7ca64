"""Record factories shared by the record-store tests."""

from __future__ import annotations


def analogy(i: int, **extra: object) -> dict[str, object]:
    """A valid analogy record with a stable id."""
    rec: dict[str, object] = {
        "id": f"a{i}",
        "source_domain": f"d{i % 7}",
        "target_domain": f"t{i % 5}",
        "quality_score": (i % 100) / 100,
    }
    rec.update(extra)
    return rec
