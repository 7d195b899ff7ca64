"""Moved to ``app.backends.local.staging`` (staging folders are the embedded backend's); this
name stays importable."""

from app.backends.local.staging import (
    PREFIXES,
    Leftover,
    _lock,
    holding,
    staging_folder,
    sweep,
)

__all__ = ["PREFIXES", "Leftover", "_lock", "holding", "staging_folder", "sweep"]
