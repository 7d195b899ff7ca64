"""``Store.stats()``: sizes and counts per context and part (read-only, no locks).

Stats never follow a symbolic link inside the store (SPEC 22): sizes come from ``lstat``
walks that do not descend into links, and a context with a link anywhere in it is reported
under ``problems`` with only its own sizes (its content is not read through the link). A
part folder of the wrong type (e.g. ``embeddings`` replaced by a file) is reported the same
way instead of failing the whole call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.core.errors import IntegrityError
from app.core.nofollow import link_problems, lstat_as, tree_bytes

if TYPE_CHECKING:
    from app.managers.context import Context
    from app.managers.store import Store


def _parts(ctx: Context, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"embeddings": {}, "models": {}}
    try:
        out["embeddings"] = {
            e.name: {"count": e.count, "dim": e.dim, "dtype": e.dtype}
            for e in ctx.embeddings.list()
        }
    except IntegrityError as exc:
        problems.append(str(exc))
    try:
        out["models"] = {
            m.name: {"version": m.version, "format": m.format} for m in ctx.models.list()
        }
    except IntegrityError as exc:
        problems.append(str(exc))
    return out


def context_stats(store: Store, name: str) -> dict[str, Any]:
    ctx = store.context(name, create=False)
    problems = link_problems(ctx.path)
    collections: dict[str, dict[str, int]] = {}
    index_bytes = 0
    parts: dict[str, Any] = {"embeddings": {}, "models": {}}
    if not problems:  # never read a context's content through a link
        for coll in ctx.collections():
            log = lstat_as(ctx.path / f"{coll}.jsonl", "file")
            collections[coll] = {
                "records": ctx.count(coll),
                "log_bytes": log.st_size if log is not None else 0,
            }
        index_bytes = sum(
            tree_bytes(p) for p in ctx.path.glob(f"{name}.sqlite*") if not p.is_symlink()
        )
        parts = _parts(ctx, problems)
    inside = not ctx.path.is_symlink()  # no path through a linked context folder
    return {
        "collections": collections,
        "records": sum(c["records"] for c in collections.values()),
        "index_bytes": index_bytes,
        "embeddings": parts["embeddings"],
        "embeddings_bytes": tree_bytes(ctx.path / "embeddings") if inside else 0,
        "models": parts["models"],
        "models_bytes": tree_bytes(ctx.path / "models") if inside else 0,
        "bytes": tree_bytes(ctx.path),
        "problems": problems,
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


def _damaged_stats(problem: str) -> dict[str, Any]:
    """The stats of a context that cannot be read: nothing counted, the damage named."""
    return {
        "collections": {},
        "records": 0,
        "index_bytes": 0,
        "embeddings": {},
        "embeddings_bytes": 0,
        "models": {},
        "models_bytes": 0,
        "bytes": 0,
        "problems": [problem],
    }


def _safe_context_stats(store: Store, name: str) -> dict[str, Any]:
    try:
        return context_stats(store, name)
    except IntegrityError as exc:  # one damaged context never stops the store's stats
        return _damaged_stats(str(exc))


def store_stats(store: Store) -> dict[str, Any]:
    contexts = {name: _safe_context_stats(store, name) for name in store.contexts()}
    return {
        "root": str(store.root),
        "contexts": contexts,
        "records": sum(c["records"] for c in contexts.values()),
        "workflows": _workflow_metrics(store),
        "bytes": tree_bytes(store.root),
        "problems": [p for c in contexts.values() for p in c["problems"]],
    }
