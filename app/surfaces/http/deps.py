"""What the routers share: the served store as a FastAPI dependency, and small helpers.

``create_app`` puts a ``Service`` on ``app.state``; a route takes ``store: StoreDep`` (or
``service: ServiceDep`` when it schedules workflows) instead of closing over the store. The
gate (``guard.py``) puts the caller's token in the ASGI scope's state: a route that narrows
what it shows to the token's contexts takes ``token: TokenDep``; one whose audit target is
only known from its body names it with ``audit_target``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, Request

from app.core.access_types import TokenInfo
from app.core.codec import parse_user_json
from app.core.errors import InvalidInput, NotFoundError, StorageError
from app.core.rules import ContextName, check
from app.core.workflow_types import BatchWorkflow
from app.managers.context import Context
from app.managers.store import Store

log = logging.getLogger("ctxstore.http")

STATE_TOKEN = "ctxstore_token"
"""Key of the caller's ``TokenInfo`` (``None`` on public routes) in the ASGI scope's state."""
STATE_REQUEST_ID = "ctxstore_request_id"
STATE_TARGET = "ctxstore_audit_target"
"""What the audit log names as the request's target, when a handler knows it better."""


@dataclass(frozen=True)
class Service:
    """The store an application serves, and whether it processes submitted workflows."""

    store: Store
    process_workflows: bool = True
    max_body: int = 64 << 20
    max_upload: int = 4 << 30

    def schedule(self, tasks: BackgroundTasks, wf: BatchWorkflow) -> None:
        """Process ``wf`` in a background task after the response is sent (if enabled)."""
        if self.process_workflows:
            tasks.add_task(process_workflow, self.store, wf.workflow_id)


def service(request: Request) -> Service:
    """The ``Service`` of the application handling ``request``."""
    served = request.app.state.ctxstore
    assert isinstance(served, Service)
    return served


def served_store(request: Request) -> Store:
    return service(request).store


ServiceDep = Annotated[Service, Depends(service)]
StoreDep = Annotated[Store, Depends(served_store)]


def _state(request: Request) -> dict[str, Any]:
    state: dict[str, Any] = request.scope.setdefault("state", {})
    return state


def caller(request: Request) -> TokenInfo:
    """The token the gate let through (a store-wide admin when the app runs without auth)."""
    token = _state(request).get(STATE_TOKEN)
    if not isinstance(token, TokenInfo):  # a public route asked for it: nothing is visible
        return TokenInfo(name="", scope="read", contexts=(), created_at="")
    return token


TokenDep = Annotated[TokenInfo, Depends(caller)]


def audit_target(request: Request, target: str) -> None:
    """Name what this request acted on in the audit log (e.g. a context created from a body)."""
    _state(request)[STATE_TARGET] = target


def visible(token: TokenInfo, context: str) -> str:
    """``context`` if the token sees it, else ``NotFoundError`` (as if it did not exist)."""
    if not token.sees(context):
        raise NotFoundError(f"context {context!r} not found")
    return context


def open_context(store: Store, name: str) -> Context:
    """An existing context (``NotFoundError`` if there is none), its name checked first."""
    return store.context(check(ContextName, name, "context"), create=False)


def parse_where(raw: str | None) -> dict[str, Any] | None:
    """A filter given as JSON text in a query parameter."""
    if raw is None or raw == "":
        return None
    value = parse_user_json(raw, "where")
    if not isinstance(value, dict):
        raise InvalidInput("where: must be a JSON object")
    return value


def order_list(values: list[str] | None) -> list[str] | None:
    return [v for v in values if v] or None if values else None


def process_workflow(store: Store, workflow_id: str) -> None:
    """Background task: process a submitted workflow; failures are recorded in it."""
    try:
        store.workflows.process(workflow_id)
    except StorageError as exc:  # e.g. another worker took it, or it was cancelled
        log.info("workflow %s not processed here: %s", workflow_id, exc)


__all__ = [
    "STATE_REQUEST_ID",
    "STATE_TARGET",
    "STATE_TOKEN",
    "Service",
    "ServiceDep",
    "StoreDep",
    "TokenDep",
    "audit_target",
    "caller",
    "open_context",
    "order_list",
    "parse_where",
    "process_workflow",
    "service",
    "visible",
]
