"""The ``ctxstore`` command line (``python -m app``, ``python -m ctxstore``): click commands
over the public API. See docs/api.md, "Command line".

One registration style: ``root`` defines the groups (``cli``, ``workflows``); every command
module defines its commands on them (``@cli.command()``), and importing the modules below
registers them. ``records``: contexts, append, query, count, compact; ``transfer``: export,
import; ``store``: verify, stats, serve, demo; ``workflows``: workflows ..., worker;
``models``: models ...; ``access``: tokens ..., audit; ``upgrade``, ``migrate``,
``gc``: store maintenance.

Output conventions: ``query`` prints JSON lines; tables (``contexts``, ``stats``) are rich
tables on a terminal and JSON with ``--json``. Long operations show a progress bar on stderr
when it is a terminal. User mistakes print one line ``error: ...`` on stderr and exit with 2
(usage: bad option, bad argument, bad JSON, invalid name) or 1 (the operation failed: not
found, conflict, damage, I/O); a traceback only ever means a bug.
"""

from app.managers.store import resolve_root
from app.surfaces.cli import (
    access,
    gc,
    migrate,
    models,
    records,
    store,
    transfer,
    upgrade,
    workflows,
)
from app.surfaces.cli.main import main
from app.surfaces.cli.output import fail
from app.surfaces.cli.root import State, cli
from app.surfaces.errors import EXIT_FAILED, EXIT_USAGE

COMMAND_MODULES = (records, transfer, store, workflows, models, access, upgrade, migrate, gc)
"""Imported for their commands (importing a module registers them on ``root``'s groups)."""

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "State", "cli", "fail", "main", "resolve_root"]
