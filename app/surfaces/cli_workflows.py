"""Workflow commands of the CLI (``workflows ...``, ``worker``): registered by ``cli.py``."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add the workflow commands to the top-level group (filled in with the workflow tracker)."""
    _ = group
