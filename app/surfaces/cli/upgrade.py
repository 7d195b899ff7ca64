"""``ctxstore upgrade``: migrate a store of an older format. The only command that migrates:
opening a store never does (docs/api.md, "Upgrading a store")."""

from __future__ import annotations

import click

from app.backends.registry import redact
from app.managers.maintenance.upgrade import planned, upgrade_store
from app.surfaces.cli.output import print_json, progress
from app.surfaces.cli.root import State, cli, pass_state


@cli.command()
@click.option(
    "--root",
    "root",
    default=None,
    help="The store (a directory or a postgresql:// URL; default: the global --root).",
)
@click.option("--dry-run", is_flag=True, help="List the pending migrations, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def upgrade(state: State, root: str | None, dry_run: bool, as_json: bool) -> None:
    """Migrate the store to this version's format, under the store's lock."""
    if root is not None:
        state.root = root
    store = state.store(create=False)
    steps = planned(store)
    shown = redact(str(store.root))
    if dry_run:
        if as_json:
            print_json({"root": shown, "pending": [s.what for s in steps]})
            return
        for step in steps:
            click.echo(f"pending: {step.what}")
        click.echo(f"{shown}: {len(steps)} migration(s) pending")
        return
    total = len(steps) + len(store.contexts())
    with progress(total, "upgrading") as bar:
        task = bar.add_task("upgrade", total=total)
        report = upgrade_store(store, on_step=lambda _what: bar.advance(task))
    if as_json:
        print_json(report.model_dump(mode="json") | {"root": shown})
        return
    for what in report.applied:
        click.echo(f"migrated: {what}")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    state_word = f"{len(report.applied)} migration(s) applied" if report.applied else "current"
    click.echo(f"{shown}: {state_word}; {report.checked} context(s) checked")
