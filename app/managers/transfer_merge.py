"""``import_context(..., on_conflict="merge" | "skip")`` into an existing context.

The merge is applied to a staged copy of the live context (logs copied, embedding and model
files hard-linked, the index copied with SQLite's backup API), made while holding the store
lock and the context's writer lock; the copy then replaces the live directory in one exchange.
So a merge that fails half way (a record the target's schema refuses, an embedding set of
another dimension...) leaves the live context as it was.

- records, by id: ``merge`` writes an imported record when the id is new or its imported
  version was committed later than the current one; ``skip`` writes only new ids.
- embedding sets: new sets are added; for an existing set ``merge`` replaces the rows of the
  imported ids and appends the new ones (the imported set is the newer version), ``skip``
  appends only the rows of new ids.
- models: every imported version is added as a new version after the existing ones (``skip``:
  only models the context does not have). Pickled (``.joblib``) versions are copied as files
  and stay untrusted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from app.core.atomic import write_atomic
from app.core.errors import ConflictError, InvalidInput
from app.core.transfer_types import Manifest
from app.formats.batchlog import BatchLog
from app.managers.context import Context
from app.managers.transfer_fs import copy_file, install, snapshot_tree, staging

if TYPE_CHECKING:
    from app.managers.store import Store

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
    (the logs are the truth, SPEC 22), so an index that lost, added or altered rows is not
    carried into the merged context."""
    copy_file(live.path / "context.json", dest / "context.json")
    for coll in live.collections():
        copy_file(live.path / f"{coll}.jsonl", dest / f"{coll}.jsonl")
    for part in ("embeddings", "models"):
        snapshot_tree(live.path / part, dest / part)


def _merge_catalog(merged: Path, staged: Path) -> None:
    """Add the imported collection definitions the live context does not have."""
    mine = orjson.loads((merged / "context.json").read_bytes())
    theirs = orjson.loads((staged / "context.json").read_bytes())
    colls = dict(mine.get("collections", {}))
    added = False
    for coll, entry in dict(theirs.get("collections", {})).items():
        if coll not in colls and isinstance(entry, dict):
            colls[coll] = entry
            added = True
    if added:
        mine["collections"] = colls
        write_atomic(merged / "context.json", orjson.dumps(mine, option=orjson.OPT_INDENT_2))


def _merge_records(target: Context, log: Path, coll: str, mode: str, token: str) -> int:
    at: dict[str, str] = {rid: when for rid, when, _ in _imported(log)}
    live = target.latest_commits(coll, at)  # from the target's log, not its index
    existing = {rid for rid, (_, deleted) in live.items() if not deleted}
    wins: set[str] = set()
    if mode == "merge":
        wins = {rid for rid in existing if at[rid] > live[rid][0]}
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


def _merge_embeddings(target: Context, source: Context, name: str, mode: str) -> None:
    incoming = source.embeddings.load(name, mmap=True)
    have = {e.name for e in target.embeddings.list()}
    try:
        if name not in have:
            target.embeddings.save(
                name,
                incoming.ids.tolist(),
                np.asarray(incoming.vectors),
                metadata=incoming.metadata,
            )
            return
        current = target.embeddings.load(name, mmap=False)
        position = {rid: i for i, rid in enumerate(current.ids.tolist())}
        new_ids: list[str] = []
        new_rows: list[int] = []
        replace: list[tuple[int, int]] = []
        for j, rid in enumerate(incoming.ids.tolist()):
            i = position.get(rid)
            if i is None:
                new_ids.append(rid)
                new_rows.append(j)
            else:
                replace.append((i, j))
        if mode == "skip" or not replace:
            if new_ids:
                target.embeddings.save(
                    name, new_ids, np.asarray(incoming.vectors)[new_rows], mode="append"
                )
            return
        vectors = np.array(current.vectors, copy=True)
        src = np.asarray(incoming.vectors)
        rows_i = [i for i, _ in replace]
        rows_j = [j for _, j in replace]
        vectors[rows_i] = src[rows_j].astype(vectors.dtype)
        all_ids = current.ids.tolist() + new_ids
        if new_ids:
            vectors = np.concatenate([vectors, src[new_rows].astype(vectors.dtype)])
        metadata = {**current.metadata, **incoming.metadata}
        target.embeddings.save(name, all_ids, vectors, metadata=metadata, mode="overwrite")
    except InvalidInput as exc:
        raise ConflictError(f"embedding set {name!r} cannot be merged: {exc}") from None


def _merge_models(target: Context, source: Context, staged: Path, name: str, mode: str) -> None:
    have = {m.name for m in target.models.list()}
    if mode == "skip" and name in have:
        return
    for info in source.models.versions(name):
        if info.format == "pth":  # read with torch.load(weights_only=True): no code runs
            obj = source.models.load(name, version=info.version)
            target.models.save(name, obj, metadata=info.metadata)
            continue
        # A pickle is never deserialised here; it is added as a file and stays untrusted.
        add = getattr(target.models, "add_untrusted_version", None)
        if add is None:
            raise ConflictError(
                f"model {name!r}: merging pickled (.joblib) versions into an existing context "
                "is not supported; import with on_conflict='overwrite' or under another name"
            )
        add(name, staged / "models" / name / info.file, info)


def merge_into(store: Store, name: str, staged: Path, manifest: Manifest, mode: str) -> None:
    """Merge the checked, staged archive into the live context ``name`` (store lock held)."""
    token = hashlib.sha256(manifest.model_dump_json().encode()).hexdigest()[:16]
    live = store.context(name, create=False)
    with live.writer_lock.hold(), staging(store, "merge") as merged:
        _copy_live(live, merged)
        _merge_catalog(merged, staged)
        target = Context(name, merged, store._trust_dir)
        source = Context(manifest.context, staged, staged / ".no-trust")
        try:
            for coll in manifest.collections:
                _merge_records(target, staged / f"{coll}.jsonl", coll, mode, token)
            for ename in manifest.embeddings:
                _merge_embeddings(target, source, ename, mode)
            for mname in manifest.models:
                _merge_models(target, source, staged, mname, mode)
        finally:
            target.close()
            source.close()
        install(store, name, merged, replace=True)
