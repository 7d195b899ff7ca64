"""``ContextPart``: the unit of extension of a context (see docs/api.md, "Context parts").

A context is its record core (``context.json``, one batch log per collection, the query index
derived from the logs) plus a set of *parts*: embedding sets, models, and whatever comes next.
Each part lives in its own folder of the context (a name from ``app.core.layout``) and is
described by one object implementing ``ContextPart``, registered once in
``app.managers.parts``. Export, import, merge, ``save_context`` / ``load_context``, ``stats``
and ``verify`` iterate over that registry and never name a part.

What every part promises about its folder: the files in it are only ever replaced by rename
(never rewritten in place), so a hard-link copy of the folder taken under the context's writer
lock is a consistent snapshot; dot names are private (locks, temp files) and are not copied.

The methods take the context as a ``PartContext`` (what a part may use of it), so no part
module imports ``Context``; ``ctx.part(p)`` returns the part's handle (e.g. the
``EmbeddingStore`` that ``ctx.embeddings`` is), opened once per context.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from app.backends.protocols import Backend
from app.core.locks import Lock

H = TypeVar("H")
H_co = TypeVar("H_co", covariant=True)

MERGE_MODES = ("merge", "skip")
"""``mode`` of ``ContextPart.merge``: ``merge`` lets imported items win, ``skip`` adds only
what the context does not have."""


class PartContext(Protocol):
    """What a part may use of the context it belongs to (``app.managers.context.Context``)."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def writer_lock(self) -> Lock: ...

    @property
    def trust_dir(self) -> Path: ...

    @property
    def backend(self) -> Backend:
        """Where the context's records, files and documents are kept."""
        ...

    def part(self, part: ContextPart[H]) -> H: ...

    def matching_ids(self, collection: str, where: Mapping[str, Any] | None = None) -> list[str]:
        """Ids of the current records of ``collection`` matching ``where``."""
        ...


class ContextPart(Protocol[H_co]):
    """One kind of content of a context, kept in the folder ``folder`` of the context.

    ``name`` is the part's key everywhere a context is described: the archive manifest's
    summary (``Manifest.<name>``), ``ContextState.<name>`` and a context's ``stats()``
    (``<name>`` and ``<name>_bytes``).

    ``incomplete``, ``verify`` and ``stats`` are called whether or not the part's folder
    exists (a missing folder is an empty part; one of the wrong type, or a link, is damage
    they report); ``summary``, ``load_state`` and ``merge`` only when it is a directory.
    """

    @property
    def name(self) -> str: ...

    @property
    def folder(self) -> str: ...

    def open(self, ctx: PartContext) -> H_co:
        """The part's handle for ``ctx`` (what ``ctx.part(self)`` caches and returns)."""
        ...

    def recorded_files(self, folder: Path) -> dict[str, tuple[int, str]]:
        """``(size, sha256)`` on record for each file of the part folder ``folder`` (relative
        POSIX paths): export compares the files it packs with them."""
        ...

    def incomplete(self, folder: Path) -> list[str]:
        """Cheap checks before an export: what would make an archive silently lack part of
        the content (a folder of the wrong type, a commit point gone). Empty when nothing."""
        ...

    def summary(self, ctx: PartContext) -> dict[str, Any]:
        """The part's entry in an archive manifest (JSON values), by item name."""
        ...

    def verify(self, ctx: PartContext) -> list[str]:
        """Every problem found in the part's files (checksums included); never raises for
        damage."""
        ...

    def stats(self, ctx: PartContext) -> dict[str, Any]:
        """Counts per item for ``Store.stats()`` (may raise ``IntegrityError`` for damage)."""
        ...

    def load_state(self, ctx: PartContext) -> dict[str, Any]:
        """The part's whole content in memory, by item name (``load_context``)."""
        ...

    def save_state(self, ctx: PartContext, items: Mapping[str, Any]) -> None:
        """Write ``items`` (by item name, names already checked) into the empty part of a
        staged context (``save_context``); ``InvalidInput`` for an item of the wrong type."""
        ...

    def merge(
        self, target: PartContext, source: PartContext, names: Iterable[str], mode: str
    ) -> None:
        """Merge the items ``names`` of the checked, staged ``source`` into ``target`` (a
        staged copy of the live context) with ``mode`` in ``MERGE_MODES``; ``ConflictError``
        when an item cannot be merged."""
        ...


__all__ = ["MERGE_MODES", "ContextPart", "PartContext"]
