"""A module no worker may import because a workflow names it: importing it leaves a marker
file at ``$WF_BAIT_MARKER`` (tests/test_workflow_workers.py)."""

from __future__ import annotations

import os
from pathlib import Path

Path(os.environ.get("WF_BAIT_MARKER", "wf_bait.imported")).write_text("imported\n")


def register(workflows: object) -> None:  # pragma: no cover - must never run
    raise AssertionError("wf_bait was imported")


def run(ctx: object, chunk: list[object], params: dict[str, object]) -> None:  # pragma: no cover
    raise AssertionError("wf_bait.run was called")
