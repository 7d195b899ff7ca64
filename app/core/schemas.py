"""Pydantic models for data crossing the public boundary, and the built-in record schemas."""

from __future__ import annotations

from typing import Annotated, NamedTuple

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict


class Frozen(BaseModel):
    """The base of the immutable value objects the API returns: frozen, unknown fields refused
    (shared with ``app.core.artifacts``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class BatchReceipt(Frozen):
    """What ``Context.append`` / ``delete`` committed (or had committed, if ``duplicate``)."""

    batch_id: str
    collection: str
    count: int
    duplicate: bool = False
    committed_at: str
    sha256: str


class RecordVersion(Frozen):
    """One entry of a record's history: a version or a deletion (tombstone)."""

    id: str
    collection: str
    batch_id: str
    committed_at: str
    sha256: str
    deleted: bool
    data: dict[str, object] | None
    position: int


class CompactionReport(Frozen):
    collection: str
    records_before: int
    records_after: int
    bytes_before: int
    bytes_after: int


class IntegrityReport(Frozen):
    ok: bool
    problems: list[str] = Field(default_factory=list)
    checked: list[str] = Field(default_factory=list)


# --- built-in record schemas (extra fields allowed; validated in strict mode) -------------


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class Analogy(_Record):
    source_domain: str
    target_domain: str
    quality_score: float = Field(ge=0.0, le=1.0)


class Frame(_Record):
    name: str


class Concept(_Record):
    name: str


# The same rules as TypedDicts: pydantic validates these ~6x faster (no model instances are
# built), so batches of built-in records are checked with them. tests/test_schemas.py keeps
# the two definitions in step.
_TD_CONFIG = ConfigDict(extra="allow", strict=True)
Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class AnalogyDict(TypedDict):
    __pydantic_config__ = _TD_CONFIG  # type: ignore[misc]
    source_domain: str
    target_domain: str
    quality_score: Score


class NamedDict(TypedDict):
    __pydantic_config__ = _TD_CONFIG  # type: ignore[misc]
    name: str


FAST_VALIDATORS: dict[type[BaseModel], type] = {
    Analogy: AnalogyDict,
    Frame: NamedDict,
    Concept: NamedDict,
}

BUILTIN_SCHEMAS: dict[str, type[BaseModel]] = {
    "analogies": Analogy,
    "frames": Frame,
    "concepts": Concept,
}

# Indexed field paths of the built-in collections: each entry is one (composite) index.
BUILTIN_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "analogies": (
        ("source_domain", "quality_score"),
        ("target_domain", "quality_score"),
    ),
    "frames": (("name",),),
    "concepts": (("name",),),
}


class LatestCommit(NamedTuple):
    """The latest log entry of one record id: when its batch committed, and whether it is a
    deletion (read from the log by ``Context.latest_commits``)."""

    committed_at: str
    deleted: bool
