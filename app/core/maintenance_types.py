"""What the store's maintenance operations return: ``GcReport`` (``Store.gc``), and the
reports of ``ctxstore upgrade`` and ``ctxstore migrate`` (docs/api.md, "Garbage collection",
"Upgrading a store", "Moving a store")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, computed_field

from app.core.schemas import Frozen

GcKind = Literal["staging", "object", "workflow", "compaction"]
"""What a ``GcItem`` is: a leftover staging folder, an unreferenced object-store file, a
finished workflow (its row, journal and staged items) or a collection's log to compact."""


class GcItem(Frozen):
    """One thing ``Store.gc`` removes (or, in a dry run, would remove)."""

    kind: GcKind
    path: str
    """A folder, an object's URL (password redacted), ``workflow:<id>`` or
    ``<context>/<collection>``."""
    bytes: int = Field(ge=0)
    """Bytes freed: the folder's or object's size, a workflow's staged items, or the
    superseded share of a log (the bytes of its entries a compaction drops)."""


class GcReport(Frozen):
    """What ``Store.gc`` removed, or with ``dry_run`` would remove (the same list)."""

    dry_run: bool
    items: list[GcItem] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def bytes(self) -> int:
        """Total bytes of ``items``."""
        return sum(i.bytes for i in self.items)

    def paths(self, kind: GcKind | None = None) -> list[str]:
        """The paths of ``items`` (of one ``kind``), in report order."""
        return [i.path for i in self.items if kind is None or i.kind == kind]


class UpgradeReport(Frozen):
    """What ``ctxstore upgrade`` did: each migration applied, and notes for the user (things
    an upgrade never decides alone, such as re-signing version-1 trust marks)."""

    root: str
    applied: list[str] = Field(default_factory=list)
    checked: int = 0
    """Contexts whose format was checked."""
    notes: list[str] = Field(default_factory=list)


class MigrateReport(Frozen):
    """What ``ctxstore migrate`` moved: contexts copied and replaced, their current records,
    the archives' bytes and the pickled model versions vouched for in the destination."""

    source: str
    destination: str
    moved: list[str] = Field(default_factory=list)
    replaced: list[str] = Field(default_factory=list)
    records: int = 0
    bytes: int = 0
    trusted_models: int = 0
    """Pickled model versions vouched for in the destination (trusted in the source)."""


__all__ = ["GcItem", "GcKind", "GcReport", "MigrateReport", "UpgradeReport"]
