"""``/workflows``: submit, list, get, cancel and roll back batch workflows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query

from app.core.workflow_types import BatchWorkflow, WorkflowStatus
from app.surfaces.http.deps import ServiceDep, StoreDep, open_context
from app.surfaces.http.models import SubmitRequest

router = APIRouter(prefix="/workflows", tags=["workflows"])


@router.post("", response_model=BatchWorkflow, status_code=202)
def submit(body: SubmitRequest, tasks: BackgroundTasks, service: ServiceDep) -> BatchWorkflow:
    open_context(service.store, body.context)
    flow = service.store.workflows.submit(
        body.workflow_type,
        context=body.context,
        items=body.items,
        params=body.params,
        workflow_id=body.workflow_id,
        chunk_size=body.chunk_size,
    )
    service.schedule(tasks, flow)
    return flow


@router.get("", response_model=list[BatchWorkflow])
def list_workflows(
    store: StoreDep,
    status: Annotated[WorkflowStatus | None, Query()] = None,
    workflow_type: Annotated[str | None, Query(max_length=64)] = None,
    context: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=0, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[BatchWorkflow]:
    return store.workflows.list(
        status=status, workflow_type=workflow_type, context=context, limit=limit, offset=offset
    )


@router.get("/{workflow_id}", response_model=BatchWorkflow)
def get_workflow(workflow_id: str, store: StoreDep) -> BatchWorkflow:
    return store.workflows.get(workflow_id)


@router.post("/{workflow_id}/cancel", response_model=BatchWorkflow)
def cancel(workflow_id: str, store: StoreDep) -> BatchWorkflow:
    return store.workflows.cancel(workflow_id)


@router.post("/{workflow_id}/rollback", response_model=BatchWorkflow)
def rollback(workflow_id: str, store: StoreDep) -> BatchWorkflow:
    return store.workflows.rollback(workflow_id)
