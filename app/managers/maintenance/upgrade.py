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
from app.core.contracts import ensure
from app.core.maintenance_types import UpgradeReport
from app.managers.host import ContextHost
from app.managers.models.trust import EXISTING_COMMAND, SHA256


class UpgradeHost(ContextHost, Protocol):
    """What an upgrade needs of a store: its backend, contexts, lock and trust folder."""

    @property
    def backend(self) -> Backend: ...

    @property
    def trust_dir(self) -> Path: ...

    def check_versions(self) -> None: ...


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


def planned(store: UpgradeHost) -> list[UpgradeStep]:
    """The migrations ``upgrade_store`` would run now (nothing is written)."""
    return pending_steps(store.backend)


@ensure(lambda result: all(isinstance(a, str) for a in result.applied), "steps are described")
def upgrade_store(
    store: UpgradeHost,
    *,
    on_step: Callable[[str], None] | None = None,
) -> UpgradeReport:
    """Run every pending migration of ``store`` under its writer lock, then check each
    context's format (``SchemaVersionError`` for one this version does not know);
    ``on_step`` is called with each step's description as it completes (contexts: their
    name)."""
    applied: list[str] = []
    with store.writer_lock.hold():
        for step in pending_steps(store.backend):
            step.run()
            applied.append(step.what)
            if on_step is not None:
                on_step(step.what)
        store.check_versions()
        names = store.contexts()
        for name in names:
            if on_step is not None:
                on_step(name)
    notes: list[str] = []
    marks = v1_trust_marks(store.trust_dir)
    if marks:
        notes.append(
            f"{marks} model trust mark(s) written by version 1 stay untrusted until "
            f"`{EXISTING_COMMAND}` re-signs them"
        )
    return UpgradeReport(root=str(store.root), applied=applied, checked=len(names), notes=notes)


__all__ = ["UpgradeHost", "planned", "upgrade_store", "v1_trust_marks"]
