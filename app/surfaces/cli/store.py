"""Store-wide commands: ``verify``, ``stats``, ``serve``, ``demo``."""

from __future__ import annotations

from typing import Any

import click

from app.managers.parts import parts
from app.surfaces.cli.inputs import parse_size
from app.surfaces.cli.output import err, fail, out, print_json, progress
from app.surfaces.cli.root import State, cli, pass_state
from app.surfaces.errors import EXIT_FAILED


@cli.command()
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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def stats(state: State, as_json: bool) -> None:
    """Sizes and counts per context and part."""
    data: dict[str, Any] = state.store(create=False).stats()
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    part_names = [p.name for p in parts()]  # one column per registered part
    table = Table(title=f"store {data.get('root', '')}")
    for col in ("context", "records", *part_names, "index", "total size"):
        table.add_column(col, justify="left" if col == "context" else "right")
    for name, c in data.get("contexts", {}).items():
        table.add_row(
            name,
            str(c.get("records", 0)),
            *(str(len(c.get(part, {}))) for part in part_names),
            _human(c.get("index_bytes", 0)),
            _human(c.get("bytes", 0)),
        )
    out.print(table)
    out.print(f"records: {data.get('records', 0)}, store size: {_human(data.get('bytes', 0))}")
    wf = data.get("workflows") or {}
    by_status = wf.get("by_status") if isinstance(wf, dict) else None
    if by_status:
        out.print("workflows: " + ", ".join(f"{k}: {v}" for k, v in by_status.items()))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--no-worker", is_flag=True, help="Do not process submitted workflows in-process.")
@click.option(
    "--max-body",
    default="64MiB",
    show_default=True,
    metavar="SIZE",
    help="Largest request body (123, 64KiB, 64MiB, 1GB...); more is answered 413.",
)
@click.option(
    "--max-upload",
    default="4GiB",
    show_default=True,
    metavar="SIZE",
    help="Largest archive uploaded to POST /import.",
)
@click.option("--no-auth", is_flag=True, help="Serve without tokens (loopback only).")
@pass_state
def serve(
    state: State,
    host: str,
    port: int,
    no_worker: bool,
    max_body: str,
    max_upload: str,
    no_auth: bool,
) -> None:
    """Serve the HTTP API (FastAPI) with uvicorn."""
    body_limit = parse_size(max_body, "--max-body")
    upload_limit = parse_size(max_upload, "--max-upload")
    try:
        import uvicorn

        from app.surfaces.http import create_app
    except ImportError as exc:
        fail(f"the HTTP service needs the 'service' extra (pip install 'ctxstore[service]'): {exc}")
    application = create_app(
        state.store(),
        process_workflows=not no_worker,
        max_body=body_limit,
        max_upload=upload_limit,
    )
    err.print(f"serving store {state.store().root} on http://{host}:{port} (docs at /docs)")
    uvicorn.run(application, host=host, port=port, log_level="info")


@cli.command()
@click.option("--context", default="demo", show_default=True)
@click.option("--count", "n", default=5000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@pass_state
def demo(state: State, context: str, n: int, batch_size: int) -> None:
    """Create the store, append analogies in batches, query them, print a summary."""
    from app.surfaces.demo import print_summary, run_demo

    summary = run_demo(state.store(), context=context, count=n, batch_size=batch_size, console=err)
    print_summary(summary, out)
