"""What the commands print: rich consoles, JSON, progress bars, and the one-line error."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
import orjson
from rich.console import Console

from app.surfaces.errors import EXIT_FAILED

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    click.echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)


def one_line(message: str) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= 500 else text[:497] + "..."


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


__all__ = ["err", "fail", "one_line", "out", "print_json", "progress"]
