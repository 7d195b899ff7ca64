"""Whole-context commands: ``export`` and ``import``."""

from __future__ import annotations

import click

from app.core.rules import ON_CONFLICTS, OnConflictValue
from app.surfaces.cli.output import print_json, progress
from app.surfaces.cli.root import State, cli, pass_state


@cli.command()
@click.argument("context")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_state
def export(state: State, context: str, dest: str, as_json: bool) -> None:
    """Write a consistent snapshot of CONTEXT to DEST (.tar.gz with a manifest)."""
    store = state.store(create=False)
    with progress(None, f"exporting {context}") as bar:
        bar.add_task("export", total=None)
        manifest = store.export_context(context, dest)
    if as_json:
        print_json(manifest.model_dump(mode="json"))
        return
    counts = ", ".join(f"{c}: {n}" for c, n in manifest.collections.items()) or "no records"
    click.echo(
        f"exported {context} to {dest}: {len(manifest.files)} files, "
        f"{manifest.total_bytes} bytes ({counts})"
    )


@cli.command(name="import")
@click.argument("archive", type=click.Path(dir_okay=False, exists=True, path_type=str))
@click.option("--name", default=None, help="Context name (default: the one in the archive).")
@click.option(
    "--on-conflict",
    type=click.Choice(ON_CONFLICTS),
    default="fail",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_state
def import_(
    state: State, archive: str, name: str | None, on_conflict: OnConflictValue, as_json: bool
) -> None:
    """Check ARCHIVE completely, then make it a context of the store."""
    store = state.store(create=True)
    with progress(None, "importing") as bar:
        bar.add_task("import", total=None)
        manifest = store.import_context(archive, name=name, on_conflict=on_conflict)
    if as_json:
        print_json(manifest.model_dump(mode="json"))
        return
    target = name or manifest.context
    counts = ", ".join(f"{c}: {n}" for c, n in manifest.collections.items()) or "no records"
    click.echo(f"imported {archive} as context {target} ({on_conflict}; {counts})")
