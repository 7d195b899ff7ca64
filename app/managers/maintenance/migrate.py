"""``ctxstore migrate SRC DST``: move every context of one store into another, whatever their
backends (docs/api.md, "Moving a store").

Each context travels as an export archive (the format both backends share): exported from the
source into a staging folder of the source store (swept if the process dies), then checked
completely and imported into the destination. Pickled model versions the source trusts under
this user's key are vouched for in the destination too (an archive carries no trust mark).
Contexts already in the destination are refused before anything moves, unless ``replace``
(then they are overwritten, one at a time, atomically). The source is only read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from app.backends.protocols import Backend
from app.core.contracts import ensure, require
from app.core.errors import ConflictError, InvalidInput
from app.core.maintenance_types import MigrateReport
from app.core.rules import OnConflictValue
from app.core.transfer_types import Manifest
from app.managers.host import ContextHost

ARCHIVE = "context.tar.gz"


class MigrateHost(ContextHost, Protocol):
    """What migrate needs of a store: its backend, contexts, export and import."""

    @property
    def backend(self) -> Backend: ...

    def export_context(self, name: str, dest: str | os.PathLike[str]) -> Manifest: ...

    def import_context(
        self,
        src: str | os.PathLike[str],
        *,
        name: str | None = None,
        on_conflict: OnConflictValue = "fail",
    ) -> Manifest: ...


@require(lambda replace: isinstance(replace, bool), "replace", "must be a bool")
@ensure(
    lambda source, result: set(result.moved) | set(result.replaced) == set(source.contexts()),
    "every context of the source was moved",
)
def migrate_store(
    source: MigrateHost,
    dest: MigrateHost,
    *,
    replace: bool = False,
    on_context: Callable[[str], None] | None = None,
) -> MigrateReport:
    """Copy every context of ``source`` into ``dest`` (export then import, context by context);
    ``on_context`` is called after each one. ``ConflictError`` naming the contexts that exist
    in ``dest`` unless ``replace``."""
    if source.backend.url == dest.backend.url:
        raise InvalidInput("dst: the destination is the source store", argument="dst")
    names = source.contexts()
    existing = [n for n in names if dest.exists(n)]
    if existing and not replace:
        shown = ", ".join(existing[:20]) + (" ..." if len(existing) > 20 else "")
        raise ConflictError(
            f"{len(existing)} context(s) exist in the destination ({shown}); nothing was moved "
            "(pass --replace / replace=True to overwrite them)"
        )
    moved: list[str] = []
    replaced: list[str] = []
    records = size = trusted = 0
    for name in names:
        with source.staging("export") as folder:
            archive = folder / ARCHIVE
            from_source = source.export_context(name, archive).collections
            size += os.path.getsize(archive)
            overwrite = dest.exists(name)
            dest.import_context(
                archive, name=name, on_conflict="overwrite" if overwrite else "fail"
            )
        trusted += _carry_trust(source, dest, name)
        records += sum(from_source.values())
        (replaced if overwrite else moved).append(name)
        if on_context is not None:
            on_context(name)
    return MigrateReport(
        source=source.backend.url,
        destination=dest.backend.url,
        moved=moved,
        replaced=replaced,
        records=records,
        bytes=size,
        trusted_models=trusted,
    )


def _carry_trust(source: MigrateHost, dest: MigrateHost, name: str) -> int:
    """Vouch in ``dest`` for the pickled model versions ``source`` trusts under this user's
    key (an archive never carries trust marks); the destination re-checks each file against
    its record before signing. Returns how many versions were vouched for."""
    src = source.context(name, create=False).models
    dst = dest.context(name, create=False).models
    count = 0
    for model in src.names():
        theirs = {i.version: i.sha256 for i in dst.versions(model)}
        for info in src.versions(model):
            if not src.runs_code(info.format) or not src.is_trusted(info.sha256):
                continue
            if theirs.get(info.version) == info.sha256:
                dst.trust(model, version=info.version)
                count += 1
    return count


__all__ = ["MigrateHost", "migrate_store"]
