"""Handler modules a worker is started with (``ctxstore worker --import mypkg.handlers``).

A handler module defines ``register(workflows)``, which registers its workflow types on the
``WorkflowManager`` it is given (``workflows.register("tag", tag_handler)``). Only the modules
the worker's operator names are imported; the tracker stores a workflow type's name, never code
or an import path, so whoever submits a workflow can never make a worker import or run anything
it was not started with (docs/api.md, "Batch workflows").
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

from app.core.errors import InvalidInput

MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
HOOK = "register"


def load_handler_modules(workflows: Any, modules: Iterable[str]) -> list[str]:
    """Import each module and call its ``register(workflows)``; returns the workflow types
    they added. ``InvalidInput`` naming ``--import`` for a bad name, a module that cannot be
    imported or one without the hook."""
    before = set(workflows.handlers())
    for name in modules:
        if not MODULE_NAME.match(name):
            raise InvalidInput(f"--import: {name!r} is not a module name", argument="--import")
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise InvalidInput(
                f"--import: cannot import {name!r}: {exc}", argument="--import"
            ) from exc
        hook = getattr(module, HOOK, None)
        if not callable(hook):
            raise InvalidInput(
                f"--import: module {name!r} defines no {HOOK}(workflows) function",
                argument="--import",
            )
        hook(workflows)
    return sorted(set(workflows.handlers()) - before)


__all__ = ["HOOK", "load_handler_modules"]
