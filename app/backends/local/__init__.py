"""The embedded backend: one store directory on one host (``LocalBackend``)."""

from app.backends.local.backend import LocalBackend
from app.backends.local.contexts import LocalContexts
from app.backends.local.files import LocalFileStore
from app.backends.local.meta import LocalMetaStore

__all__ = ["LocalBackend", "LocalContexts", "LocalFileStore", "LocalMetaStore"]
