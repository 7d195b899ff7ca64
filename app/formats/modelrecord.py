"""The record of one model version, ``vNNNN.json`` (docs/api.md, "Models"): a checksummed
JSON document holding the ``ModelInfo`` fields, and for chunked formats the SHA-256 of each
piece of the file. The record is a version's commit point. This module reads, checks and
writes the document; where it lives and what a version means is the model store's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.core.artifacts import ModelInfo
from app.core.errors import IntegrityError
from app.core.layout import model_file, model_record
from app.core.nofollow import read_regular
from app.formats import modelcodecs
from app.formats.hashio import check_document, dump_checked, parse_checked
from app.formats.modelcodecs import Recorded

DOCUMENT = "ctxstore.model"
FORMAT_VERSION = 1
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class VersionRecord:
    """A parsed, consistent record: the version's ``ModelInfo`` and its piece digests."""

    info: ModelInfo
    chunks: list[str] = field(default_factory=list)
    chunk_bytes: int = 0

    @property
    def recorded(self) -> Recorded:
        """What the file must match before it is read."""
        return Recorded(self.info.sha256, self.info.size_bytes, self.chunks, self.chunk_bytes)


def _chunks(doc: dict[str, Any], path: Path) -> tuple[list[str], int]:
    chunks, chunk_bytes = doc.get("chunk_sha256", []), doc.get("chunk_bytes", 0)
    ok = (
        isinstance(chunks, list)
        and all(isinstance(c, str) and SHA256.fullmatch(c) for c in chunks)
        and isinstance(chunk_bytes, int)
        and chunk_bytes >= 0
    )
    if not ok:
        raise IntegrityError(f"{path}: damaged chunk digests")
    return chunks, chunk_bytes


def parse(doc: dict[str, Any], path: Path, name: str) -> VersionRecord:
    """The record ``doc`` read from ``path`` for the model ``name``; ``IntegrityError``
    unless it is a consistent record of a registered format."""
    check_document(doc, path, DOCUMENT, FORMAT_VERSION)
    fields = {k: v for k, v in doc.items() if k in ModelInfo.model_fields}
    try:
        info = ModelInfo.model_validate(fields)
    except ValidationError as exc:
        raise IntegrityError(f"{path}: damaged model record ({str(exc)[:160]})") from None
    if (
        info.name != name
        or not modelcodecs.is_format(info.format)
        or path.name != model_record(info.version)
        or info.file != model_file(info.version, info.format)
        or SHA256.fullmatch(info.sha256) is None
        or info.size_bytes < 0
    ):
        raise IntegrityError(f"{path}: inconsistent model record")
    return VersionRecord(info, *_chunks(doc, path))


def read(path: Path, name: str) -> VersionRecord:
    """The record at ``path`` (never through a link; ``FileNotFoundError`` propagates)."""
    return parse(parse_checked(read_regular(path), path), path, name)


def dump(info: ModelInfo, chunks: list[str] | None = None, chunk_bytes: int = 0) -> bytes:
    """The checksummed document for ``info`` (and the piece digests of a chunked file)."""
    doc: dict[str, Any] = {"document": DOCUMENT, "format_version": FORMAT_VERSION}
    doc |= info.model_dump()
    if chunks:
        doc |= {"chunk_sha256": chunks, "chunk_bytes": chunk_bytes}
    return dump_checked(doc)
