"""What a model ``<name>`` holds, read through the backend seam (``app.backends``): the version
numbers of its records (``MetaStore.names``) and files (``FileStore.list``), the high-water
mark kept when versions are deleted, and (for export) the size and SHA-256 on record for every
file (docs/api.md, "Models").

Where the seam stops (PERSISTENCE_LAYER_STRATEGY.md, "Where the seam stops today"): the
high-water mark is a file ``high-water`` in the embedded backend's model folder (the part's
``MetaStore`` admits ``vNNNN.json`` documents only), and the models of a part are found by
listing its folder (``MetaStore`` has no listing of items).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from app.backends.local import LocalMetaStore
from app.backends.protocols import FileStore, MetaStore
from app.core.layout import MODEL_FILE_PATTERN, MODEL_RECORD_PATTERN, model_record
from app.core.names import is_valid_name
from app.core.nofollow import check_chain, entries, read_regular
from app.formats import modelcodecs, modelrecord
from app.formats.hashio import parse_checked

HIGH_WATER = "high-water"  # the highest version ever given out, kept when versions are deleted


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


def high_water(model_dir: Path) -> int | None:
    """The high-water mark of deleted versions (None: none kept)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(read_regular(model_dir / HIGH_WATER))
    return None


def model_names(root: Path) -> list[str]:
    """The item folders below the ``models`` folder ``root`` (real folders with a valid name,
    sorted); ``IntegrityError`` if ``root`` or the context folder is a link or a file."""
    check_chain(root.parent, root.name, last="dir")
    return [
        e.name for e in entries(root) if is_valid_name(e.name) and e.is_dir(follow_symlinks=False)
    ]


def recorded_files(root: Path) -> dict[str, tuple[int, str]]:
    """``(size, sha256)`` on record for every model file below the ``models`` folder
    ``root``, keyed by ``<model>/<file>`` (for export's check of what it packs). A damaged
    record raises ``IntegrityError`` naming it."""
    meta = LocalMetaStore(root, MODEL_RECORD_PATTERN)
    out: dict[str, tuple[int, str]] = {}
    for name in model_names(root):
        for number in record_numbers(meta, name):
            record = read_record(meta, name, number)
            if record is not None:
                info = record.info
                out[file_key(name, info.file)] = (info.size_bytes, info.sha256)
    return out
