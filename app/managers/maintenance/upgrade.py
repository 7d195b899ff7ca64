"""``ctxstore upgrade``: migrate a store of an older format (docs/api.md, "Upgrading a store").

Opening a store never migrates; using a part of an older format raises ``SchemaVersionError``
naming ``ctxstore upgrade``. ``upgrade_store`` holds the store's writer lock (no context is
created, dropped or installed meanwhile), runs the backend's pending migrations
(``app.backends.upgrade``) and then checks every context's format. Things an upgrade must not
decide alone are returned as notes: trust marks written by version 1 stay untrusted until
``ctxstore models trust --existing`` re-signs them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from app.backends.protocols import Backend
from app.backends.upgrade import UpgradeStep, pending_steps
from app.core import layout
from app.core.contracts import ensure
from app.core.errors import SchemaVersionError
from app.core.maintenance_types import UpgradeReport
from app.managers.models.trust import EXISTING_COMMAND, SHA256


class UpgradeHost(Protocol):
    """What an upgrade needs of a store: its backend."""

    @property
    def backend(self) -> Backend: ...


def v1_trust_marks(trust_dir: Path) -> int:
    """How many trust marks version 1 wrote (empty files): untrusted until re-signed."""
    try:
        entries = list(os.scandir(trust_dir))
    except OSError:
        return 0
    return sum(
        1
        for e in entries
        if SHA256.fullmatch(e.name) and e.is_file(follow_symlinks=False) and e.stat().st_size == 0
    )


def planned(store: UpgradeHost | Backend) -> list[UpgradeStep]:
    """The migrations ``upgrade_store`` would run now (nothing is written)."""
    return pending_steps(_backend(store))


def _backend(store: UpgradeHost | Backend) -> Backend:
    backend = getattr(store, "backend", None)
    return store if backend is None else backend  # type: ignore[return-value]


def check_existing(backend: Backend, steps: list[UpgradeStep]) -> None:
    """``NotFoundError`` when there is no store; an older store (``SchemaVersionError``) is
    what the pending steps are for."""
    try:
        backend.catalog().open(create=False)
    except SchemaVersionError:
        if not steps:
            raise


@ensure(lambda result: all(isinstance(a, str) for a in result.applied), "steps are described")
def upgrade_store(
    store: UpgradeHost | Backend,
    *,
    on_step: Callable[[str], None] | None = None,
) -> UpgradeReport:
    """Run every pending migration of ``store`` (a ``Store``, or the ``Backend`` of a store
    too old to open) under its writer lock, then check each context's format
    (``SchemaVersionError`` for one this version does not know); ``on_step`` is called with
    each step's description as it completes, then with each context's name as it is checked.
    """
    backend = _backend(store)
    catalog = backend.catalog()
    check_existing(backend, pending_steps(backend))
    applied: list[str] = []
    with catalog.writer_lock.hold():
        for step in pending_steps(backend):  # again: another upgrade may have run meanwhile
            step.run()
            applied.append(step.what)
            if on_step is not None:
                on_step(step.what)
        catalog.open(create=False)  # the store's marker is current now
        catalog.check_versions()
        names = catalog.names()
        for name in names:
            if on_step is not None:
                on_step(name)
    notes: list[str] = []
    marks = v1_trust_marks(layout.trust_dir(catalog.root))
    if marks:
        notes.append(
            f"{marks} model trust mark(s) written by version 1 stay untrusted until "
            f"`{EXISTING_COMMAND}` re-signs them"
        )
    return UpgradeReport(root=backend.url, applied=applied, checked=len(names), notes=notes)


__all__ = ["UpgradeHost", "check_existing", "planned", "upgrade_store", "v1_trust_marks"]
