"""``Store.stats()``: sizes and counts per context and part (read-only, no locks).

On a server backend a part's files are not in the context's local folder: its counts come from
the part's stores and its bytes from the file store when it can sum them cheaply
(``stored_bytes``: PostgreSQL sums its rows), else 0.

Stats never follow a symbolic link inside the store (docs/api.md, "Guarantees"): sizes come
from ``lstat`` walks that do not descend into links, and a context with a link anywhere in it
is reported under ``problems`` with only its own sizes (its content is not read through the
link). A part folder of the wrong type (e.g. ``embeddings`` replaced by a file) is reported
the same way instead of failing the whole call.
"""

from __future__ import annotations

from typing import Any

from app.core import layout
from app.core.errors import IntegrityError
from app.core.nofollow import link_problems, lstat_as, tree_bytes
from app.managers.context import Context
from app.managers.host import ContextHost
from app.managers.parts import ContextPart, parts
from app.managers.transfer.fs import is_local_part


def _parts(ctx: Context, problems: list[str]) -> dict[str, Any]:
    """Each part's counts (``ContextPart.stats``); a damaged part is reported, not raised."""
    out: dict[str, Any] = {}
    for part in parts():
        try:
            out[part.name] = part.stats(ctx)
        except IntegrityError as exc:
            problems.append(str(exc))
            out[part.name] = {}
    return out


def _part_bytes(ctx: Context, part: ContextPart[Any], inside: bool) -> int:
    """The bytes of ``part`` of ``ctx``: its local folder (never through a link), or what the
    backend's file store sums when the part is not local (0 when it cannot say cheaply)."""
    if is_local_part(ctx, part):
        return tree_bytes(ctx.path / part.folder) if inside else 0
    measure = getattr(ctx.backend.files(ctx.name, part.folder), "stored_bytes", None)
    return int(measure()) if callable(measure) else 0


def context_stats(host: ContextHost, name: str) -> dict[str, Any]:
    ctx = host.context(name, create=False)
    problems = link_problems(ctx.path)
    collections: dict[str, dict[str, int]] = {}
    index_bytes = 0
    counted: dict[str, Any] = {}
    if not problems:  # never read a context's content through a link
        for coll in ctx.collections():
            log = lstat_as(ctx.path / layout.log_name(coll), "file")
            collections[coll] = {
                "records": ctx.count(coll),
                "log_bytes": log.st_size if log is not None else 0,
            }
        index_bytes = sum(
            tree_bytes(p)
            for p in ctx.path.glob(layout.index_files_glob(name))
            if not p.is_symlink()
        )
        counted = _parts(ctx, problems)
    inside = not ctx.path.is_symlink()  # no path through a linked context folder
    out: dict[str, Any] = {
        "collections": collections,
        "records": sum(c["records"] for c in collections.values()),
        "index_bytes": index_bytes,
    }
    remote = 0
    for part in parts():
        out[part.name] = counted.get(part.name, {})
        out[f"{part.name}_bytes"] = _part_bytes(ctx, part, inside)
        if not is_local_part(ctx, part):
            remote += out[f"{part.name}_bytes"]
    return out | {"bytes": tree_bytes(ctx.path) + remote, "problems": problems}


def _damaged_stats(problem: str) -> dict[str, Any]:
    """The stats of a context that cannot be read: nothing counted, the damage named."""
    out: dict[str, Any] = {"collections": {}, "records": 0, "index_bytes": 0}
    for part in parts():
        out[part.name] = {}
        out[f"{part.name}_bytes"] = 0
    return out | {"bytes": 0, "problems": [problem]}


def _safe_context_stats(host: ContextHost, name: str) -> dict[str, Any]:
    try:
        return context_stats(host, name)
    except IntegrityError as exc:  # one damaged context never stops the store's stats
        return _damaged_stats(str(exc))


def store_stats(
    host: ContextHost, workflows: dict[str, Any], *, where: str, local: bool
) -> dict[str, Any]:
    """The store's stats; ``workflows``: the tracker's metrics (the store reads them);
    ``where``: how the store is named (its backend's URL, password redacted); ``local``: the
    whole store is the folder ``host.root`` (else that folder is only this host's working
    folder, and the store's bytes are its contexts')."""
    contexts = {name: _safe_context_stats(host, name) for name in host.contexts()}
    size = tree_bytes(host.root) if local else sum(c["bytes"] for c in contexts.values())
    return {
        "root": where,
        "contexts": contexts,
        "records": sum(c["records"] for c in contexts.values()),
        "workflows": workflows,
        "bytes": size,
        "problems": [p for c in contexts.values() for p in c["problems"]],
    }


__all__ = ["context_stats", "store_stats"]
