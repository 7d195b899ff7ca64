"""``/contexts/{context}/collections/{collection}/...``: append, get, query, count, delete by
criteria (as a workflow) and compact.

An append takes a JSON body (``{"records": [...]}``) or newline-delimited JSON streamed into
``ctx.append`` as it arrives (``application/x-ndjson``), both bounded by the body limit of
``app.surfaces.http.limits``."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, BackgroundTasks, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

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
from app.surfaces.http.streaming import (
    NDJSON_TYPES,
    as_line_error,
    blocking_chunks,
    media_type,
    ndjson_records,
)

router = APIRouter(prefix="/contexts/{context}/collections/{collection}", tags=["contexts"])


JSON_TYPES = frozenset({"", "application/json"})
"""Media types of a JSON append body (none given counts as JSON, as FastAPI does)."""

APPEND_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": AppendRequest.model_json_schema()},
        "application/x-ndjson": {
            "schema": {
                "type": "string",
                "description": (
                    "One record (a JSON object) per line, streamed: record i is line i + 1; "
                    "the batch id comes from ?batch_id= or Idempotency-Key"
                ),
            }
        },
    },
}
"""Both bodies of an append, for the OpenAPI document (the handler reads the body itself)."""


@router.post(
    "/records",
    response_model=BatchReceipt,
    status_code=201,
    openapi_extra={"requestBody": APPEND_BODY},
    responses={
        200: {"description": "A duplicate of a committed batch: its receipt"},
        413: {"description": "Body larger than the server's --max-body (nothing committed)"},
        415: {"description": "Body neither JSON nor ndjson"},
    },
)
async def append(
    context: str,
    collection: str,
    request: Request,
    response: Response,
    store: StoreDep,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
    batch_id: Annotated[str | None, Query(max_length=256)] = None,
) -> BatchReceipt | Response:
    """Append one batch, all or nothing. ``application/json``: ``{"records": [...],
    "batch_id": ...}``; ``application/x-ndjson``: one record a line, parsed while the body
    streams in (a bad line is 422 naming it; nothing is committed on any error)."""
    check(NOT_RESERVED, idempotency_key, "Idempotency-Key", optional=True)
    check(NOT_RESERVED, batch_id, "batch_id", optional=True)
    media = media_type(request.headers.get("content-type"))
    if media in NDJSON_TYPES:
        bid = _one_batch_id(batch_id, idempotency_key)

        def run() -> BatchReceipt:
            ctx = open_context(store, context)
            chunks = blocking_chunks(request.stream())
            try:
                return ctx.append(collection, ndjson_records(chunks), batch_id=bid)
            except InvalidInput as exc:  # a bad record: named by its line
                raise as_line_error(exc) from None

    elif media in JSON_TYPES or media.endswith("+json"):
        body = await _json_body(request)
        bid = _one_batch_id(body.batch_id, batch_id, idempotency_key)

        def run() -> BatchReceipt:
            return open_context(store, context).append(collection, body.records, batch_id=bid)

    else:
        raise HTTPException(415, f"content type {media!r}: send JSON or ndjson")
    try:
        receipt = await anyio.to_thread.run_sync(run)
    except ClientDisconnect:  # nothing committed, nobody to answer
        return Response(status_code=400)
    if receipt.duplicate:
        response.status_code = 200
    return receipt


async def _json_body(request: Request) -> AppendRequest:
    """The JSON body of an append (bounded by the body limit), errors located like FastAPI's."""
    raw = await request.body()
    try:
        return AppendRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def _one_batch_id(*given: str | None) -> str | None:
    """The batch id from the body, ``?batch_id=`` or ``Idempotency-Key``; given twice, the
    same."""
    found = {g for g in given if g}
    if len(found) > 1:
        raise InvalidInput("batch_id: the body, ?batch_id= and Idempotency-Key differ")
    return found.pop() if found else None


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
