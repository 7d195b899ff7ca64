"""Versioned models of a context (docs/api.md, "Models"): ``ModelStore`` (``ctx.models``) in
``store``, pickle trust marks in ``trust``, what a model's folder holds in ``folder``."""

from __future__ import annotations

from app.managers.models.folder import recorded_files
from app.managers.models.store import ModelStore

__all__ = ["ModelStore", "recorded_files"]
