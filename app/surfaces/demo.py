"""The job behind ``ctxstore demo`` (and ``make demo``): a small tour that exercises the store.

Appends a few thousand analogies in idempotent batches (running the demo twice writes nothing
new), queries them, and prints a summary. Uses only the public API.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.managers.store import Store

DOMAINS = ["biology", "physics", "economics", "music", "cooking", "software", "history"]
TARGETS = ["engineering", "sports", "medicine", "architecture", "law"]
RELATIONS = ["is like", "flows as", "grows as", "balances as", "competes as"]


@dataclass(frozen=True)
class DemoSummary:
    root: str
    context: str
    appended: int
    duplicates: int
    total: int
    high_quality: int
    seconds: float
    top: list[dict[str, Any]]


def analogy(i: int) -> dict[str, Any]:
    return {
        "id": f"demo-{i:06d}",
        "source_domain": DOMAINS[i % len(DOMAINS)],
        "target_domain": TARGETS[i % len(TARGETS)],
        "quality_score": round(((i * 7919) % 1000) / 1000, 3),
        "relation": RELATIONS[i % len(RELATIONS)],
        "metadata": {"source": "demo", "batch": i // 500},
    }


def run_demo(
    store: Store,
    *,
    context: str = "demo",
    count: int = 5000,
    batch_size: int = 500,
    console: Console | None = None,
) -> DemoSummary:
    """Append ``count`` analogies to ``context`` in batches, query them, return a summary."""
    err = console or Console(stderr=True)
    t0 = time.perf_counter()
    ctx = store.context(context)
    appended = duplicates = 0
    with Progress(
        TextColumn("[bold]appending analogies"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("append", total=count)
        for start in range(0, count, batch_size):
            n = min(batch_size, count - start)
            receipt = ctx.append(
                "analogies",
                [analogy(i) for i in range(start, start + n)],
                batch_id=f"demo-batch-{start // batch_size:05d}-{n}",
            )
            if receipt.duplicate:
                duplicates += receipt.count
            else:
                appended += receipt.count
            progress.advance(task, n)
    high = ctx.count("analogies", {"quality_score": {"$gte": 0.9}})
    top = ctx.query(
        "analogies",
        {"source_domain": "biology", "quality_score": {"$gte": 0.5}},
        order_by="-quality_score",
        limit=5,
    )
    return DemoSummary(
        root=str(store.root),
        context=context,
        appended=appended,
        duplicates=duplicates,
        total=ctx.count("analogies"),
        high_quality=high,
        seconds=time.perf_counter() - t0,
        top=top,
    )


def print_summary(summary: DemoSummary, console: Console) -> None:
    console.print(f"[bold]ctxstore demo[/bold] — store at {summary.root}")
    console.print(
        f"appended {summary.appended} analogies to context {summary.context!r}"
        + (
            f" ({summary.duplicates} already there: batches are idempotent)"
            if summary.duplicates
            else ""
        )
        + f" in {summary.seconds:.2f}s"
    )
    console.print(f"analogies in the context: {summary.total}")
    console.print(f"analogies with quality_score >= 0.9: {summary.high_quality}")
    table = Table(title="top biology analogies (quality_score >= 0.5)")
    for col in ("id", "source_domain", "target_domain", "relation", "quality_score"):
        table.add_column(col)
    for rec in summary.top:
        table.add_row(
            str(rec["id"]),
            str(rec["source_domain"]),
            str(rec["target_domain"]),
            str(rec.get("relation", "")),
            f"{rec['quality_score']:.3f}",
        )
    console.print(table)
    console.print(
        'next: ctxstore query demo analogies --where \'{"quality_score": {"$gte": 0.99}}\''
    )
