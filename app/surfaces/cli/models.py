"""Model commands: ``models list|versions|load`` (read) and ``models trust`` (sign the trust
mark of a pickled model version).

``list``, ``versions`` and ``load`` only read: they open an existing store and context (never
create one). ``load`` really deserialises the model through ``ctx.models.load`` (a pickle
without a valid trust mark is refused unless ``--trusted``) and prints one summary line.
``ctxstore models trust CTX NAME [VERSION]`` vouches for one version (default: the latest)
after re-checking its file; ``ctxstore models trust --existing [--dry-run]`` re-signs the
unsigned trust marks version 1 wrote, printing each version it signs. See docs/api.md,
"Models".
"""

from __future__ import annotations

import shlex
from typing import Any

import click

from app.core.artifacts import ModelInfo
from app.core.errors import StorageError, UntrustedArtifactError
from app.managers.context import Context
from app.managers.models.trust import TRUST_COMMAND
from app.surfaces.cli.modelsummary import describe, summary_line
from app.surfaces.cli.output import one_line, out, print_json
from app.surfaces.cli.root import State, cli, pass_state
from app.surfaces.errors import EXIT_USAGE, kind_of


@cli.group(name="models")
def models() -> None:
    """Models: list, versions, load (read) and trust (sign the trust mark of a pickle)."""


def _existing_context(state: State, context: str) -> Context:
    """An existing context of an existing store (``NotFoundError`` otherwise): reading
    commands never create either."""
    return state.store(create=False).context(context, create=False)


def _row(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "format": info.format,
        "size_bytes": info.size_bytes,
        "created_at": info.created_at,
        "sha256": info.sha256,
    }


def _print_infos(title: str, infos: list[ModelInfo], as_json: bool) -> None:
    if as_json:
        print_json([_row(info) for info in infos])
        return
    from rich.table import Table

    table = Table(title=title)
    for column in ("name", "version", "format"):
        table.add_column(column)
    table.add_column("size", justify="right")
    table.add_column("created_at")
    for info in infos:
        table.add_row(
            info.name, str(info.version), info.format, f"{info.size_bytes:,}", info.created_at
        )
    out.print(table)


@models.command(name="list")
@click.argument("context")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def list_models(state: State, context: str, as_json: bool) -> None:
    """The latest version of each model of CONTEXT."""
    infos = _existing_context(state, context).models.list()
    _print_infos(f"models in {context}", infos, as_json)


@models.command(name="versions")
@click.argument("context")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def versions(state: State, context: str, name: str, as_json: bool) -> None:
    """Every version of model NAME in CONTEXT, oldest first."""
    ctx = _existing_context(state, context)
    infos = ctx.models.versions(name)
    if not infos:  # versions() of an unknown model is empty: say so, like load and trust
        infos = [ctx.models.info(name)]  # raises NotFoundError naming model and context
    _print_infos(f"versions of {context}/{name}", infos, as_json)


@models.command(name="load")
@click.argument("context")
@click.argument("name")
@click.option("--version", type=click.IntRange(min=1), default=None, help="Default: latest.")
@click.option(
    "--trusted",
    is_flag=True,
    help="Load a pickle without a valid trust mark (it runs code: only if you trust it).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def load(
    state: State, context: str, name: str, version: int | None, trusted: bool, as_json: bool
) -> None:
    """Load (deserialise) a model version and print what it is: its Python type and, for
    torch tensors, how many tensors and parameters.

    A pickle (.joblib) loads only when its trust mark is signed with your trust key (your
    own save, or `ctxstore models trust`), or with --trusted: loading a pickle runs code
    from it.
    """
    ctx = _existing_context(state, context)
    info = ctx.models.info(name, version=version)
    try:
        model = ctx.models.load(name, version=info.version, trusted=trusted)
    except UntrustedArtifactError as exc:
        raise UntrustedArtifactError(_cli_fix(str(exc), info, context)) from None
    summary = {"context": context, **_row(info), **describe(model)}
    if as_json:
        print_json(summary)
    else:
        where = f"{context}/{info.name}/v{info.version} ({info.format}, {info.size_bytes:,} bytes)"
        click.echo(f"{where}: {summary_line(summary)}")


def _cli_fix(message: str, info: ModelInfo, context: str) -> str:
    """The library's refusal, with the fixes spelled for this command line."""
    args = shlex.join([context, info.name, str(info.version)])
    command = f"ctxstore models trust {args}"
    return message.replace(TRUST_COMMAND, command).replace("trusted=True", "--trusted")


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


__all__ = ["list_models", "load", "models", "trust", "versions"]
