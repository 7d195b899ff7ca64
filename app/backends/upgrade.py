"""What ``ctxstore upgrade`` migrates on each backend: the pending ``UpgradeStep``s of a store.

A step is one format migration, found by reading version markers only (nothing is written
until it runs). Opening a store never runs them; using a part of an older format raises
``SchemaVersionError`` naming ``ctxstore upgrade``.

Embedded (``LocalBackend``): a context's SQLite index of version 1 (ids unique through a
column constraint) is rebuilt from its logs as version 2 (``index_upgrade``: the index is
derived data); the workflow tracker of an older version (1: no steady-clock heartbeat; 2: no
priorities or retries) becomes version 3 (``app.formats.tracker_schema.upgrade_tracker``). The
store marker, the context descriptions, logs, embedding and model records have had one format
each so far: nothing to migrate. On PostgreSQL each part's tables are brought to this version by
``app.backends.postgres.upgrade`` (missing parts created, older ones migrated, under the
schema advisory lock).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from app.backends.local.backend import LocalBackend
from app.backends.local.records.index_upgrade import index_version, needs_upgrade, upgrade_index
from app.backends.postgres import upgrade as pg
from app.backends.postgres.connect import Database
from app.backends.protocols import Backend
from app.core import layout
from app.formats.sqlindex import INDEX_VERSION
from app.formats.sqlitefile import file_version
from app.formats.tracker_schema import TRACKER_VERSION, upgrade_tracker


class UpgradeStep(NamedTuple):
    """One pending migration: what it does (for the progress bar and the report) and how."""

    what: str
    run: Callable[[], object]


def _index_step(folder: Path, name: str) -> UpgradeStep:
    return UpgradeStep(
        f"{folder / layout.index_name(name)}: index version {index_version(folder, name)} -> "
        f"{INDEX_VERSION} (rebuilt from the logs)",
        lambda: upgrade_index(folder, name),
    )


def _index_steps(backend: LocalBackend) -> list[UpgradeStep]:
    """A rebuild of every context index of an older version (derived data)."""
    steps: list[UpgradeStep] = []
    for name in backend.catalog().names():
        folder = backend.context_folder(name)
        if needs_upgrade(folder, name):
            steps.append(_index_step(folder, name))
    return steps


def _local_steps(backend: LocalBackend) -> list[UpgradeStep]:
    steps: list[UpgradeStep] = _index_steps(backend)
    tracker = layout.tracker(backend.root)
    if tracker.is_file():
        version = file_version(tracker)
        if version is not None and 0 < version < TRACKER_VERSION:
            steps.append(
                UpgradeStep(
                    f"{tracker}: workflow tracker version {version} -> {TRACKER_VERSION}",
                    lambda: upgrade_tracker(tracker),
                )
            )
    return steps


def _pg_step(db: Database, part: pg.PgPart, recorded: int | None) -> UpgradeStep:
    return UpgradeStep(pg.describe(part, recorded), lambda: pg.upgrade(db, part))


def _pg_steps(db: Database) -> list[UpgradeStep]:
    return [_pg_step(db, part, recorded) for part, recorded in pg.planned(db)]


def pending_steps(backend: Backend) -> list[UpgradeStep]:
    """The migrations ``backend``'s store needs, in the order they must run (read from the
    version markers only)."""
    if isinstance(backend, LocalBackend):
        return _local_steps(backend)
    db = getattr(backend, "db", None)  # a PostgreSQL store's shared Database
    if isinstance(db, Database):
        return _pg_steps(db)
    return []


def create_current(backend: Backend) -> None:
    """``create=True``: give a store every part's tables at this version now (a PostgreSQL
    store; a directory store needs nothing: its files are created in the current format on
    first use). Existing parts are never changed (opening never migrates)."""
    db = getattr(backend, "db", None)
    if isinstance(db, Database):
        pg.create_missing(db)


__all__ = ["UpgradeStep", "create_current", "pending_steps"]
