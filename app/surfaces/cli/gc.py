"""``ctxstore gc [--apply]``: report (default) or remove what the store no longer needs
(docs/api.md, "Garbage collection")."""

from __future__ import annotations

import click

from app.core.maintenance_types import GcReport
from app.core.urls import redact
from app.managers.maintenance.opening import open_unswept
from app.surfaces.cli.inputs import parse_duration
from app.surfaces.cli.output import print_json
from app.surfaces.cli.root import State, cli, pass_state


def _summary(report: GcReport) -> str:
    verb = "would remove" if report.dry_run else "removed"
    kinds: dict[str, int] = {}
    for item in report.items:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
    what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing"
    tail = " (dry run: pass --apply to remove)" if report.dry_run and report.items else ""
    return f"gc {verb} {what}, {report.bytes} bytes{tail}"


@cli.command()
@click.option("--apply", "apply_", is_flag=True, help="Remove (default: only report).")
@click.option(
    "--workflows-older-than",
    default=None,
    help="Also purge finished workflows finished longer ago than this (7d, 12h, 60s).",
)
@click.option(
    "--compact-ratio",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=None,
    help="Also compact collections whose superseded share exceeds this (0.5 = half).",
)
@click.option(
    "--keep-model-versions",
    type=click.IntRange(min=1),
    default=None,
    help="Model versions to keep per model (not available in this version).",
)
@click.option(
    "--grace",
    default="24h",
    show_default=True,
    help="Age below which an unreferenced object-store file is kept (24h, 30m).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def gc(
    state: State,
    apply_: bool,
    workflows_older_than: str | None,
    compact_ratio: float | None,
    keep_model_versions: int | None,
    grace: str,
    as_json: bool,
) -> None:
    """Leftover staging folders, unreferenced object files, and optionally old finished
    workflows and compactable collections: listed, or removed with --apply."""
    age = (
        None
        if workflows_older_than is None
        else parse_duration(workflows_older_than, "--workflows-older-than")
    )
    grace_period = parse_duration(grace, "--grace")
    with open_unswept(state.root, state.files) as store:  # opening must not sweep what gc reports
        report = store.gc(
            dry_run=not apply_,
            keep_model_versions=keep_model_versions,
            workflows_older_than=age,
            compact_ratio=compact_ratio,
            grace=grace_period,
        )
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    for item in report.items:
        click.echo(f"{item.kind}\t{item.bytes}\t{redact(item.path)}")
    click.echo(_summary(report))
