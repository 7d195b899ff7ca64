"""The manifest of a context archive or saved context: built from a staged snapshot (files
hashed and compared with what the parts have on record), and read back from an archive.

``Manifest`` (``app.core.transfer_types``) holds, besides the files and the record counts, one
summary per context part under the part's name (``ContextPart.summary``). See docs/api.md,
"Whole contexts".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.core.clock import utc_iso
from app.core.errors import IntegrityError, SchemaVersionError
from app.core.transfer_types import MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, ManifestFile
from app.core.version import __version__
from app.managers.parts import ContextPart, PartContext, part_names, parts
from app.managers.transfer.fs import hash_files, part_present, recorded_digests


def has_part(folder: Path, part: ContextPart[Any]) -> bool:
    """Whether the context (or staged copy) in ``folder`` holds ``part``'s folder."""
    return (folder / part.folder).is_dir()


def summaries(ctx: PartContext) -> dict[str, dict[str, Any]]:
    """Each part's manifest summary of ``ctx`` (empty for a part it does not hold)."""
    return {p.name: p.summary(ctx) if part_present(ctx, p) else {} for p in parts()}


def part_summary(manifest: Manifest, part: ContextPart[Any]) -> Mapping[str, Any]:
    """``part``'s summary in ``manifest`` (its items by name); empty when absent."""
    value = getattr(manifest, part.name, None)
    return value if isinstance(value, Mapping) else {}


def build_manifest(
    name: str,
    root: Path,
    files: list[str],
    counts: Mapping[str, int],
    part_summaries: Mapping[str, dict[str, Any]],
) -> Manifest:
    """The manifest of the staged files ``files`` below ``root``: every part file is compared
    with its recorded size and SHA-256 while it is hashed (``IntegrityError`` if damaged)."""
    hashed = hash_files([root / f for f in files], expected=recorded_digests(root))
    return Manifest(
        format=MANIFEST_FORMAT,
        format_version=MANIFEST_VERSION,
        context=name,
        library_version=__version__,
        created_at=utc_iso(),
        files=[
            ManifestFile(path=f, size=s, sha256=h) for f, (s, h) in zip(files, hashed, strict=True)
        ],
        collections=dict(counts),
        **part_summaries,
    )


def parse_manifest(raw: Mapping[str, Any], src: Path) -> Manifest:
    """The manifest of the archive ``src``; ``IntegrityError`` for anything but a manifest
    this version writes (a field naming no registered part included), ``SchemaVersionError``
    for a newer format."""
    fmt, version = raw.get("format"), raw.get("format_version")
    if fmt != MANIFEST_FORMAT:
        raise IntegrityError(f"{src}: not a ctxstore context archive (format {str(fmt)[:40]!r})")
    if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION:
        raise SchemaVersionError(
            f"{src}: archive format {version} is newer than this ctxstore reads "
            f"({MANIFEST_VERSION})"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise IntegrityError(f"{src}: manifest field {where}: {first['msg']}") from None
    known = part_names()
    for key, value in sorted((manifest.model_extra or {}).items()):
        if key not in known:
            raise IntegrityError(f"{src}: manifest field {key}: Extra inputs are not permitted")
        if not isinstance(value, dict):
            raise IntegrityError(f"{src}: manifest field {key}: Input should be a valid dictionary")
    return manifest


__all__ = ["build_manifest", "has_part", "parse_manifest", "part_summary", "summaries"]
