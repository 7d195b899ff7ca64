"""Reliability suite counters: ``tally`` registers trials per scenario, ``scale`` picks the
quick or full count. A module of its own (not conftest) so that tests import it by a name no
other test directory uses."""

from __future__ import annotations

import os
import threading

FULL = os.environ.get("CTXSTORE_RELIABILITY", "quick").lower() == "full"


def scale(quick: int, full: int) -> int:
    """A trial count: ``quick`` by default, ``full`` with CTXSTORE_RELIABILITY=full."""
    return full if FULL else quick


_TALLY: dict[str, list[int]] = {}
_GUARD = threading.Lock()


def tally(scenario: str, trials: int, failures: int = 0) -> None:
    with _GUARD:
        row = _TALLY.setdefault(scenario, [0, 0])
        row[0] += trials
        row[1] += failures
