"""Contracts for CrossHair (``make crosshair``) over pure functions of app/core.

app/core's pure modules carry no icontract conditions of their own, so CrossHair has nothing to
check there; these thin wrappers state the properties the library relies on as icontract
postconditions and let CrossHair search for counterexamples symbolically.
"""

from __future__ import annotations

from pathlib import Path

import icontract

from app.core.errors import ConflictError, InvalidInput
from app.core.names import child, is_valid_name
from app.core.workflow_types import WorkflowStatus, check_transition, is_legal

TERMINAL = {WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED}


@icontract.ensure(
    lambda name, result: (
        not result
        or (
            name not in (".", "..")
            and "/" not in name
            and "\0" not in name
            and 1 <= len(name) <= 64
        )
    ),
    "a valid name can never leave its directory",
)
def valid_names_are_safe(name: str) -> bool:
    return is_valid_name(name)


@icontract.ensure(
    lambda name, result: result is None or result.parent == Path("/base"),
    "child() stays directly inside its parent",
)
def child_stays_inside(name: str) -> Path | None:
    try:
        return child(Path("/base"), name)
    except InvalidInput:
        return None


@icontract.ensure(
    lambda old, new, result: result == is_legal(old, new), "check_transition agrees with is_legal"
)
@icontract.ensure(
    lambda old, new, result: not result or old != WorkflowStatus.ROLLED_BACK,
    "rolled_back is final",
)
@icontract.ensure(
    lambda old, new, result: not (result and old in TERMINAL) or new == WorkflowStatus.ROLLED_BACK,
    "a finished workflow can only be rolled back",
)
def transition_rules(old: WorkflowStatus, new: WorkflowStatus) -> bool:
    try:
        check_transition(old, new)
    except ConflictError:
        return False
    return True
