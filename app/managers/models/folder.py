"""What a model ``<name>`` holds, read through the backend seam (``app.backends``): the version
numbers of its records (``MetaStore.names``) and files (``FileStore.list``), the high-water
mark kept when versions are deleted, and (for export) the size and SHA-256 on record for every
file (docs/api.md, "Models").

The high-water mark is the model's document ``<name>/high-water`` (``layout.MODEL_HIGH_WATER``)
in the part's ``MetaStore``: the file ``models/<name>/high-water`` on the embedded backend, as
version 1 wrote it, and a document row on PostgreSQL, shared by every host. The models of a
part are the ``MetaStore``'s items (``MetaStore.items``).
"""

from __future__ import annotations

from pathlib import Path

from app.backends.local import LocalMetaStore
from app.backends.protocols import FileStore, MetaStore
from app.core.layout import (
    MODEL_DOCUMENT_PATTERN,
    MODEL_FILE_PATTERN,
    MODEL_HIGH_WATER,
    MODEL_RECORD_PATTERN,
    model_record,
)
from app.formats import modelcodecs, modelrecord
from app.formats.hashio import parse_checked


def record_key(name: str, version: int) -> str:
    """The key of a version's record in the part's ``MetaStore``."""
    return f"{name}/{model_record(version)}"


def file_key(name: str, file: str) -> str:
    """The key of a model file in the part's ``FileStore``."""
    return f"{name}/{file}"


def record_numbers(meta: MetaStore, name: str) -> list[int]:
    """The versions of model ``name`` with a record (committed), ascending."""
    return sorted(
        int(m.group(1)) for n in meta.names(name) if (m := MODEL_RECORD_PATTERN.fullmatch(n))
    )


def file_numbers(files: FileStore, name: str) -> list[int]:
    """The version number of every file of a registered format (with or without record);
    refuses (``IntegrityError``) a link or special file in the model's folder."""
    return [
        int(m.group(1))
        for key in files.list(name)
        if (m := MODEL_FILE_PATTERN.fullmatch(key.rpartition("/")[2]))
        and modelcodecs.is_format(m.group(2))
    ]


def read_record(meta: MetaStore, name: str, version: int) -> modelrecord.VersionRecord | None:
    """The parsed record of a version, None if it does not exist; ``IntegrityError`` naming
    the document if it is damaged (or a link, or a folder)."""
    key = record_key(name, version)
    data = meta.read(key)
    if data is None:
        return None
    where = meta.where(key)
    return modelrecord.parse(parse_checked(data, where), where, name)


def high_water_key(name: str) -> str:
    """The key of the model's high-water mark in the part's ``MetaStore``."""
    return f"{name}/{MODEL_HIGH_WATER}"


def high_water(meta: MetaStore, name: str) -> int | None:
    """The high-water mark of deleted versions (None: none kept, or unreadable)."""
    data = meta.read(high_water_key(name))
    if data is None:
        return None
    try:
        return int(data)
    except ValueError:
        return None


def set_high_water(meta: MetaStore, name: str, version: int) -> None:
    """Keep ``version`` as the highest version ever given out (atomic, durable)."""
    meta.write(high_water_key(name), str(version).encode())


def model_names(meta: MetaStore) -> list[str]:
    """The items of the models part (sorted); ``IntegrityError`` if the part is damaged."""
    return meta.items()


def recorded_files(root: Path, meta: MetaStore | None = None) -> dict[str, tuple[int, str]]:
    """``(size, sha256)`` on record for every model file of the part, keyed by
    ``<model>/<file>`` (for export's check of what it packs): read through ``meta`` (default:
    the embedded ``MetaStore`` over the ``models`` folder ``root``, a staged copy). A damaged
    record raises ``IntegrityError`` naming it."""
    meta = meta or LocalMetaStore(root, MODEL_DOCUMENT_PATTERN)
    out: dict[str, tuple[int, str]] = {}
    for name in model_names(meta):
        for number in record_numbers(meta, name):
            record = read_record(meta, name, number)
            if record is not None:
                info = record.info
                out[file_key(name, info.file)] = (info.size_bytes, info.sha256)
    return out
