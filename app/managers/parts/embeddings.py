"""The ``embeddings`` part: a context's embedding sets (``app.managers.embeddings``).

Merge rule (``import_context(..., on_conflict="merge" | "skip")``): a new set is added; for a
set the context has, ``merge`` replaces the rows of the imported ids and appends the new ones
(the imported set is the newer version), ``skip`` appends only the rows of new ids. A set of
another dimension cannot be merged (``ConflictError``). See docs/api.md, "Context parts".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from app.core import layout
from app.core.errors import ConflictError, InvalidInput
from app.core.nofollow import entries, part_problems
from app.managers.embeddings import EmbeddingStore, recorded_files
from app.managers.parts.protocol import PartContext


def _sets_without_metadata(set_dir: Path) -> list[str]:
    names = {e.name for e in entries(set_dir)}
    if layout.SET_META in names or not any(n.endswith(layout.SHARD_SUFFIX) for n in names):
        return []
    return [f"{set_dir / layout.SET_META}: missing (shards without metadata)"]


class EmbeddingsPart:
    """Embedding sets: ``<context>/embeddings/<set>/`` (``metadata.json`` + shards)."""

    name = layout.EMBEDDINGS_DIR
    folder = layout.EMBEDDINGS_DIR

    def open(self, ctx: PartContext) -> EmbeddingStore:
        return EmbeddingStore(
            ctx.path / self.folder,
            ctx.writer_lock,
            ctx.name,
            files=ctx.backend.files(ctx.name, self.folder),
            meta=ctx.backend.meta(ctx.name, self.folder),
            ann_files=ctx.backend.files(ctx.name, layout.ANN_DIR),
            ann_meta=ctx.backend.meta(ctx.name, layout.ANN_DIR),
            candidates=ctx.matching_ids,
        )

    def recorded_files(self, folder: Path) -> dict[str, tuple[int, str]]:
        return recorded_files(folder)

    def incomplete(self, folder: Path) -> list[str]:
        return part_problems(folder, "an embedding set folder", _sets_without_metadata)

    def summary(self, ctx: PartContext) -> dict[str, Any]:
        return {
            e.name: {"count": e.count, "dim": e.dim, "dtype": e.dtype, "sha256": e.sha256}
            for e in ctx.part(self).list()
        }

    def verify(self, ctx: PartContext) -> list[str]:
        return ctx.part(self).verify()

    def stats(self, ctx: PartContext) -> dict[str, Any]:
        return {
            e.name: {"count": e.count, "dim": e.dim, "dtype": e.dtype}
            for e in ctx.part(self).list()
        }

    def load_state(self, ctx: PartContext) -> dict[str, Any]:
        sets = ctx.part(self)
        return {e.name: sets.load(e.name, mmap=False) for e in sets.list()}

    def save_state(self, ctx: PartContext, items: Mapping[str, Any]) -> None:
        sets = ctx.part(self)
        for name, es in items.items():
            try:
                ids, vectors = es.ids, es.vectors
            except AttributeError:
                raise InvalidInput(
                    f"state.{self.name}: {name!r} must be an app.EmbeddingSet",
                    argument=f"state.{self.name}",
                ) from None
            sets.save(name, ids, vectors, metadata=getattr(es, "metadata", None))

    def merge(
        self, target: PartContext, source: PartContext, names: Iterable[str], mode: str
    ) -> None:
        for name in names:
            _merge_set(target.part(self), source.part(self), name, mode)


def _merge_set(target: EmbeddingStore, source: EmbeddingStore, name: str, mode: str) -> None:
    incoming = source.load(name, mmap=True)
    try:
        if name not in {e.name for e in target.list()}:
            vectors = np.asarray(incoming.vectors)
            target.save(name, incoming.ids.tolist(), vectors, metadata=incoming.metadata)
            return
        current = target.load(name, mmap=False)
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
                target.save(name, new_ids, np.asarray(incoming.vectors)[new_rows], mode="append")
            return
        vectors = np.array(current.vectors, copy=True)
        src = np.asarray(incoming.vectors)
        vectors[[i for i, _ in replace]] = src[[j for _, j in replace]].astype(vectors.dtype)
        all_ids = current.ids.tolist() + new_ids
        if new_ids:
            vectors = np.concatenate([vectors, src[new_rows].astype(vectors.dtype)])
        metadata = {**current.metadata, **incoming.metadata}
        target.save(name, all_ids, vectors, metadata=metadata, mode="overwrite")
    except InvalidInput as exc:
        raise ConflictError(f"embedding set {name!r} cannot be merged: {exc}") from None


EMBEDDINGS = EmbeddingsPart()

__all__ = ["EMBEDDINGS", "EmbeddingsPart"]
