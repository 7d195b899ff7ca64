"""Pydantic models for embedding sets and models crossing the public boundary (docs/api.md,
"Embeddings" and "Models")."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any, overload

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.core.schemas import Frozen


class ShardInfo(Frozen):
    """One ``.npz`` file of an embedding set (sets grow by appending shards)."""

    file: str
    count: int
    sha256: str
    size_bytes: int
    created_at: str


class EmbeddingInfo(Frozen):
    """What the store records about an embedding set.

    ``sha256`` is the SHA-256 of the set's only shard file; for a set of several shards it is
    the SHA-256 of the shards' hex digests joined by newlines, in order.
    """

    name: str
    count: int
    dim: int
    dtype: str
    sha256: str
    created_at: str
    updated_at: str
    size_bytes: int
    shards: list[ShardInfo] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Hit(Frozen):
    """One search result. For ``cosine``/``dot`` higher scores are better; for ``l2`` the
    score is the Euclidean distance (lower is better). Hits always come best first."""

    id: str
    score: float


class IdList(Sequence[str]):
    """The ids of an embedding set: a read-only sequence of ``str`` over a numpy string array
    (memory-mapped when the set was loaded with ``mmap=True``), so nothing is copied.

    Compares equal to any sequence of the same strings (``es.ids == ["a", "b"]`` is a bool).
    ``.array`` is the underlying numpy array.
    """

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray[Any, Any]) -> None:
        self.array = array

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> IdList: ...

    def __getitem__(self, index: int | slice) -> str | IdList:
        if isinstance(index, slice):
            return IdList(self.array[index])
        return str(self.array[index])

    def __iter__(self) -> Iterator[str]:
        step = 65536
        for start in range(0, len(self), step):
            yield from self.array[start : start + step].tolist()

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and bool((self.array == value).any())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IdList):
            other_array = other.array
        elif isinstance(other, Sequence) and not isinstance(other, str | bytes):
            if len(other) != len(self):
                return False
            if not all(isinstance(x, str) for x in other):
                return False
            other_array = np.asarray(list(other), dtype=str)
        elif isinstance(other, np.ndarray):
            other_array = other
        else:
            return NotImplemented
        return bool(self.array.shape == other_array.shape and (self.array == other_array).all())

    __hash__ = None  # type: ignore[assignment]

    def tolist(self) -> list[str]:
        out: list[str] = self.array.tolist()
        return out

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self.array[:5].tolist())
        more = ", ..." if len(self) > 5 else ""
        return f"IdList([{head}{more}], len={len(self)})"


class EmbeddingSet(BaseModel):
    """An embedding set as loaded: ``ids`` (one per row), ``vectors`` (rows x dim),
    the user ``metadata`` and the store's ``info``. ``vectors`` is a read-only
    ``numpy.memmap`` when loaded with ``mmap=True`` from a one-shard set.

    Equality compares content (ids, vectors, metadata), not ``info``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    ids: IdList
    vectors: np.ndarray[Any, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)
    info: EmbeddingInfo | None = None

    @field_validator("ids", mode="before")
    @classmethod
    def _wrap_ids(cls, value: Any) -> IdList:
        if isinstance(value, IdList):
            return value
        if isinstance(value, np.ndarray):
            return IdList(value)
        return IdList(np.asarray(list(value), dtype=str))

    @field_validator("vectors", mode="before")
    @classmethod
    def _as_array(cls, value: Any) -> np.ndarray[Any, Any]:
        return value if isinstance(value, np.ndarray) else np.asarray(value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EmbeddingSet):
            return NotImplemented
        return (
            self.ids == other.ids
            and self.vectors.shape == other.vectors.shape
            and bool(np.array_equal(self.vectors, other.vectors))
            and self.metadata == other.metadata
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.vectors.shape)
        return f"EmbeddingSet(ids={len(self.ids)}, vectors={shape} {self.vectors.dtype})"


ModelFormat = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=32)]
"""A model file format: the suffix of a registered codec (``"pth"``, ``"joblib"``,
``"safetensors"``...). Which suffixes exist is the formats layer's codec registry, checked
wherever a model record is read; here it is only a well-formed suffix."""


class ModelInfo(Frozen):
    """One saved version of a model."""

    name: str
    version: int
    format: ModelFormat
    file: str
    sha256: str
    size_bytes: int
    created_at: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    class_path: str = ""
    parameter_count: int | None = None
    library_versions: dict[str, str] = Field(default_factory=dict)
