"""What crosses the boundary of service access control: token descriptions, scopes and audit
entries (docs/api.md, "Service security"). Rules only; no storage, no HTTP."""

from __future__ import annotations

from typing import Literal

from app.core.schemas import Frozen

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
"""Each scope includes the ones before it."""


def includes(held: Scope, needed: Scope) -> bool:
    """True when a token of scope ``held`` may do what needs ``needed``."""
    return SCOPES.index(held) >= SCOPES.index(needed)


class TokenInfo(Frozen):
    """A token as ``store.tokens.list()`` describes it: never the token or its hash."""

    name: str
    scope: Scope
    contexts: tuple[str, ...] | None = None
    """``None``: every context; else only these (others are not found, also in lists)."""
    created_at: str

    def allows(self, needed: Scope) -> bool:
        return includes(self.scope, needed)

    def sees(self, context: str) -> bool:
        return self.contexts is None or context in self.contexts


class AuditEvent(Frozen):
    """What the service records about one request (the audit log adds time and chain)."""

    token: str
    """The token's name; ``""`` when the request carried no valid token."""
    action: str
    """e.g. ``append``, ``import``, ``export``: the route's name."""
    target: str
    """What it acted on, e.g. ``ctx/collection`` or a workflow id; ``""`` for the store."""
    outcome: int
    """The HTTP status answered."""
    request_id: str


class AuditEntry(Frozen):
    """One line of the audit log: the event, its position, time and chained signature."""

    seq: int
    at: str
    token: str
    action: str
    target: str
    outcome: int
    request_id: str
    mac: str


class AuditPage(Frozen):
    entries: list[AuditEntry]
    total: int
    offset: int


__all__ = [
    "SCOPES",
    "AuditEntry",
    "AuditEvent",
    "AuditPage",
    "Scope",
    "TokenInfo",
    "includes",
]
