"""Reliability suite (issue 6): shared tally, quick/full mode, helpers.

Every test registers what it tried with ``tally(scenario, trials, failures)``; the terminal
summary prints one table ``scenario | trials | failures`` at the end of the run. A test also
asserts ``failures == 0`` itself, so the table is a report, never the only check.

Quick mode (default) is sized for CI; ``CTXSTORE_RELIABILITY=full`` multiplies the counts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
for p in (str(HERE), str(TESTS), str(TESTS / "workers")):  # workers: the crash harness
    if p not in sys.path:
        sys.path.insert(0, p)

os.environ.pop("CTXSTORE_ROOT", None)

from relstats import _TALLY, FULL  # noqa: E402


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TALLY:
        return
    tr = terminalreporter
    width = max(len("scenario"), *(len(s) for s in _TALLY))
    mode = "full mode" if FULL else "quick mode"
    if os.environ.get("CTXSTORE_PG_CRASH") == "reliability" and not FULL:
        mode += "; PostgreSQL rows at the make test-reliability counts"
    tr.write_sep("=", f"reliability ({mode})")
    tr.write_line(f"{'scenario'.ljust(width)} | {'trials':>7} | {'failures':>8}")
    tr.write_line(f"{'-' * width}-+-{'-' * 7}-+-{'-' * 8}")
    total_t = total_f = 0
    for name in sorted(_TALLY):
        t, f = _TALLY[name]
        total_t += t
        total_f += f
        tr.write_line(f"{name.ljust(width)} | {t:>7} | {f:>8}")
    tr.write_line(f"{'-' * width}-+-{'-' * 7}-+-{'-' * 8}")
    tr.write_line(f"{'total'.ljust(width)} | {total_t:>7} | {total_f:>8}")
