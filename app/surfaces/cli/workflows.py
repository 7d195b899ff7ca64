"""Workflow commands: ``workflows list|show|submit|process|cancel|rollback|recover|purge|metrics``
and ``worker``.

Errors are raised as ``StorageError``/``InvalidInput`` and turned into one line on stderr by
``app.surfaces.cli.main``; a workflow that ends ``failed`` makes ``process`` exit 1.
``worker`` and ``workflows process`` take ``--import MODULE`` (repeatable): handler modules
whose ``register(workflows)`` registers custom types (``app.managers.workflows.modules``); a
worker lacking the handler of a pending workflow's type says so once per type and leaves it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from app.core.errors import InvalidInput
from app.core.workflow_types import BatchWorkflow, WorkflowStatus
from app.managers.workflows import WorkflowManager
from app.managers.workflows.modules import load_handler_modules
from app.managers.workflows.retry import MAX_PRIORITY, MAX_RETRIES
from app.surfaces.cli.inputs import jsonl_items, parse_duration, parse_json_option
from app.surfaces.cli.output import err, out, print_json, progress
from app.surfaces.cli.root import State, cli, pass_state, workflows

STATUSES = [s.value for s in WorkflowStatus]


IMPORT_OPTION = click.option(
    "--import",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="Import this handler module at start; its register(workflows) registers workflow "
    "types (repeatable).",
)


def _row(wf: BatchWorkflow) -> list[str]:
    progress = f"{wf.items_processed}/{wf.items_total}"
    created = wf.created_at.strftime("%Y-%m-%d %H:%M:%S")
    status = wf.status.value
    if wf.status == WorkflowStatus.PENDING and wf.not_before is not None:
        status += f" (retry after {wf.not_before.strftime('%H:%M:%S')})"
    return [
        wf.workflow_id,
        wf.workflow_type,
        wf.context,
        status,
        str(wf.priority),
        f"{wf.attempts}",
        progress,
        created,
    ]


def _waiting(manager: WorkflowManager) -> bool:
    """Whether pending workflows this process can run are left (waiting for a retry)."""
    pending = int(manager.metrics()["by_status"][WorkflowStatus.PENDING.value])
    return pending > sum(manager.missing_handlers().values())


def _load(manager: WorkflowManager, modules: tuple[str, ...]) -> None:
    if modules:
        added = load_handler_modules(manager, modules)
        shown = ", ".join(added) or "none new"
        click.echo(f"imported {', '.join(modules)}: workflow types {shown}", err=True)


def _summary(wf: BatchWorkflow) -> str:
    text = (
        f"{wf.workflow_id}: {wf.status.value} ({wf.items_processed}/{wf.items_total} items, "
        f"{wf.chunks_done}/{wf.chunks_total} chunks"
    )
    if wf.attempts > wf.chunks_done:
        text += f", {wf.attempts} attempts"
    if wf.error_count:
        text += f", {wf.error_count} errors"
    text += ")"
    if wf.status == WorkflowStatus.PENDING and wf.not_before is not None:
        text += f" - retry after {wf.not_before.strftime('%Y-%m-%d %H:%M:%S')} UTC"
    if wf.cancel_requested and wf.status == WorkflowStatus.PROCESSING:
        text += " - cancel requested: stops at its next chunk"
    return text


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM (the current chunk is finished first)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        _ = frame
        if not stop.is_set():
            click.echo(f"{signal.Signals(signum).name}: stopping after the current chunk", err=True)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@workflows.command(name="list")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--type", "workflow_type", default=None, help="Workflow type.")
@click.option("--context", default=None)
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def list_(
    state: State,
    status: str | None,
    workflow_type: str | None,
    context: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List workflows, newest first."""
    found = state.store().workflows.list(
        status=status, workflow_type=workflow_type, context=context, limit=limit, offset=offset
    )
    if as_json:
        print_json([w.model_dump(mode="json") for w in found])
        return
    from rich.table import Table

    table = Table(title="workflows")
    for column in ("id", "type", "context", "status", "prio", "attempts", "items", "created (UTC)"):
        right = column in ("prio", "attempts", "items")
        table.add_column(column, justify="right" if right else "left")
    for wf in found:
        table.add_row(*_row(wf))
    out.print(table)


