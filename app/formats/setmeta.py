"""An embedding set's ``metadata.json`` (``layout.SET_META``): the commit point of the set.

A JSON document carrying its own checksum (``hashio.dump_checked``) that lists the set's
shards in order (file, row count, size, SHA-256, creation time), the set's dimension, dtype,
user metadata and the next shard number (shard numbers are never reused). This module knows
the document, nothing of where it is stored.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.core.artifacts import EmbeddingInfo, ShardInfo
from app.core.errors import IntegrityError
from app.core.layout import SHARD_PATTERN
from app.formats.hashio import check_document, dump_checked, parse_checked

FORMAT = "ctxstore.embeddings"
FORMAT_VERSION = 1
DTYPES = ("float16", "float32", "float64")


def set_digest(shards: list[ShardInfo]) -> str:
    """The set's ``sha256``: its shard's, or of the shard digests joined by newlines."""
    if len(shards) == 1:
        return shards[0].sha256
    return hashlib.sha256("\n".join(s.sha256 for s in shards).encode("ascii")).hexdigest()


def make_doc(
    info_fields: dict[str, Any], shards: list[ShardInfo], next_shard: int
) -> dict[str, Any]:
    """The document for a set with ``info_fields`` (name, dim, dtype, created_at,
    updated_at, metadata) and ``shards``, in order."""
    return {
        "document": FORMAT,
        "format_version": FORMAT_VERSION,
        **info_fields,
        "count": sum(s.count for s in shards),
        "size_bytes": sum(s.size_bytes for s in shards),
        "shards": [s.model_dump() for s in shards],
        "next_shard": next_shard,
    }


def dump(doc: dict[str, Any]) -> bytes:
    """The document's bytes (readable JSON with its checksum)."""
    return dump_checked(doc)


def info_of(doc: dict[str, Any], path: Path) -> tuple[EmbeddingInfo, int]:
    """The ``EmbeddingInfo`` and next shard number recorded in a parsed document
    (``IntegrityError`` naming ``path`` if it is inconsistent)."""
    check_document(doc, path, FORMAT, FORMAT_VERSION)
    fields = {k: v for k, v in doc.items() if k in EmbeddingInfo.model_fields}
    try:
        shards = [ShardInfo.model_validate(s, strict=True) for s in doc.get("shards", [])]
        info = EmbeddingInfo.model_validate({**fields, "shards": shards, "sha256": ""})
        info = info.model_copy(update={"sha256": set_digest(shards)})
    except (ValidationError, TypeError) as exc:
        raise IntegrityError(f"{path}: damaged metadata ({str(exc)[:160]})") from None
    next_shard = doc.get("next_shard")
    bad = (
        not shards
        or info.dtype not in DTYPES
        or info.dim < 1
        or info.count != sum(s.count for s in shards)
        or not isinstance(next_shard, int)
        or any(SHARD_PATTERN.fullmatch(s.file) is None or s.count < 0 for s in shards)
        or len({s.file for s in shards}) != len(shards)
    )
    if bad:
        raise IntegrityError(f"{path}: inconsistent metadata")
    assert isinstance(next_shard, int)
    return info, next_shard


def parse(data: bytes, path: Path) -> tuple[EmbeddingInfo, int]:
    """``info_of`` the document ``data`` read from ``path`` (checksum checked first)."""
    return info_of(parse_checked(data, path), path)
