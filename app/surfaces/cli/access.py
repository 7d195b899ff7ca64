"""Service access commands: ``tokens create|list|revoke`` and ``audit`` (docs/api.md,
"Service security").

``tokens create`` prints the token alone on stdout (shown once; a hint goes to stderr, so
``TOKEN=$(ctxstore tokens create ...)`` captures just the token). ``audit --verify`` exits 1
listing the problems when the chain is broken.
"""

from __future__ import annotations

import re

import click

from app.core.access_types import SCOPES, AuditEntry, AuditPage
from app.core.errors import InvalidInput
from app.surfaces.cli.output import out, print_json
from app.surfaces.cli.root import State, cli, pass_state
from app.surfaces.errors import EXIT_FAILED

HEAD = re.compile(r"(\d+):([0-9a-f]{64})")


@cli.group(name="tokens")
def tokens() -> None:
    """Bearer tokens of the HTTP service: create, list, revoke."""


@tokens.command(name="create")
@click.argument("name")
@click.option("--scope", type=click.Choice(SCOPES), required=True, help="What the token may do.")
@click.option(
    "--context",
    "contexts",
    multiple=True,
    help="Limit the token to this context (repeat for several; default: every context).",
)
@pass_state
def create(state: State, name: str, scope: str, contexts: tuple[str, ...]) -> None:
    """Create a token NAME and print it (shown this once)."""
    token = state.store(create=True).tokens.create(
        name, scope=scope, contexts=list(contexts) or None
    )
    click.echo(token)
    where = ", ".join(contexts) if contexts else "every context"
    click.echo(
        f"token {name!r} ({scope}, {where}): shown only now, keep it secret; send it as "
        "'Authorization: Bearer <token>'; revoke with 'ctxstore tokens revoke "
        f"{name}'",
        err=True,
    )


@tokens.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def list_(state: State, as_json: bool) -> None:
    """List the tokens (never the tokens themselves)."""
    found = state.store(create=False).tokens.list()
    if as_json:
        print_json([t.model_dump(mode="json") for t in found])
        return
    from rich.table import Table

    table = Table(title="tokens")
    for column in ("name", "scope", "contexts", "created (UTC)"):
        table.add_column(column)
    for t in found:
        contexts = "(all)" if t.contexts is None else ", ".join(t.contexts)
        table.add_row(t.name, t.scope, contexts, t.created_at)
    out.print(table)


@tokens.command(name="revoke")
@click.argument("name")
@pass_state
def revoke(state: State, name: str) -> None:
    """Revoke the token NAME (it stops working at once)."""
    state.store(create=False).tokens.revoke(name)
    click.echo(f"revoked token {name!r}")


def _head(text: str) -> AuditEntry:
    """A head remembered as ``SEQ:MAC`` (what ``verify`` compares: the entry at ``SEQ`` must
    still carry ``MAC``, which signs every field of it)."""
    found = HEAD.fullmatch(text.strip())
    if found is None or int(found.group(1)) < 1:
        raise InvalidInput(
            "head: must be SEQ:MAC with SEQ >= 1 (as 'ctxstore audit --verify' prints the head)",
            argument="head",
        )
    return AuditEntry(
        seq=int(found.group(1)),
        at="",
        token="",
        action="",
        target="",
        outcome=0,
        request_id="",
        mac=found.group(2),
    )


@cli.command(name="audit")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=0, max=10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--verify", "check", is_flag=True, help="Check the chain; exit 1 if broken.")
@click.option(
    "--head",
    default=None,
    metavar="SEQ:MAC",
    help="With --verify: a head remembered earlier; the log must still end at or after it.",
)
@pass_state
def audit(
    state: State, offset: int, limit: int, as_json: bool, check: bool, head: str | None
) -> None:
    """Show the audit log (oldest first), or check its chain with --verify."""
    log = state.store(create=False).audit
    if not check:
        if head is not None:
            raise InvalidInput("head: only with --verify", argument="head")
        page = log.page(offset=offset, limit=limit)
        if as_json:
            print_json(page.model_dump(mode="json"))
            return
        _table(page)
        return
    problems = log.verify(head=None if head is None else _head(head))
    last = log.head()
    if as_json:
        print_json(
            {
                "ok": not problems,
                "problems": problems,
                "head": None if last is None else {"seq": last.seq, "mac": last.mac},
            }
        )
    elif problems:
        click.echo(f"BROKEN: {len(problems)} problem(s)")
        for problem in problems:
            click.echo(f"  - {problem}")
    elif last is None:
        click.echo("ok: the audit log is empty")
    else:
        click.echo(f"ok: {last.seq} entries chained; head {last.seq}:{last.mac}")
    if problems:
        raise SystemExit(EXIT_FAILED)


def _table(page: AuditPage) -> None:
    from rich.table import Table

    shown = f"{page.offset + 1}-{page.offset + len(page.entries)}" if page.entries else "none"
    table = Table(title=f"audit log: entries {shown} of {page.total}")
    for column in ("seq", "at (UTC)", "token", "action", "target", "outcome", "request id"):
        table.add_column(column, justify="right" if column in ("seq", "outcome") else "left")
    for e in page.entries:
        table.add_row(str(e.seq), e.at, e.token, e.action, e.target, str(e.outcome), e.request_id)
    out.print(table)


__all__ = ["audit", "tokens"]
