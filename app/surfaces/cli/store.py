"""Store-wide commands: ``verify``, ``stats``, ``serve``, ``demo``."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import click

from app.core.errors import InvalidInput
from app.managers.parts import parts
from app.surfaces.cli.output import err, fail, out, print_json, progress
from app.surfaces.cli.root import State, cli, pass_state
from app.surfaces.errors import EXIT_FAILED, EXIT_USAGE


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


_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?)(b?)")
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """``123`` (bytes), ``64KiB``/``64K``, ``64MiB``, ``4GiB`` (powers of 1024), ``1KB``,
    ``1GB`` (powers of 1000), case-insensitive; else ``InvalidInput``."""
    match = _SIZE.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidInput(f"{text[:40]!r} is not a size like 123, 64KiB, 64MiB, 4GiB, 1GB")
    number, unit, binary, b = match.groups()
    decimal = bool(unit) and bool(b) and not binary
    factor: int = (1000 if decimal else 1024) ** _POWERS[unit]
    return int(number) * factor


class Size(click.ParamType[int, Any]):
    """A size in bytes with an optional unit (``parse_size``)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            size: int = parse_size(str(value))
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)
        return size


def _loopback(host: str) -> bool:
    """Whether ``--host`` is a loopback address (only those may serve without tokens)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--no-worker", is_flag=True, help="Do not process submitted workflows in-process.")
@click.option(
    "--no-auth",
    is_flag=True,
    help="No tokens: serve loopback clients only (refused on a non-loopback --host).",
)
@click.option(
    "--allow-host",
    multiple=True,
    metavar="HOST",
    help="Also accept this Host header (besides localhost, 127.0.0.1, [::1], --host).",
)
@click.option(
    "--allow-origin",
    multiple=True,
    metavar="ORIGIN",
    help="Also accept requests from this web origin, e.g. https://app.example (CORS).",
)
@click.option(
    "--max-body", type=Size(), default="64MiB", show_default=True, help="Largest request body."
)
@click.option(
    "--max-upload", type=Size(), default="4GiB", show_default=True, help="Largest archive upload."
)
@click.option("--ssl-certfile", type=click.Path(dir_okay=False), help="TLS certificate (PEM).")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@pass_state
def serve(
    state: State,
    host: str,
    port: int,
    no_worker: bool,
    no_auth: bool,
    allow_host: tuple[str, ...],
    allow_origin: tuple[str, ...],
    max_body: int,
    max_upload: int,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
) -> None:
    """Serve the HTTP API (FastAPI) with uvicorn. Every route but /health and the API docs
    needs a bearer token (`ctxstore tokens create`), unless --no-auth on loopback."""
    if no_auth and not _loopback(host):
        fail(f"--no-auth serves loopback only; refusing to listen on {host}", EXIT_USAGE)
    if bool(ssl_certfile) != bool(ssl_keyfile):
        fail("--ssl-certfile and --ssl-keyfile go together", EXIT_USAGE)
    try:
        import uvicorn

        from app.surfaces.http import create_app
    except ImportError as exc:
        fail(f"the HTTP service needs the 'service' extra (pip install 'ctxstore[service]'): {exc}")
    store = state.store(create=True)
    application = create_app(
        store,
        auth=not no_auth,
        allowed_hosts=[host, *allow_host],
        allowed_origins=list(allow_origin),
        max_body=max_body,
        max_upload=max_upload,
        process_workflows=not no_worker,
    )
    scheme = "https" if ssl_certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    err.print(f"serving store {store.backend.url} on {scheme}://{shown}:{port} (docs at /docs)")
    if no_auth:
        err.print("auth: OFF (--no-auth): loopback clients only, every one may do everything")
    else:
        err.print(
            "auth: on: send 'Authorization: Bearer <token>'; make one with "
            f"`ctxstore --root {store.backend.url} tokens create NAME --scope read|write|admin`"
        )
    if host in ("0.0.0.0", "::"):
        err.print("note: requests must name an allowed Host (add the server's name: --allow-host)")
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="info",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )


@cli.command()
@click.option("--context", default="demo", show_default=True)
@click.option("--count", "n", default=5000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@pass_state
def demo(state: State, context: str, n: int, batch_size: int) -> None:
    """Create the store, append analogies in batches, query them, print a summary."""
    from app.surfaces.demo import print_summary, run_demo

    summary = run_demo(
        state.store(create=True), context=context, count=n, batch_size=batch_size, console=err
    )
    print_summary(summary, out)
