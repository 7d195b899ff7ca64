"""``save_context`` / ``load_context``: a whole context in memory (``ContextState``).

``save_context`` builds the new content in a staging folder inside the store (records
appended in batches, every part's items saved by the part), then installs it in one rename or
exchange: all or nothing. ``load_context`` reads a consistent snapshot under the context's
writer lock, records from the logs (the truth), every part's items from the part. See
docs/api.md, "Whole contexts".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from app.backends.local.records.catalog import Catalog
from app.core import layout
from app.core.atomic import write_atomic
from app.core.errors import InvalidInput
from app.core.rules import NAME, CollectionName, check
from app.core.transfer_types import ContextState, Manifest
from app.managers.host import ContextHost
from app.managers.parts import ContextPart, parts
from app.managers.transfer.fs import part_present, relative_files
from app.managers.transfer.manifest import build_manifest, has_part, summaries

SAVE_BATCH = 10_000


def _as_state(state: object) -> ContextState:
    if isinstance(state, ContextState):
        return state
    if isinstance(state, Mapping):
        try:
            return ContextState.model_validate(dict(state))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(f"state: {where}: {first['msg']}") from None
    raise InvalidInput(f"state: expected an app.ContextState, got {type(state).__name__}")


def _items(state: ContextState, part: ContextPart[Any]) -> Mapping[str, Any]:
    """``part``'s items in ``state`` (by item name, each name checked)."""
    value = getattr(state, part.name, None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"state.{part.name}: must be a dict of items by name")
    for n in value:
        check(NAME, n, f"state.{part.name}")
    return value


def _chunks(records: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def save_context(host: ContextHost, name: str, state: object) -> Manifest:
    """Replace the content of context ``name`` by ``state`` (all or nothing; ``name`` comes
    checked by ``Store.save_context``)."""
    st = _as_state(state)
    for coll in st.collections:
        check(CollectionName, coll, "state.collections")
    items = {part.name: _items(st, part) for part in parts()}
    with host.staging("save") as staged:
        if host.exists(name):  # the collections' definitions are kept
            live = host.context(name, create=False)
            with live.writer_lock.hold():
                document = live.backend.catalog().catalog_document(name)
        else:
            document = Catalog.initial(name)
        write_atomic(layout.catalog(staged), document)
        ctx = host.open_staged(name, staged, trusted=True)
        try:
            for coll, records in st.collections.items():
                if not records:
                    ctx.define_collection(coll)
                for n, chunk in enumerate(_chunks(records, SAVE_BATCH)):
                    ctx.append(coll, chunk, batch_id=f"save-{coll}-{n}")
            for part in parts():
                if items[part.name]:
                    part.save_state(ctx, items[part.name])
            collections = ctx.collections()
            files = [layout.CATALOG_FILE, *[layout.log_name(c) for c in collections]]
            counts = {c: ctx.count(c) for c in collections}
            for part in parts():
                if has_part(staged, part):
                    files += [f"{part.folder}/{f}" for f in relative_files(staged / part.folder)]
            manifest = build_manifest(name, staged, files, counts, summaries(ctx))
        finally:
            ctx.close()
        with host.writer_lock.hold():
            if host.exists(name):
                live = host.context(name, create=False)
                with live.writer_lock.hold():
                    host.install(name, staged, replace=True)
            else:
                host.install(name, staged, replace=False)
    return manifest


def load_context(host: ContextHost, name: str) -> ContextState:
    """The whole content of context ``name`` (a consistent snapshot)."""
    ctx = host.context(name, create=False)
    with ctx.writer_lock.hold():
        collections = {c: ctx.records_from_log(c) for c in ctx.collections()}
        items = {p.name: p.load_state(ctx) if part_present(ctx, p) else {} for p in parts()}
    return ContextState(collections=collections, **items)


__all__ = ["SAVE_BATCH", "load_context", "save_context"]
