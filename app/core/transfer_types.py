"""Types of whole-context transfer: ``ContextState`` and ``Manifest`` (docs/api.md).

Pure definitions, no I/O. ``Manifest`` is also the exact schema of ``manifest.json`` at the
root of an export archive. Both carry one entry per context part (``app.managers.parts``)
under the part's name: ``embeddings`` and ``models`` are declared here; a part added later
rides along as an extra field of the same shape (``extra="allow"``), and import refuses a
manifest field that names no registered part, so an archive with fields from a newer format is
refused rather than half understood. See docs/api.md, "Whole contexts".
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core.names import NAME_PATTERN

MANIFEST_FORMAT = "ctxstore-context"
MANIFEST_VERSION = 1
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ContextState(BaseModel):
    """The whole content of a context, in memory.

    ``collections``: records per collection (plain dicts with their ``"id"``);
    ``embeddings``: ``app.EmbeddingSet`` per set name (anything with ``ids``, ``vectors`` and
    ``metadata`` is accepted when saving); ``models``: model objects per name (the latest
    version; ``load_context`` returns them as ``ctx.models.load`` does); a part registered
    later: its items by name, under the part's name.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="allow")

    collections: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    embeddings: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, Any] = Field(default_factory=dict)


class ManifestFile(BaseModel):
    """One file of an archive: its path relative to the context directory, size and hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=1, max_length=512)
    size: int = Field(ge=0)
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not SHA256_HEX.fullmatch(value):
            raise ValueError("must be 64 lowercase hex digits")
        return value


class Manifest(BaseModel):
    """What an export archive (or a saved context) holds; ``manifest.json`` of the archive."""

    model_config = ConfigDict(frozen=True, extra="allow")

    format: str = MANIFEST_FORMAT
    format_version: int = MANIFEST_VERSION
    context: str
    library_version: str
    created_at: str
    files: list[ManifestFile] = Field(default_factory=list)
    collections: dict[str, int] = Field(default_factory=dict)
    embeddings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    models: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)

    @field_validator("context")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value) or value in (".", ".."):
            raise ValueError("not a valid context name")
        return value

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of the listed files."""
        return sum(f.size for f in self.files)

    @property
    def record_count(self) -> int:
        return sum(self.collections.values())


__all__ = ["MANIFEST_FORMAT", "MANIFEST_VERSION", "ContextState", "Manifest", "ManifestFile"]
