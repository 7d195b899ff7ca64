"""``ctxstore migrate SRC DST``: move every context of one store into another (directory or
postgresql:// URL on either side), export then import, with a progress bar (docs/api.md,
"Moving a store")."""

from __future__ import annotations

import click

from app.core.errors import InvalidInput
from app.core.urls import redact
from app.managers.maintenance.migrate import migrate_store
from app.managers.store import open_store
from app.surfaces.cli.output import print_json, progress
from app.surfaces.cli.root import cli


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option(
    "--files",
    default=None,
    help="Files URL of DST when it is a postgresql:// store (default: $CTXSTORE_FILES).",
)
@click.option(
    "--src-files",
    default=None,
    help="Files URL of SRC when it is a postgresql:// store (default: $CTXSTORE_FILES).",
)
@click.option("--replace", is_flag=True, help="Overwrite contexts that exist in DST.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def migrate(
    src: str, dst: str, files: str | None, src_files: str | None, replace: bool, as_json: bool
) -> None:
    """Copy every context of the store SRC into the store DST (created if missing)."""
    with (
        open_store(src, create=False, files=src_files) as source,
        open_store(dst, create=True, files=files) as dest,
    ):
        shared = getattr(source.backend, "files_url", None)
        if shared is not None and shared == getattr(dest.backend, "files_url", None):
            raise InvalidInput(
                f"files: SRC and DST both keep their files under {redact(shared)}; give DST "
                "its own files URL (--files)",
                argument="files",
            )
        total = len(source.contexts())
        with progress(total, "migrating") as bar:
            task = bar.add_task("migrate", total=total)
            report = migrate_store(
                source, dest, replace=replace, on_context=lambda _name: bar.advance(task)
            )
    if as_json:
        print_json(
            report.model_dump(mode="json")
            | {"source": redact(report.source), "destination": redact(report.destination)}
        )
        return
    click.echo(
        f"migrated {len(report.moved) + len(report.replaced)} context(s) from "
        f"{redact(report.source)} to {redact(report.destination)}: {len(report.moved)} new, "
        f"{len(report.replaced)} replaced, {report.records} records, {report.bytes} bytes "
        f"of archives, {report.trusted_models} trusted model version(s)"
    )
