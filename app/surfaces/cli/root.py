"""The groups every command hangs on: ``cli`` (``ctxstore``) and ``workflows``.

Each command module defines its commands with ``@cli.command()`` or ``@workflows.command()``;
``app.surfaces.cli`` imports them all, which registers them. A command gets the ``State`` (the
``--root`` and a lazily opened store) with ``@pass_state``.
"""

from __future__ import annotations

import click

from app.managers.store import Store, open_store


class State:
    """What the top-level group hands to its commands: the root and a lazily opened store."""

    def __init__(self, root: str | None, files: str | None = None) -> None:
        self.root = root
        self.files = files
        self._store: Store | None = None

    def store(self, *, create: bool = False) -> Store:
        """The store (opened once). Only commands that write create a missing store
        (``create=True``); every read command fails on a missing one instead."""
        if self._store is None:
            self._store = open_store(self.root, create=create, files=self.files)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_state = click.make_pass_decorator(State)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Store directory or postgresql:// URL (default: $CTXSTORE_ROOT or ./storage).",
)
@click.option(
    "--files",
    type=str,
    default=None,
    help="Where a postgresql:// store keeps its files: s3://bucket/prefix or a directory "
    "(default: $CTXSTORE_FILES).",
)
@click.version_option(package_name="ctxstore", message="ctxstore %(version)s")
@click.pass_context
def cli(click_ctx: click.Context, root: str | None, files: str | None) -> None:
    """ctxstore: records, embeddings, models and batch workflows in one store."""
    state = State(root, files)
    click_ctx.obj = state
    click_ctx.call_on_close(state.close)


@cli.group(name="workflows")
def workflows() -> None:
    """Batch workflows: list, show, submit, process, cancel, rollback, recover, purge."""


__all__ = ["State", "cli", "pass_state", "workflows"]
