"""The ``models`` part: a context's versioned models (``app.managers.models``).

Merge rule (``import_context(..., on_conflict="merge" | "skip")``): every imported version is
added as a new version after the existing ones (``skip``: only models the context does not
have). Versions whose format runs no code when read are loaded and saved again; pickled ones
are never deserialised here: they are added as files and stay untrusted. See docs/api.md,
"Context parts".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from app.core import layout
from app.core.nofollow import part_problems
from app.managers.models import ModelStore, recorded_files
from app.managers.models.trust import marks_of
from app.managers.parts.protocol import PartContext


class ModelsPart:
    """Models: ``<context>/models/<model>/`` (a record and a file per version)."""

    name = layout.MODELS_DIR
    folder = layout.MODELS_DIR

    def open(self, ctx: PartContext) -> ModelStore:
        return ModelStore(
            ctx.path / self.folder,
            ctx.writer_lock,
            ctx.name,
            ctx.trust_dir,
            files=ctx.backend.files(ctx.name, self.folder),
            meta=ctx.backend.meta(ctx.name, self.folder),
            marks=marks_of(ctx.backend, ctx.trust_dir),
        )

    def recorded_files(self, folder: Path) -> dict[str, tuple[int, str]]:
        return recorded_files(folder)

    def incomplete(self, folder: Path) -> list[str]:
        return part_problems(folder, "a model folder", lambda _: [])

    def summary(self, ctx: PartContext) -> dict[str, Any]:
        models = ctx.part(self)
        return {
            m.name: [
                {
                    "version": v.version,
                    "format": v.format,
                    "sha256": v.sha256,
                    "size_bytes": v.size_bytes,
                }
                for v in models.versions(m.name)
            ]
            for m in models.list()
        }

    def verify(self, ctx: PartContext) -> list[str]:
        return ctx.part(self).verify()

    def stats(self, ctx: PartContext) -> dict[str, Any]:
        return {m.name: {"version": m.version, "format": m.format} for m in ctx.part(self).list()}

    def load_state(self, ctx: PartContext) -> dict[str, Any]:
        models = ctx.part(self)
        return {m.name: models.load(m.name) for m in models.list()}

    def save_state(self, ctx: PartContext, items: Mapping[str, Any]) -> None:
        models = ctx.part(self)
        for name, model in items.items():
            models.save(name, model)

    def merge(
        self, target: PartContext, source: PartContext, names: Iterable[str], mode: str
    ) -> None:
        for name in names:
            _merge_model(target.part(self), source.part(self), name, mode)


def _merge_model(target: ModelStore, source: ModelStore, name: str, mode: str) -> None:
    have = {m.name for m in target.list()}
    if mode == "skip" and name in have:
        return
    for info in source.versions(name):
        # Copied as verified bytes, never deserialised; a format whose reading runs code
        # (pickle) stays untrusted in the target until loaded with trusted=True.
        target.add_untrusted_version(name, source.path_of(name, info.version), info)


MODELS = ModelsPart()

__all__ = ["MODELS", "ModelsPart"]
