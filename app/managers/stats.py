"""``Store.stats()``: sizes and counts per context and part (read-only, no locks)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.managers.store import Store


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                continue
    return total


def context_stats(store: Store, name: str) -> dict[str, Any]:
    ctx = store.context(name, create=False)
    collections = {}
    for coll in ctx.collections():
        log = ctx.path / f"{coll}.jsonl"
        collections[coll] = {
            "records": ctx.count(coll),
            "log_bytes": log.stat().st_size if log.exists() else 0,
        }
    index_bytes = sum(p.stat().st_size for p in ctx.path.glob(f"{name}.sqlite*") if p.is_file())
    embeddings = {
        e.name: {"count": e.count, "dim": e.dim, "dtype": e.dtype} for e in ctx.embeddings.list()
    }
    models = {m.name: {"version": m.version, "format": m.format} for m in ctx.models.list()}
    return {
        "collections": collections,
        "records": sum(c["records"] for c in collections.values()),
        "index_bytes": index_bytes,
        "embeddings": embeddings,
        "embeddings_bytes": _tree_bytes(ctx.path / "embeddings"),
        "models": models,
        "models_bytes": _tree_bytes(ctx.path / "models"),
        "bytes": _tree_bytes(ctx.path),
    }


def _workflow_metrics(store: Store) -> dict[str, Any]:
    """The tracker's metrics; a store that never ran a workflow has no tracker, and reading
    stats must not create one (reads never write, SPEC 22)."""
    if (store.root / "workflows" / "tracker.sqlite").is_file():
        return store.workflows.metrics()
    from app.core.workflow_types import WorkflowStatus

    return {
        "by_status": {s.value: 0 for s in WorkflowStatus},
        "by_type": {},
        "total": 0,
        "items_processed": 0,
        "completed_items": 0,
        "mean_duration_s": None,
        "items_per_s": None,
    }


def store_stats(store: Store) -> dict[str, Any]:
    contexts = {name: context_stats(store, name) for name in store.contexts()}
    return {
        "root": str(store.root),
        "contexts": contexts,
        "records": sum(c["records"] for c in contexts.values()),
        "workflows": _workflow_metrics(store),
        "bytes": _tree_bytes(store.root),
    }
