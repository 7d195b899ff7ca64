"""The library's version, in one place (read by ``app.__version__``, manifests and markers)."""

from __future__ import annotations

__version__ = "0.1.0"

UPGRADE_COMMAND = "ctxstore upgrade"
"""The one command that migrates a store of an older format (opening never migrates)."""