@workflows.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def show(state: State, workflow_id: str, as_json: bool) -> None:
    """Show one workflow in full."""
    wf = state.store().workflows.get(workflow_id)
    data = wf.model_dump(mode="json")
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table(title=f"workflow {wf.workflow_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in data.items():
        if key in ("errors", "batch_ids"):
            shown = "\n".join(value[:20]) + (
                f"\n... {len(value) - 20} more" if len(value) > 20 else ""
            )
            table.add_row(key, shown or "-")
        else:
            table.add_row(key, "-" if value is None else str(value))
    out.print(table)


@workflows.command()
@click.argument("workflow_type")
@click.argument("context")
@click.argument("items", type=click.File("rb"), required=False)
@click.option("--params", default=None, help="Workflow params as a JSON object.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--id", "workflow_id", default=None, help="Workflow id (default: generated).")
@click.option(
    "--priority",
    type=click.IntRange(-MAX_PRIORITY, MAX_PRIORITY),
    default=0,
    show_default=True,
    help="Higher is claimed first (then oldest).",
)
@click.option(
    "--max-retries",
    type=click.IntRange(0, MAX_RETRIES),
    default=0,
    show_default=True,
    help="Retries of a chunk whose handler raises (exponential backoff with jitter).",
)
@IMPORT_OPTION
@pass_state
def submit(
    state: State,
    workflow_type: str,
    context: str,
    items: Any,
    params: str | None,
    chunk_size: int,
    workflow_id: str | None,
    priority: int,
    max_retries: int,
    modules: tuple[str, ...],
) -> None:
    """Stage ITEMS (a JSON-lines file, '-' for stdin) as a pending workflow."""
    parsed = parse_json_option(params, "--params")
    if parsed is not None and not isinstance(parsed, dict):
        raise InvalidInput("--params: must be a JSON object")
    records = None if items is None else jsonl_items(items)
    manager = state.store(create=True).workflows
    _load(manager, modules)
    wf = manager.submit(
        workflow_type,
        context=context,
        items=records,
        params=parsed,
        workflow_id=workflow_id,
        chunk_size=chunk_size,
        priority=priority,
        max_retries=max_retries,
    )
    click.echo(_summary(wf))


@workflows.command()
@click.argument("workflow_id")
@IMPORT_OPTION
@pass_state
def process(state: State, workflow_id: str, modules: tuple[str, ...]) -> None:
    """Process one pending workflow now, retries included (Ctrl-C hands it back after the
    current chunk)."""
    manager = state.store().workflows
    _load(manager, modules)
    total = manager.get(workflow_id).items_total
    with _stop_on_signals() as stop, progress(total, workflow_id) as bar:
        task = bar.add_task(workflow_id, total=total or None)

        def advance(wf: BatchWorkflow) -> None:
            bar.update(task, completed=wf.items_processed, total=wf.items_total or None)

        wf = manager.process(workflow_id, stop=stop, on_progress=advance)
    click.echo(_summary(wf))
    for line in wf.errors[:5]:
        click.echo(f"  {line}", err=True)
    if wf.status == WorkflowStatus.FAILED:
        raise SystemExit(1)


@workflows.command()
@click.argument("workflow_id")
@pass_state
def cancel(state: State, workflow_id: str) -> None:
    """Cancel a pending workflow, or stop a processing one at its next chunk."""
    click.echo(_summary(state.store().workflows.cancel(workflow_id)))


@workflows.command()
@click.argument("workflow_id")
@pass_state
def rollback(state: State, workflow_id: str) -> None:
    """Undo a finished workflow's writes (records changed by others since are listed)."""
    wf = state.store().workflows.rollback(workflow_id)
    click.echo(_summary(wf))
    for line in wf.errors[:20]:
        click.echo(f"  {line}", err=True)


@workflows.command()
@click.option(
    "--stale-after",
    default="60s",
    show_default=True,
    help="Time without a heartbeat after which a processing workflow is stale (60s, 5m).",
)
@pass_state
def recover(state: State, stale_after: str) -> None:
    """Hand stale processing workflows (their worker died) back to pending."""
    seconds = parse_duration(stale_after, "--stale-after").total_seconds()
    back = state.store().workflows.recover(stale_after=seconds)
    for wf in back:
        click.echo(_summary(wf))
    click.echo(f"{len(back)} workflows recovered")


@workflows.command()
@click.option("--older-than", required=True, help="e.g. 30s, 15m, 12h, 7d.")
@pass_state
def purge(state: State, older_than: str) -> None:
    """Delete finished workflows (not their records) older than the given age."""
    n = state.store().workflows.purge(older_than=parse_duration(older_than))
    click.echo(f"{n} workflows purged")


@workflows.command()
@pass_state
def metrics(state: State) -> None:
    """Counts by status and type, items processed, mean duration, items/s (JSON)."""
    print_json(state.store().workflows.metrics())


@cli.command()
@click.option(
    "--poll",
    type=click.FloatRange(min=0.01),
    default=2.0,
    show_default=True,
    help="Seconds between looks for pending workflows.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Process what is pending (waiting out retries), then exit.",
)
@click.option(
    "--recover-stale",
    default=None,
    help="Also hand back workflows whose heartbeat is older than this (60s, 5m).",
)
@IMPORT_OPTION
@pass_state
def worker(
    state: State, poll: float, once: bool, recover_stale: str | None, modules: tuple[str, ...]
) -> None:
    """Process pending workflows until SIGINT/SIGTERM (the current chunk is finished).

    Workflow types come from this process only: the built-in ones and those registered by the
    --import modules. A pending workflow of another type is left for a worker that has it
    (said once per type)."""
    stale_after = (
        None
        if recover_stale is None
        else parse_duration(recover_stale, "--recover-stale").total_seconds()
    )
    manager = state.store().workflows
    _load(manager, modules)
    click.echo(f"worker started on {state.store().backend.url} (poll {poll}s)", err=True)
    processed = 0
    told: set[str] = set()

    def tell_missing() -> None:
        for wtype, n in manager.missing_handlers().items():
            if wtype not in told:
                told.add(wtype)
                err.print(
                    f"worker: {wtype!r} has no handler in this worker ({n} pending): left for "
                    "a worker that has it (start one with --import of a module registering it)",
                    highlight=False,
                    markup=False,
                )

    with _stop_on_signals() as stop, progress(None, "worker") as bar:
        tasks: dict[str, Any] = {}

        def advance(wf: BatchWorkflow) -> None:
            task = tasks.get(wf.workflow_id)
            if task is None:
                task = bar.add_task(wf.workflow_id, total=wf.items_total or None)
                tasks[wf.workflow_id] = task
            bar.update(task, completed=wf.items_processed, total=wf.items_total or None)

        while not stop.is_set():
            if stale_after is not None:
                for wf in manager.recover(stale_after=stale_after):
                    err.print(f"recovered {_summary(wf)}", highlight=False)
            done = manager.process_pending(limit=1, stop=stop, on_progress=advance)
            for wf in done:
                processed += 1
                task = tasks.pop(wf.workflow_id, None)
                if task is not None:
                    bar.remove_task(task)
                err.print(_summary(wf), highlight=False)
            if not done:
                tell_missing()
            if once and not done and not _waiting(manager):
                break
            if not done:
                stop.wait(poll)
    click.echo(f"worker stopped: {processed} workflows processed", err=True)
