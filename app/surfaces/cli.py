"""The ``ctxstore`` command line (``python -m app``): click commands over the public API.

Output conventions: ``query`` prints JSON lines; tables (``contexts``, ``stats``) are rich
tables on a terminal and JSON with ``--json``. Long operations show a progress bar on stderr
when it is a terminal. User mistakes print one line ``error: ...`` on stderr and exit with 2
(usage: bad option, bad argument, bad JSON, invalid name) or 1 (the operation failed: not
found, conflict, damage, I/O); a traceback only ever means a bug.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, NoReturn

import click
import orjson
from rich.console import Console

from app.core.codec import parse_user_json
from app.core.errors import InvalidInput, StorageError
from app.managers.context import check_user_batch_id
from app.managers.store import Store, open_store, resolve_root

EXIT_FAILED = 1
EXIT_USAGE = 2

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class State:
    """What the top-level group hands to its commands: the root and a lazily opened store."""

    def __init__(self, root: str | None) -> None:
        self.root = root
        self._store: Store | None = None

    def store(self, *, create: bool = True) -> Store:
        if self._store is None:
            self._store = open_store(self.root, create=create)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_state = click.make_pass_decorator(State)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    click.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(code)


def _one_line(message: str) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= 500 else text[:497] + "..."


def parse_json_option(value: str | None, option: str) -> Any:
    """Parse a JSON option value; a syntax error is a usage mistake naming the option."""
    if value is None:
        return None
    return parse_user_json(value, option)


def parse_where(value: str | None) -> Mapping[str, Any] | None:
    where = parse_json_option(value, "--where")
    if where is not None and not isinstance(where, dict):
        raise InvalidInput("--where: must be a JSON object")
    return where


def print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def progress(total: int | None, label: str) -> Any:
    """A rich progress bar on stderr, shown only when stderr is a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    _ = total
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    )


# -- the group ------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Store directory (default: $CTXSTORE_ROOT or ./storage).",
)
@click.version_option(package_name="ctxstore", message="ctxstore %(version)s")
@click.pass_context
def cli(click_ctx: click.Context, root: str | None) -> None:
    """ctxstore: records, embeddings, models and batch workflows in one store."""
    state = State(root)
    click_ctx.obj = state
    click_ctx.call_on_close(state.close)


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

    table = Table(title=f"contexts in {store.root}")
    table.add_column("context")
    table.add_column("collections")
    table.add_column("records", justify="right")
    for row in rows:
        text = ", ".join(f"{c} ({n})" for c, n in row["collections"].items())
        table.add_row(str(row["name"]), text or "-", str(row["records"]))
    out.print(table)


def _read_jsonl(fh: IO[bytes], source: str) -> Iterator[tuple[int, Any]]:
    for lineno, raw in enumerate(fh, start=1):
        line = raw.strip()
        if not line:
            continue
        yield lineno, parse_user_json(line, f"{source}:{lineno}")


def _batches(
    fh: IO[bytes], source: str, size: int, on_line: Callable[[int], None]
) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for lineno, obj in _read_jsonl(fh, source):
        if not isinstance(obj, dict):
            raise InvalidInput(f"{source}:{lineno}: a record must be a JSON object")
        batch.append(obj)
        on_line(lineno)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@cli.command()
@click.argument("context")
@click.argument("collection")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option("--batch-size", default=10_000, show_default=True, type=click.IntRange(1, 1_000_000))
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
    check_user_batch_id(batch_prefix, "--batch-prefix")
    store = state.store()
    ctx = store.context(context)
    source = "<stdin>" if file == "-" else file
    total_bytes = None if file == "-" else Path(file).stat().st_size
    records = batches = duplicates = 0
    fh: IO[bytes]
    fh = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    try:
        with progress(total_bytes, f"appending to {context}/{collection}") as bar:
            task = bar.add_task("append", total=total_bytes)

            def on_line(_lineno: int) -> None:
                if total_bytes is not None and not fh.closed:
                    bar.update(task, completed=fh.tell())

            for n, batch in enumerate(_batches(fh, source, batch_size, on_line)):
                bid = f"{batch_prefix}-{n}" if batch_prefix else None
                receipt = ctx.append(collection, batch, batch_id=bid)
                batches += 1
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
        "batches": batches,
        "duplicates": duplicates,
    }
    if as_json:
        print_json(result)
    else:
        extra = f" ({duplicates} in batches already committed)" if duplicates else ""
        click.echo(
            f"appended {records} records in {batches} batches to {context}/{collection}{extra}"
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


from app.surfaces import cli_admin as _cli_admin  # noqa: E402  (commands need ``cli``)

_cli_admin.register(cli)


def _register_workflows() -> None:
    from app.surfaces.cli_workflows import register

    register(cli)


_register_workflows()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ctxstore`` script: runs the CLI, turns errors into one line."""
    try:
        code = cli.main(args=argv, prog_name="ctxstore", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(EXIT_FAILED)
    except click.UsageError as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        fail(f"{exc.format_message()}{hint}", EXIT_USAGE)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code or EXIT_FAILED)
    except InvalidInput as exc:
        fail(str(exc), EXIT_USAGE)
    except StorageError as exc:
        fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or exc}:{where}", EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["EXIT_FAILED", "EXIT_USAGE", "State", "cli", "fail", "main", "resolve_root"]
