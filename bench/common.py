"""Benchmark plumbing shared by the sections: timing, rows and the table.

A section is a module ``bench/<name>.py`` with ``run(quick: bool, workdir: Path) -> list[Row]``.
Each row is a figure of ctxstore and, when it has one, the raw baseline measured in the same
run, the ratio between them and the goal the ratio must meet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Row:
    section: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    higher_is_better: bool = True
    goal: float | None = None  # goal on the ratio value/baseline (or baseline/value)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or self.value == 0:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        r = self.ratio
        if r is None or self.goal is None:
            return ""
        if self.higher_is_better:
            return "ok" if r >= self.goal else "MISS"
        return "ok" if r <= self.goal else "MISS"


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs of ``fn`` in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def format_table(rows: list[Row]) -> str:
    head = (
        f"{'section':<10} {'figure':<58} {'value':>12} {'unit':<10} {'baseline':>12} "
        f"{'ratio':>7} {'goal':>8} {'':>4}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        base = f"{r.baseline:12.4g}" if r.baseline is not None else " " * 12
        ratio = f"{r.ratio:7.2f}" if r.ratio is not None else " " * 7
        goal = ""
        if r.goal is not None:
            goal = (">=" if r.higher_is_better else "<=") + f"{r.goal:g}"
        lines.append(
            f"{r.section:<10} {r.name[:58]:<58} {r.value:12.4g} {r.unit:<10} {base} {ratio} "
            f"{goal:>8} {r.verdict:>4}" + (f"  {r.note}" if r.note else "")
        )
    return "\n".join(lines)
