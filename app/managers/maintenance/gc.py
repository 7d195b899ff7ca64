"""``Store.gc``: what a store can shed (docs/api.md, "Garbage collection").

Always: leftover staging, import, merge and dropped-context folders whose owner is gone (each
is locked while in use; the sweep takes its lock first, ``app.backends.local.staging``) and
files in an object store that no name refers to, older than a grace period
(``Collectable`` file stores, ``app.backends.objects``). Optional: finished workflows older
than a ``timedelta`` and compaction of collections whose superseded share exceeds a ratio.

A dry run lists exactly what a real run removes: each kind is found by the same listing in
both modes, and a real run removes what it listed (nothing else), under the same locks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from app.backends.local.staging import sweep
from app.backends.protocols import Backend
from app.core import clock, layout
from app.core.errors import InvalidInput, NotFoundError
from app.core.maintenance_types import GcItem, GcReport
from app.core.workflow_types import FINISHED
from app.formats.batchlog import BatchLog
from app.formats.tracker import TrackerDB
from app.managers.context import Context
from app.managers.host import ContextHost
from app.managers.parts import parts as parts_registry
from app.managers.workflows import WorkflowManager

GRACE = dt.timedelta(hours=24)
"""How old an unreferenced object-store file must be before gc removes it (far above the
longest upload: a file is uploaded before the record naming it is written)."""

PAGE = 1000


@runtime_checkable
class Collectable(Protocol):
    """A file store whose unreferenced files gc may remove (object storage)."""

    def garbage(self, older_than: float) -> list[tuple[str, int]]:
        """``(path, bytes)`` of the files no name refers to, modified before ``older_than``
        (POSIX seconds)."""
        ...

    def remove_garbage(self, paths: list[str]) -> None:
        """Remove those files (as listed by ``garbage``)."""
        ...


class GcHost(ContextHost, Protocol):
    """What gc needs of the store: its contexts, workflows and backend."""

    @property
    def workflows(self) -> WorkflowManager: ...

    @property
    def backend(self) -> Backend: ...


class _Counter:
    """A write-only sink that counts bytes (the size of a compacted log, written nowhere)."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return len(data)


def _staging(host: GcHost, dry_run: bool) -> list[GcItem]:
    return [
        GcItem(kind="staging", path=str(left.path), bytes=left.bytes)
        for left in sweep(host.contexts_dir, dry_run=dry_run)
    ]


def _collectables(host: GcHost) -> Iterator[Collectable]:
    """The backend's object storage (on PostgreSQL: every part's blobs, those of dropped
    contexts included), else each context part's file store that keeps objects."""
    parts = getattr(host.backend, "parts", None)
    if isinstance(parts, Collectable):
        yield parts
        return
    for name in host.contexts():
        try:
            ctx = host.context(name, create=False)
        except NotFoundError:  # dropped meanwhile
            continue
        for part in parts_registry():
            files = ctx.backend.files(name, part.folder)
            if isinstance(files, Collectable):
                yield files


def _objects(host: GcHost, dry_run: bool, grace: dt.timedelta) -> list[GcItem]:
    older_than = clock.wall() - grace.total_seconds()
    out: list[GcItem] = []
    for source in _collectables(host):
        found = source.garbage(older_than)
        if not dry_run and found:
            source.remove_garbage([path for path, _ in found])
        out += [GcItem(kind="object", path=path, bytes=size) for path, size in found]
    return out


def _workflows(host: GcHost, dry_run: bool, older_than: dt.timedelta) -> list[GcItem]:
    tracker = host.workflows._tracker
    if isinstance(tracker, TrackerDB) and not tracker.path.is_file():
        return []  # no workflow ever ran: gc never creates the tracker
    before = clock.wall() - older_than.total_seconds()
    statuses = sorted(s.value for s in FINISHED)
    items_dir = layout.workflows_dir(host.root) / layout.ITEMS_DIR
    out: list[GcItem] = []
    for status in statuses:
        offset = 0
        while True:
            rows = tracker.list_rows(
                status=status, workflow_type=None, context=None, limit=PAGE, offset=offset
            )
            for row in rows:
                finished = row.get("finished_at")
                if finished is None or finished >= before:
                    continue
                size = 0
                if row.get("items_file"):
                    try:
                        size = os.lstat(items_dir / str(row["items_file"])).st_size
                    except OSError:
                        size = 0
                out.append(
                    GcItem(kind="workflow", path=f"workflow:{row['workflow_id']}", bytes=size)
                )
            if len(rows) < PAGE:
                break
            offset += PAGE
    if not dry_run and out:
        for name in tracker.purge(FINISHED, before):
            tracker.discard_items(name)
    return out


def _log_path(ctx: Context, collection: str) -> Path:
    return ctx.path / layout.log_name(collection)


def _superseded(path: Path, current: int) -> tuple[int, int]:
    """``(entries, log bytes)`` of the batch log at ``path`` whose collection holds
    ``current`` records now (the superseded entries are ``entries - current``)."""
    log = BatchLog(path)
    entries = sum(len(b.entries) for b in log.scan(log.header().length))
    return entries, os.lstat(path).st_size


@contextlib.contextmanager
def _log_of(host: GcHost, ctx: Context, collection: str) -> Iterator[Path]:
    """The collection's batch log as a local file: the log itself on the embedded backend,
    else a byte-exact copy in a staging folder (``ContextCatalog.copy_log``)."""
    path = _log_path(ctx, collection)
    if os.path.isfile(path) and not os.path.islink(path):
        yield path
        return
    with host.staging(layout.SPOOL_PURPOSE) as folder:
        copy = folder / layout.log_name(collection)
        with open(copy, "wb") as fh:
            ctx.backend.catalog().copy_log(ctx.name, collection, fh)
        yield copy


def _compactions(host: GcHost, dry_run: bool, ratio: float) -> list[GcItem]:
    out: list[GcItem] = []
    for name in host.contexts():
        ctx = host.context(name, create=False)
        for collection in ctx.collections():
            with ctx.writer_lock.hold():
                with _log_of(host, ctx, collection) as path:
                    entries, size = _superseded(path, ctx.count(collection))
                current = ctx.count(collection)
                if entries == 0 or (entries - current) / entries <= ratio:
                    continue
                sink = _Counter()
                ctx.write_compacted_log(collection, _as_io(sink))
                freed = max(size - sink.n, 0)
                if not dry_run:
                    report = ctx.compact(collection)
                    freed = report.bytes_before - report.bytes_after
                out.append(GcItem(kind="compaction", path=f"{name}/{collection}", bytes=freed))
    return out


def _as_io(sink: _Counter) -> IO[bytes]:
    return sink  # type: ignore[return-value]


def collect(
    host: GcHost,
    *,
    dry_run: bool = True,
    keep_model_versions: int | None = None,
    workflows_older_than: dt.timedelta | None = None,
    compact_ratio: float | None = None,
    grace: dt.timedelta = GRACE,
) -> GcReport:
    """The ``GcReport`` of one pass (see the module docstring); ``dry_run`` changes nothing."""
    if keep_model_versions is not None:
        raise InvalidInput(
            "keep_model_versions: pruning model versions is not available in this version "
            "(it comes with model aliases and lineage); pass None",
            argument="keep_model_versions",
        )
    items = _staging(host, dry_run) + _objects(host, dry_run, grace)
    if workflows_older_than is not None:
        items += _workflows(host, dry_run, workflows_older_than)
    if compact_ratio is not None:
        items += _compactions(host, dry_run, compact_ratio)
    return GcReport(dry_run=dry_run, items=items)


__all__ = ["GRACE", "Collectable", "GcHost", "collect"]
