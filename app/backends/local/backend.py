"""``LocalBackend``: the embedded backend (one directory on one host; docs/api.md "Opening").

Records: JSONL batch logs and a SQLite index per context (``app.formats.batchlog``,
``app.formats.sqlindex``), coordinated by ``app.backends.local.records.LocalRecords``.
Tracker: ``workflows/tracker.sqlite`` (``app.formats.tracker``).
Tokens and audit log: ``access.sqlite`` (``app.formats.accessdb``).
Files and documents: the part folders of each context (``LocalFileStore``,
``LocalMetaStore``). Contexts: one folder each under ``contexts/`` (``LocalContexts``).
Every name comes from ``app.core.layout``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from app.backends.local.contexts import LocalContexts
from app.backends.local.files import LocalFileStore
from app.backends.local.meta import LocalMetaStore
from app.backends.local.records import LocalRecords
from app.backends.protocols import Records
from app.core.errors import InvalidInput
from app.core.layout import (
    ANN_DIR,
    ANN_FILE_PATTERN,
    ANN_META_PATTERN,
    EMBEDDINGS_DIR,
    MODEL_DOCUMENT_PATTERN,
    MODEL_FILE_PATTERN,
    MODELS_DIR,
    SET_META_PATTERN,
    SHARD_PATTERN,
    access_file,
    context_dir,
    part_dir,
    workflows_dir,
)
from app.core.names import check_name
from app.formats.accessdb import AccessDB
from app.formats.tracker import TrackerDB


class PartFiles:
    """Which file and document names a part keeps in its item folders."""

    def __init__(self, files: re.Pattern[str], what: str, documents: re.Pattern[str]) -> None:
        self.files = files
        self.what = what
        self.documents = documents


PARTS: dict[str, PartFiles] = {
    EMBEDDINGS_DIR: PartFiles(SHARD_PATTERN, "shard", SET_META_PATTERN),
    MODELS_DIR: PartFiles(MODEL_FILE_PATTERN, "model", MODEL_DOCUMENT_PATTERN),
    # derived data of the embeddings part (approximate-search indexes): kept through the same
    # seam, but no context part (never exported, imported or merged)
    ANN_DIR: PartFiles(ANN_FILE_PATTERN, "ANN index", ANN_META_PATTERN),
}


def part_files(part: str) -> PartFiles:
    found = PARTS.get(part)
    if found is None:
        raise InvalidInput(f"part: {part!r} keeps no files (known: {sorted(PARTS)})")
    return found


class LocalBackend:
    """The embedded backend of the store directory ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        folders: Mapping[str, Path] | None = None,
    ) -> None:
        """``folders`` places some contexts elsewhere than ``<root>/contexts/<name>`` (a
        staged copy of a context is one folder outside the contexts folder: ``at``)."""
        self.root = root
        self._folders = dict(folders or {})
        self._catalog = LocalContexts(root)  # holds the store's writer lock: one per backend

    @classmethod
    def at(cls, context: str, folder: Path) -> LocalBackend:
        """A backend holding only ``context``, in the folder ``folder`` (a staged copy of a
        context that import, merge and ``save_context`` build before installing it)."""
        return cls(folder.parent, folders={context: folder})

    def context_folder(self, context: str) -> Path:
        """The folder of ``context`` (checked to be a valid name)."""
        found = self._folders.get(context)
        if found is not None:
            return found
        return context_dir(self.root, check_name(context, "context"))

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.root)!r})"

    @property
    def url(self) -> str:
        return str(self.root)

    def records(self, context: str) -> Records:
        """A new ``LocalRecords`` of the context (its ``Context`` keeps it)."""
        records: Records = LocalRecords(self.context_folder(context), context)
        return records

    def tracker(self) -> TrackerDB:
        return TrackerDB(workflows_dir(self.root))

    def _part(self, context: str, part: str) -> Path:
        return part_dir(self.context_folder(context), part)

    def files(self, context: str, part: str) -> LocalFileStore:
        kind = part_files(part)
        return LocalFileStore(
            self._part(context, part), kind.files, kind.what, documents=kind.documents
        )

    def meta(self, context: str, part: str) -> LocalMetaStore:
        return LocalMetaStore(self._part(context, part), part_files(part).documents)

    def catalog(self) -> LocalContexts:
        """The store directory's ``LocalContexts`` (the same object on every call)."""
        return self._catalog

    def access(self) -> AccessDB:
        """The store's ``access.sqlite`` (created by its first write)."""
        return AccessDB(access_file(self.root))

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Each embedded write commits on its own (journal + batch ids make chunks
        exactly-once): nothing to group."""
        yield

    def close(self) -> None:
        """Nothing shared to close (each part closes its own files)."""
