"""What a model's folder ``models/<name>/`` holds, read without following links: the
version numbers of its records and files, the high-water mark kept when versions are deleted,
and (for export) the size and SHA-256 on record for every file (docs/api.md, "Models")."""

from __future__ import annotations

import contextlib
from pathlib import Path

from app.core.layout import MODEL_FILE_PATTERN, MODEL_RECORD_PATTERN
from app.core.names import is_valid_name
from app.core.nofollow import entries, exists_as, read_regular
from app.formats import modelcodecs, modelrecord

HIGH_WATER = "high-water"  # the highest version ever given out, kept when versions are deleted


def record_numbers(model_dir: Path) -> list[int]:
    """The versions with a record (committed), ascending."""
    return sorted(
        int(m.group(1)) for p in entries(model_dir) if (m := MODEL_RECORD_PATTERN.fullmatch(p.name))
    )


def model_files(model_dir: Path) -> list[tuple[int, Path]]:
    """``(version, path)`` of every file of a registered format (with or without record)."""
    return [
        (int(m.group(1)), Path(e.path))
        for e in entries(model_dir)
        if (m := MODEL_FILE_PATTERN.fullmatch(e.name)) and modelcodecs.is_format(m.group(2))
    ]


def used_numbers(model_dir: Path) -> list[int]:
    """Every number a version of this model ever had: records, files left by a crash, and
    the high-water mark of deleted versions (the folder exists)."""
    used = record_numbers(model_dir) + [number for number, _ in model_files(model_dir)]
    with contextlib.suppress(FileNotFoundError, ValueError):
        used.append(int(read_regular(model_dir / HIGH_WATER)))
    return used


def recorded_files(root: Path) -> dict[str, tuple[int, str]]:
    """``(size, sha256)`` on record for every model file below the ``models`` folder
    ``root``, keyed by ``<model>/<file>`` (for export's check of what it packs). A damaged
    record raises ``IntegrityError`` naming it."""
    out: dict[str, tuple[int, str]] = {}
    for entry in entries(root):
        if not (is_valid_name(entry.name) and entry.is_dir(follow_symlinks=False)):
            continue
        for record in entries(Path(entry.path)):
            if MODEL_RECORD_PATTERN.fullmatch(record.name) and exists_as(Path(record.path), "file"):
                info = modelrecord.read(Path(record.path), entry.name).info
                out[f"{entry.name}/{info.file}"] = (info.size_bytes, info.sha256)
    return out
