"""Record commands: ``contexts``, ``append``, ``query``, ``count``, ``compact``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

import click
import orjson

from app.core.codec import MAX_BATCH_RECORDS
from app.core.rules import NOT_RESERVED, check
from app.surfaces.cli.inputs import batches, parse_where
from app.surfaces.cli.output import fail, out, print_json, progress
from app.surfaces.cli.root import State, cli, pass_state


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def contexts(state: State, as_json: bool) -> None:
    """List the contexts of the store with their record counts."""
    store = state.store()
    rows: list[dict[str, Any]] = []
    for name in store.contexts():
        ctx = store.context(name, create=False)
        colls = {c: ctx.count(c) for c in ctx.collections()}
        rows.append({"name": name, "collections": colls, "records": sum(colls.values())})
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"contexts in {store.backend.url}")
    table.add_column("context")
    table.add_column("collections")
    table.add_column("records", justify="right")
    for row in rows:
        text = ", ".join(f"{c} ({n})" for c, n in row["collections"].items())
        table.add_row(str(row["name"]), text or "-", str(row["records"]))
    out.print(table)


@cli.command()
@click.argument("context")
@click.argument("collection")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option(
    "--batch-size",
    default=10_000,
    show_default=True,
    type=click.IntRange(1, MAX_BATCH_RECORDS),
    help="Records per all-or-nothing batch (big batches are spooled to disk, not held).",
)
@click.option("--batch-prefix", default=None, help="Idempotency: batch ids PREFIX-0, PREFIX-1...")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def append(
    state: State,
    context: str,
    collection: str,
    file: str,
    batch_size: int,
    batch_prefix: str | None,
    as_json: bool,
) -> None:
    """Append the records of FILE (JSON lines, '-' for stdin) in batches."""
    check(NOT_RESERVED, batch_prefix, "--batch-prefix", optional=True)
    store = state.store(create=True)
    ctx = store.context(context)
    source = "<stdin>" if file == "-" else file
    total_bytes = None if file == "-" else Path(file).stat().st_size
    records = n_batches = duplicates = 0
    fh: IO[bytes]
    fh = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    try:
        with progress(total_bytes, f"appending to {context}/{collection}") as bar:
            task = bar.add_task("append", total=total_bytes)

            def on_line(_lineno: int) -> None:
                if total_bytes is not None and not fh.closed:
                    bar.update(task, completed=fh.tell())

            for n, batch in enumerate(batches(fh, source, batch_size, on_line)):
                bid = f"{batch_prefix}-{n}" if batch_prefix else None
                receipt = ctx.append(collection, batch, batch_id=bid)
                n_batches += 1
                if receipt.duplicate:
                    duplicates += receipt.count
                else:
                    records += receipt.count
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()
    result = {
        "context": context,
        "collection": collection,
        "appended": records,
        "batches": n_batches,
        "duplicates": duplicates,
    }
    if as_json:
        print_json(result)
    else:
        extra = f" ({duplicates} in batches already committed)" if duplicates else ""
        click.echo(
            f"appended {records} records in {n_batches} batches to {context}/{collection}{extra}"
        )


@cli.command()
@click.argument("context")
@click.argument("collection")
@click.option(
    "--where", default=None, help='Filter as JSON, e.g. \'{"quality_score": {"$gte": 0.8}}\'.'
)
@click.option("--order-by", "order_by", multiple=True, help="Field, '-field' for descending.")
@click.option("--limit", default=None, type=click.IntRange(min=0))
@click.option("--offset", default=0, type=click.IntRange(min=0))
@pass_state
def query(
    state: State,
    context: str,
    collection: str,
    where: str | None,
    order_by: tuple[str, ...],
    limit: int | None,
    offset: int,
) -> None:
    """Print matching records as JSON lines."""
    filt = parse_where(where)
    ctx = state.store().context(context, create=False)
    order: list[str] | None = list(order_by) or None
    stdout = sys.stdout.buffer
    if limit is None and offset == 0:
        records: Any = ctx.iter(collection, filt, order_by=order)
    else:
        records = ctx.query(collection, filt, order_by=order, limit=limit, offset=offset)
    for rec in records:
        stdout.write(orjson.dumps(rec) + b"\n")
    stdout.flush()


@cli.command()
@click.argument("context")
@click.argument("collection")
@click.option("--where", default=None, help="Filter as JSON.")
@pass_state
def count(state: State, context: str, collection: str, where: str | None) -> None:
    """Print how many records match."""
    filt = parse_where(where)
    click.echo(str(state.store().context(context, create=False).count(collection, filt)))


@cli.command()
@click.argument("context")
@click.argument("collection")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def compact(state: State, context: str, collection: str, as_json: bool) -> None:
    """Rewrite a collection's log without superseded versions and tombstones."""
    ctx = state.store().context(context, create=False)
    if collection not in ctx.collections():
        fail(f"collection {collection!r} not found in context {context!r}")
    with progress(None, f"compacting {context}/{collection}") as bar:
        bar.add_task("compact", total=None)
        report = ctx.compact(collection)
    if as_json:
        print_json(report.model_dump())
    else:
        click.echo(
            f"{context}/{collection}: {report.records_before} -> {report.records_after} entries, "
            f"{report.bytes_before} -> {report.bytes_after} bytes"
        )
