"""Store-level commands of the CLI: export, import, verify, stats, serve, demo."""

from __future__ import annotations

from typing import Any

import click

from app.surfaces.cli import EXIT_FAILED, State, err, fail, out, pass_state, print_json, progress


@click.command()
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


@click.command(name="import")
@click.argument("archive", type=click.Path(dir_okay=False, exists=True, path_type=str))
@click.option("--name", default=None, help="Context name (default: the one in the archive).")
@click.option(
    "--on-conflict",
    type=click.Choice(["fail", "overwrite", "merge", "skip"]),
    default="fail",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_state
def import_(state: State, archive: str, name: str | None, on_conflict: str, as_json: bool) -> None:
    """Check ARCHIVE completely, then make it a context of the store."""
    store = state.store()
    with progress(None, "importing") as bar:
        bar.add_task("import", total=None)
        manifest = store.import_context(archive, name=name, on_conflict=on_conflict)
    if as_json:
        print_json(manifest.model_dump(mode="json"))
        return
    target = name or manifest.context
    counts = ", ".join(f"{c}: {n}" for c, n in manifest.collections.items()) or "no records"
    click.echo(f"imported {archive} as context {target} ({on_conflict}; {counts})")


@click.command()
@click.argument("context", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def verify(state: State, context: str | None, as_json: bool) -> None:
    """Check every file (of CONTEXT, or of the whole store). Exit 0 intact, 1 damaged."""
    store = state.store(create=False)
    with progress(None, "verifying") as bar:
        bar.add_task("verify", total=None)
        if context is None:
            report = store.verify()
        else:
            report = store.context(context, create=False).verify()
    if as_json:
        print_json(report.model_dump())
    elif report.ok:
        click.echo(f"ok: {len(report.checked)} parts checked, no damage found")
    else:
        click.echo(f"DAMAGED: {len(report.problems)} problem(s)")
        for problem in report.problems:
            click.echo(f"  - {problem}")
    if not report.ok:
        raise SystemExit(EXIT_FAILED)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def stats(state: State, as_json: bool) -> None:
    """Sizes and counts per context and part."""
    data: dict[str, Any] = state.store(create=False).stats()
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table(title=f"store {data.get('root', '')}")
    for col in ("context", "records", "embedding sets", "models", "index", "total size"):
        table.add_column(col, justify="left" if col == "context" else "right")
    for name, c in data.get("contexts", {}).items():
        table.add_row(
            name,
            str(c.get("records", 0)),
            str(len(c.get("embeddings", {}))),
            str(len(c.get("models", {}))),
            _human(c.get("index_bytes", 0)),
            _human(c.get("bytes", 0)),
        )
    out.print(table)
    out.print(f"records: {data.get('records', 0)}, store size: {_human(data.get('bytes', 0))}")
    wf = data.get("workflows") or {}
    by_status = wf.get("by_status") if isinstance(wf, dict) else None
    if by_status:
        out.print("workflows: " + ", ".join(f"{k}: {v}" for k, v in by_status.items()))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--no-worker", is_flag=True, help="Do not process submitted workflows in-process.")
@pass_state
def serve(state: State, host: str, port: int, no_worker: bool) -> None:
    """Serve the HTTP API (FastAPI) with uvicorn."""
    try:
        import uvicorn

        from app.service import create_app
    except ImportError as exc:
        fail(f"the HTTP service needs the 'service' extra (pip install 'ctxstore[service]'): {exc}")
    application = create_app(state.store(), process_workflows=not no_worker)
    err.print(f"serving store {state.store().root} on http://{host}:{port} (docs at /docs)")
    uvicorn.run(application, host=host, port=port, log_level="info")


@click.command()
@click.option("--context", default="demo", show_default=True)
@click.option("--count", "n", default=5000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@pass_state
def demo(state: State, context: str, n: int, batch_size: int) -> None:
    """Create the store, append analogies in batches, query them, print a summary."""
    from app.surfaces.demo import print_summary, run_demo

    summary = run_demo(state.store(), context=context, count=n, batch_size=batch_size, console=err)
    print_summary(summary, out)


def register(group: click.Group) -> None:
    for command in (export, import_, verify, stats, serve, demo):
        group.add_command(command)
