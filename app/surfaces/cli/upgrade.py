"""``ctxstore upgrade``: migrate a store of an older format. The only command that migrates:
opening a store never does (docs/api.md, "Upgrading a store")."""

from __future__ import annotations

import click

from app.core.urls import redact
from app.managers.maintenance.opening import backend_of
from app.managers.maintenance.upgrade import check_existing, planned, upgrade_store
from app.surfaces.cli.output import print_json, progress
from app.surfaces.cli.root import State, cli, pass_state


@cli.command()
@click.option(
    "--root",
    "root",
    default=None,
    help="The store: a directory or a postgresql:// URL (default: the global --root).",
)
@click.option(
    "--files",
    "files",
    default=None,
    help="A postgresql:// store's files URL (default: the global --files, $CTXSTORE_FILES).",
)
@click.option("--dry-run", is_flag=True, help="List the pending migrations, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def upgrade(
    state: State, root: str | None, files: str | None, dry_run: bool, as_json: bool
) -> None:
    """Migrate the store to this version's format, under the store's lock."""
    backend = backend_of(
        root if root is not None else state.root, files if files is not None else state.files
    )
    try:
        shown = redact(backend.url)
        steps = planned(backend)
        check_existing(backend, steps)
        if dry_run:
            if as_json:
                print_json({"root": shown, "pending": [s.what for s in steps]})
                return
            for step in steps:
                click.echo(f"pending: {step.what}")
            click.echo(f"{shown}: {len(steps)} migration(s) pending")
            return
        total = len(steps) + len(backend.catalog().names())
        with progress(total, "upgrading") as bar:
            task = bar.add_task("upgrade", total=total)
            report = upgrade_store(backend, on_step=lambda _what: bar.advance(task))
    finally:
        backend.close()
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    for what in report.applied:
        click.echo(f"migrated: {what}")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    state_word = f"{len(report.applied)} migration(s) applied" if report.applied else "current"
    click.echo(f"{shown}: {state_word}; {report.checked} context(s) checked")
