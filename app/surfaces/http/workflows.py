"""``/workflows``: submit, list, get, cancel and roll back batch workflows.

A token limited to some contexts submits and lists only workflows of those (the gate answers
404 for a ``{workflow_id}`` of another context)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request

from app.core.access_types import TokenInfo
from app.core.workflow_types import BatchWorkflow, WorkflowStatus
from app.managers.store import Store
from app.surfaces.http.deps import (
    ServiceDep,
    StoreDep,
    TokenDep,
    audit_target,
    open_context,
    visible,
)
from app.surfaces.http.models import SubmitRequest

router = APIRouter(prefix="/workflows", tags=["workflows"])


@router.post("", response_model=BatchWorkflow, status_code=202)
def submit(
    body: SubmitRequest,
    tasks: BackgroundTasks,
    request: Request,
    service: ServiceDep,
    token: TokenDep,
) -> BatchWorkflow:
    audit_target(request, body.context)
    open_context(service.store, visible(token, body.context))
    flow = service.store.workflows.submit(
        body.workflow_type,
        context=body.context,
        items=body.items,
        params=body.params,
        workflow_id=body.workflow_id,
        chunk_size=body.chunk_size,
        priority=body.priority,
        max_retries=body.max_retries,
    )
    audit_target(request, flow.workflow_id)
    service.schedule(tasks, flow)
    return flow


@router.get("", response_model=list[BatchWorkflow])
def list_workflows(
    store: StoreDep,
    token: TokenDep,
    status: Annotated[WorkflowStatus | None, Query()] = None,
    workflow_type: Annotated[str | None, Query(max_length=64)] = None,
    context: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=0, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[BatchWorkflow]:
    if token.contexts is not None and len(token.contexts) == 1 and context is None:
        context = token.contexts[0]  # one context: the store filters
    if token.contexts is None or context is not None:
        if context is not None and not token.sees(context):
            return []
        return store.workflows.list(
            status=status, workflow_type=workflow_type, context=context, limit=limit, offset=offset
        )
    return _visible_page(store, token, status, workflow_type, limit, offset)


@router.get("/{workflow_id}", response_model=BatchWorkflow)
def get_workflow(workflow_id: str, store: StoreDep) -> BatchWorkflow:
    return store.workflows.get(workflow_id)


@router.post("/{workflow_id}/cancel", response_model=BatchWorkflow)
def cancel(workflow_id: str, store: StoreDep) -> BatchWorkflow:
    return store.workflows.cancel(workflow_id)


@router.post("/{workflow_id}/rollback", response_model=BatchWorkflow)
def rollback(workflow_id: str, store: StoreDep) -> BatchWorkflow:
    return store.workflows.rollback(workflow_id)


LIST_PAGE = 500


def _visible_page(
    store: Store,
    token: TokenInfo,
    status: WorkflowStatus | None,
    workflow_type: str | None,
    limit: int,
    offset: int,
) -> list[BatchWorkflow]:
    """``limit`` workflows after ``offset`` among those of the token's contexts, newest first
    (the store's list, read page by page and filtered)."""
    found: list[BatchWorkflow] = []
    skipped = 0
    position = 0
    while len(found) < limit:
        page = store.workflows.list(
            status=status, workflow_type=workflow_type, limit=LIST_PAGE, offset=position
        )
        for wf in page:
            if not token.sees(wf.context):
                continue
            if skipped < offset:
                skipped += 1
            elif len(found) < limit:
                found.append(wf)
        if len(page) < LIST_PAGE:
            break
        position += LIST_PAGE
    return found
