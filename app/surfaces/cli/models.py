"""Model commands: ``models trust`` (sign the trust mark of a pickled model version).

``ctxstore models trust CTX NAME [VERSION]`` vouches for one version (default: the latest)
after re-checking its file; ``ctxstore models trust --existing [--dry-run]`` re-signs the
unsigned trust marks version 1 wrote, printing each version it signs. See docs/api.md,
"Models".
"""

from __future__ import annotations

import click

from app.core.artifacts import ModelInfo
from app.core.errors import StorageError
from app.managers.context import Context
from app.surfaces.cli.output import one_line
from app.surfaces.cli.root import State, cli, pass_state
from app.surfaces.errors import EXIT_USAGE, kind_of


@cli.group(name="models")
def models() -> None:
    """Models: trust (sign the trust mark of a pickled model)."""


def _line(context: str, info: ModelInfo) -> str:
    return f"{context}/{info.name}/v{info.version} {info.sha256}"


@models.command(name="trust")
@click.argument("context", required=False)
@click.argument("name", required=False)
@click.argument("version", required=False, type=int)
@click.option(
    "--existing",
    is_flag=True,
    help="Re-sign every unsigned trust mark written by version 1 (all contexts).",
)
@click.option("--dry-run", is_flag=True, help="With --existing: list only, sign nothing.")
@pass_state
def trust(
    state: State,
    context: str | None,
    name: str | None,
    version: int | None,
    existing: bool,
    dry_run: bool,
) -> None:
    """Trust a pickled model: CTX NAME [VERSION] (after re-checking its file), or --existing.

    A trust mark is signed with your trust key ($CTXSTORE_TRUST_KEY or
    ~/.config/ctxstore/trust.key); a store moved from another user needs its models
    trusted again. Trust only what you know came from a source you trust: loading a
    pickle runs code from it.
    """
    if existing:
        if context is not None:
            raise click.UsageError("--existing takes no CTX NAME [VERSION]")
        _trust_existing(state, dry_run=dry_run)
        return
    if context is None or name is None:
        raise click.UsageError("give CTX NAME [VERSION], or --existing")
    if dry_run:
        raise click.UsageError("--dry-run goes with --existing")
    ctx = state.store(create=False).context(context, create=False)
    info = ctx.models.trust(name, version=version)
    if ctx.models.runs_code(info.format):
        click.echo(f"trusted {_line(context, info)}")
    else:
        click.echo(
            f"{_line(context, info)}: a .{info.format} file runs no code when loaded; "
            "it needs no trust mark (its file checks out)"
        )


def _trust_existing(state: State, *, dry_run: bool) -> None:
    """List every context's v1 marks first, then sign them context by context, so a digest
    shared by two contexts is listed under both, in a dry run and a real one alike."""
    store = state.store(create=False)
    failed = 0
    listed: dict[str, list[ModelInfo]] = {}
    for context in store.contexts():
        try:
            listed[context] = _existing(store.context(context, create=False), dry_run=True)
        except StorageError as exc:
            if kind_of(exc).exit_code == EXIT_USAGE:
                raise
            failed += 1
            click.echo(f"error: context {context}: {one_line(str(exc))}", err=True)
    count = 0
    for context, found in listed.items():
        if found and not dry_run:
            _existing(store.context(context, create=False), dry_run=False)
        for info in found:
            click.echo(f"{'would sign' if dry_run else 'signed'} {_line(context, info)}")
        count += len(found)
    marks = "mark" if count == 1 else "marks"
    tail = " to sign (dry run: nothing written)" if dry_run else " signed"
    click.echo(f"{count} trust {marks}{tail}", err=True)
    if failed:
        raise click.ClickException(f"{failed} context(s) could not be checked (see above)")


def _existing(ctx: Context, *, dry_run: bool) -> list[ModelInfo]:
    return ctx.models.trust_existing(dry_run=dry_run)


__all__ = ["models", "trust"]
