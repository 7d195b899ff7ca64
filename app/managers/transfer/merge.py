"""``import_context(..., on_conflict="merge" | "skip")`` into an existing context.

The merge is applied to a staged copy of the live context (logs and ``context.json`` copied,
part files hard-linked), made while holding the store lock and the context's writer lock; the
copy then replaces the live folder in one exchange. So a merge that fails half way (a record
the target's schema refuses, an embedding set of another dimension...) leaves the live context
as it was.

- records, by id: ``merge`` writes an imported record when the id is new or its imported
  version was committed later than the current one; ``skip`` writes only new ids. New
  collection definitions are added to the catalog.
- every part merges its own items (``ContextPart.merge``: see each part's module).

See docs/api.md, "Whole contexts".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from app.core import layout
from app.core.atomic import write_atomic
from app.core.transfer_types import Manifest
from app.formats.batchlog import BatchLog
from app.managers.context import Context
from app.managers.host import ContextHost
from app.managers.parts import parts
from app.managers.transfer.fs import copy_part
from app.managers.transfer.manifest import part_summary

MERGE_BATCH = 10_000


def _imported(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """``(id, committed_at, canonical JSON)`` of every record version in an imported log."""
    log = BatchLog(path)
    _, header_len = log.header()
    for batch in log.scan(header_len):
        for e in batch.entries:
            if e.data is not None:
                yield e.record_id, batch.committed_at, e.data


def _copy_live(live: Context, dest: Path) -> None:
    """Copy the live context's files; not its index: the staged copy indexes its logs anew
    (the logs are the truth), so an index that lost, added or altered rows is not carried
    into the merged context."""
    catalog = live.backend.catalog()
    write_atomic(layout.catalog(dest), catalog.catalog_document(live.name))
    for coll in live.collections():
        with open(dest / layout.log_name(coll), "wb") as fh:
            catalog.copy_log(live.name, coll, fh)
    for part in parts():
        copy_part(live, part, dest / part.folder)


def _merge_catalog(merged: Path, staged: Path) -> None:
    """Add the imported collection definitions the live context does not have."""
    mine = orjson.loads(layout.catalog(merged).read_bytes())
    theirs = orjson.loads(layout.catalog(staged).read_bytes())
    colls = dict(mine.get("collections", {}))
    added = False
    for coll, entry in dict(theirs.get("collections", {})).items():
        if coll not in colls and isinstance(entry, dict):
            colls[coll] = entry
            added = True
    if added:
        mine["collections"] = colls
        write_atomic(layout.catalog(merged), orjson.dumps(mine, option=orjson.OPT_INDENT_2))


def _merge_records(target: Context, log: Path, coll: str, mode: str, token: str) -> int:
    at: dict[str, str] = {rid: when for rid, when, _ in _imported(log)}
    live = target.latest_commits(coll, at)  # from the target's log, not its index
    existing = {rid for rid, latest in live.items() if not latest.deleted}
    wins: set[str] = set()
    if mode == "merge":
        wins = {rid for rid in existing if at[rid] > live[rid].committed_at}
    if coll not in target.collections():
        target.define_collection(coll)
    written = 0
    batch: list[dict[str, Any]] = []
    n = 0
    for rid, _, data in _imported(log):
        if rid in existing and rid not in wins:
            continue
        batch.append(orjson.loads(data))
        if len(batch) >= MERGE_BATCH:
            written += target.append(coll, batch, batch_id=f"import-{token}-{coll}-{n}").count
            batch, n = [], n + 1
    if batch:
        written += target.append(coll, batch, batch_id=f"import-{token}-{coll}-{n}").count
    return written


def merge_into(host: ContextHost, name: str, staged: Path, manifest: Manifest, mode: str) -> None:
    """Merge the checked, staged archive into the live context ``name`` (store lock held)."""
    token = hashlib.sha256(manifest.model_dump_json().encode()).hexdigest()[:16]
    live = host.context(name, create=False)
    with live.writer_lock.hold(), host.staging("merge") as merged:
        _copy_live(live, merged)
        _merge_catalog(merged, staged)
        target = host.open_staged(name, merged, trusted=True)
        source = host.open_staged(manifest.context, staged, trusted=False)
        try:
            for coll in manifest.collections:
                _merge_records(target, staged / layout.log_name(coll), coll, mode, token)
            for part in parts():
                names = list(part_summary(manifest, part))
                if names:
                    part.merge(target, source, names, mode)
        finally:
            target.close()
            source.close()
        host.install(name, merged, replace=True)


__all__ = ["MERGE_BATCH", "merge_into"]
