"""What the routers share: the served store as a FastAPI dependency, and small helpers.

``create_app`` puts a ``Service`` on ``app.state``; a route takes ``store: StoreDep`` (or
``service: ServiceDep`` when it schedules workflows) instead of closing over the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, Request

from app.core.codec import parse_user_json
from app.core.errors import InvalidInput, StorageError
from app.core.rules import ContextName, check
from app.core.workflow_types import BatchWorkflow
from app.managers.context import Context
from app.managers.store import Store

log = logging.getLogger("ctxstore.http")


@dataclass(frozen=True)
class Service:
    """The store an application serves, and whether it processes submitted workflows."""

    store: Store
    process_workflows: bool = True

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
    "Service",
    "ServiceDep",
    "StoreDep",
    "open_context",
    "order_list",
    "parse_where",
    "process_workflow",
    "service",
]
