"""``main``: the entry point of the ``ctxstore`` script, turning every error into one line.

A ``StorageError`` exits with the code of its row of the error table
(``app.surfaces.errors``): 2 for bad input, 1 when the operation failed. Click's usage
errors exit 2, an ``OSError`` 1, Ctrl-C 130; a traceback only ever means a bug.
"""

from __future__ import annotations

import sys

import click

from app.core.errors import StorageError
from app.surfaces.cli.output import fail
from app.surfaces.cli.root import cli
from app.surfaces.errors import EXIT_FAILED, EXIT_USAGE, kind_of

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> None:
    """Run the CLI on ``argv`` (default: the command line) and exit."""
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
    except StorageError as exc:
        fail(str(exc), kind_of(exc).exit_code)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or exc}:{where}", EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["main"]
