"""``export_context``: a consistent snapshot of a context written to a ``.tar.gz`` archive.

Under the context's writer lock a snapshot is staged inside the store (compacted copies of the
record logs, or checked byte copies when compaction would drop nothing: ``logcopy``;
``context.json``; hard links to every part's files, which are only ever replaced by rename);
outside the lock the files are hashed, the manifest is built and the archive written
(``app.formats.archive``: temp file + rename). The SQLite index is derived data and never
exported; import builds it in the staged copy before the context becomes visible. See docs/api.md,
"Whole contexts".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from app.core import layout
from app.core.atomic import write_atomic
from app.core.errors import IntegrityError, InvalidInput
from app.core.nofollow import refuse_links
from app.core.transfer_types import Manifest
from app.formats.archive import write_archive
from app.managers.context import Context
from app.managers.host import ContextHost
from app.managers.parts import parts
from app.managers.transfer.fs import copy_part
from app.managers.transfer.logcopy import write_export_log
from app.managers.transfer.manifest import build_manifest, summaries


def _refuse_incomplete(ctx: Context) -> None:
    """Export never writes an archive that silently lacks part of the context: a collection
    the index holds whose log is gone, a part's damage found by ``ContextPart.incomplete``
    (cheap checks; files are hashed later)."""
    problems = ctx.backend.catalog().layout_problems(ctx.name) + ctx.missing_logs()
    for part in parts():
        problems += part.incomplete(ctx.path / part.folder)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"export refused, the context is damaged: {problems[0]}{more}")


def _snapshot(
    ctx: Context, dest: Path
) -> tuple[list[str], dict[str, int], dict[str, dict[str, Any]]]:
    """Stage a consistent copy of ``ctx`` in ``dest`` (caller holds nothing; locks here)."""
    files = [layout.CATALOG_FILE]
    counts: dict[str, int] = {}
    with ctx.writer_lock.hold():
        refuse_links(ctx.path)  # nothing inside a store is followed (docs/api.md, Guarantees)
        _refuse_incomplete(ctx)
        write_atomic(layout.catalog(dest), ctx.backend.catalog().catalog_document(ctx.name))
        for coll in ctx.collections():
            counts[coll] = write_export_log(ctx, coll, dest / layout.log_name(coll))
            files.append(layout.log_name(coll))
        for part in parts():
            copied = copy_part(ctx, part, dest / part.folder)
            files += [f"{part.folder}/{f}" for f in copied]
        part_summaries = summaries(ctx)
    return files, counts, part_summaries


def export_context(host: ContextHost, name: str, dest: Path) -> Manifest:
    """Write a consistent snapshot of context ``name`` to the archive ``dest`` (the
    arguments come checked by ``Store.export_context``)."""
    if dest.is_dir():
        raise InvalidInput(f"dest: {dest} is a directory; give the path of a .tar.gz file")
    if not dest.parent.is_dir():
        raise InvalidInput(f"dest: directory {dest.parent} does not exist")
    ctx = host.context(name, create=False)
    with host.staging("export") as snap:
        files, counts, part_summaries = _snapshot(ctx, snap)
        manifest = build_manifest(name, snap, files, counts, part_summaries)
        payload = orjson.dumps(manifest.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
        write_archive(dest, payload, [(f, snap / f) for f in files])
    return manifest


__all__ = ["export_context"]
