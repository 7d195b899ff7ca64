"""``/contexts/{context}/collections/{collection}/...``: append, get, query, count, delete by
criteria (as a workflow) and compact."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Query, Response

from app.core.errors import InvalidInput, NotFoundError
from app.core.rules import NOT_RESERVED, CollectionName, RecordId, check
from app.core.schemas import BatchReceipt, CompactionReport
from app.core.workflow_types import BatchWorkflow
from app.surfaces.http.deps import ServiceDep, StoreDep, open_context, order_list, parse_where
from app.surfaces.http.models import (
    AppendRequest,
    Count,
    CountRequest,
    DeleteRequest,
    Json,
    QueryRequest,
    Records,
)

router = APIRouter(prefix="/contexts/{context}/collections/{collection}", tags=["contexts"])


@router.post("/records", response_model=BatchReceipt, status_code=201)
def append(
    context: str,
    collection: str,
    body: AppendRequest,
    response: Response,
    store: StoreDep,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> BatchReceipt:
    check(NOT_RESERVED, idempotency_key, "Idempotency-Key", optional=True)
    batch_id = body.batch_id or idempotency_key or None
    receipt = open_context(store, context).append(collection, body.records, batch_id=batch_id)
    if receipt.duplicate:
        response.status_code = 200
    return receipt


@router.get("/records", response_model=Records)
def query_get(
    context: str,
    collection: str,
    store: StoreDep,
    where: Annotated[str | None, Query(description="Filter as JSON")] = None,
    order_by: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int | None, Query(ge=0, le=100_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Records:
    found = open_context(store, context).query(
        collection, parse_where(where), order_by=order_list(order_by), limit=limit, offset=offset
    )
    return Records(records=found, count=len(found))


@router.post("/query", response_model=Records)
def query_post(context: str, collection: str, body: QueryRequest, store: StoreDep) -> Records:
    limit = 1000 if body.limit is None else body.limit
    found = open_context(store, context).query(
        collection, body.where, order_by=body.order_by, limit=limit, offset=body.offset
    )
    return Records(records=found, count=len(found))


@router.get("/records/{record_id}", response_model=Json)
def get_record(context: str, collection: str, record_id: str, store: StoreDep) -> Json:
    check(RecordId, record_id, "record_id")
    return open_context(store, context).get(collection, record_id)


@router.get("/count", response_model=Count)
def count_get(
    context: str,
    collection: str,
    store: StoreDep,
    where: Annotated[str | None, Query(description="Filter as JSON")] = None,
) -> Count:
    return Count(count=open_context(store, context).count(collection, parse_where(where)))


@router.post("/count", response_model=Count)
def count_post(context: str, collection: str, body: CountRequest, store: StoreDep) -> Count:
    return Count(count=open_context(store, context).count(collection, body.where))


@router.delete("/records", response_model=BatchWorkflow, status_code=202)
def delete_records(
    context: str,
    collection: str,
    body: DeleteRequest,
    tasks: BackgroundTasks,
    service: ServiceDep,
) -> BatchWorkflow:
    open_context(service.store, context)
    check(CollectionName, collection, "collection")
    if not body.where:
        raise InvalidInput("where: must not be empty (deleting everything needs a filter)")
    wf = service.store.workflows.submit(
        "delete",
        context=context,
        params={"collection": collection, "where": body.where},
        chunk_size=body.chunk_size,
    )
    service.schedule(tasks, wf)
    return wf


@router.post("/compact", response_model=CompactionReport)
def compact(context: str, collection: str, store: StoreDep) -> CompactionReport:
    ctx = open_context(store, context)
    check(CollectionName, collection, "collection")
    if collection not in ctx.collections():
        raise NotFoundError(f"collection {collection!r} not found in {context!r}")
    return ctx.compact(collection)
