"""The HTTP service (SPEC section 13): ``create_app(store) -> FastAPI``.

FastAPI is imported here only (and by ``app.service``), never by ``import app``. Handlers are
plain ``def`` functions (FastAPI runs them on its thread pool) over the public API of the store.
Errors: bad input (pydantic validation and ``InvalidInput``) answers 422 with a JSON body whose
``detail[].loc`` names the field; unknown context / record / workflow / embedding set 404;
conflicts 409; a refused pickle 403; a damaged archive upload 422; only faults of the server
itself (damaged stored data, I/O errors) answer 5xx.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Body,
    FastAPI,
    File,
    Header,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from app.core.codec import parse_user_json
from app.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    SchemaVersionError,
    StorageError,
    UntrustedArtifactError,
)
from app.core.names import check_name
from app.core.schemas import BatchReceipt, CompactionReport
from app.core.transfer_types import Manifest
from app.core.workflow_types import BatchWorkflow, WorkflowStatus
from app.managers.context import check_user_batch_id
from app.managers.store import FORMAT_VERSION, Store

log = logging.getLogger("ctxstore.http")
UPLOAD_CHUNK = 1 << 20
_ARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\[\]-]{0,63}): ")

Json = dict[str, Any]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    format_version: int
    contexts: int


class ContextList(BaseModel):
    contexts: list[str]


class CreateContext(_In):
    name: str = Field(description="Context name: 1-64 of letters, digits, '_', '.', '-'")


class ContextInfo(BaseModel):
    name: str
    collections: dict[str, int] = Field(description="Record count per collection")


class AppendRequest(_In):
    records: list[Json] = Field(description="The batch: JSON objects, all or nothing")
    batch_id: str | None = Field(default=None, min_length=1, max_length=256)


class QueryRequest(_In):
    where: Json | None = None
    order_by: str | list[str] | None = None
    limit: int | None = Field(default=None, ge=0, le=100_000)
    offset: int = Field(default=0, ge=0)


class CountRequest(_In):
    where: Json | None = None


class Records(BaseModel):
    records: list[Json]
    count: int


class Count(BaseModel):
    count: int


class DeleteRequest(_In):
    where: Json = Field(description="Filter of the records to delete (must not be empty)")
    chunk_size: int = Field(default=1000, ge=1, le=100_000)


class SearchRequest(_In):
    query: list[float] | list[list[float]] = Field(description="One vector or several")
    k: int = Field(default=10, ge=1, le=10_000)
    metric: Literal["cosine", "dot", "l2"] = "cosine"


class HitOut(BaseModel):
    id: str
    score: float


class SearchResponse(BaseModel):
    hits: list[HitOut] | list[list[HitOut]]


class SubmitRequest(_In):
    workflow_type: str
    context: str
    items: list[Json] | None = None
    params: Json | None = None
    workflow_id: str | None = None
    chunk_size: int = Field(default=1000, ge=1, le=1_000_000)


# -- helpers --------------------------------------------------------------------------------


def _where(raw: str | None) -> Json | None:
    if raw is None or raw == "":
        return None
    value = parse_user_json(raw, "where")
    if not isinstance(value, dict):
        raise InvalidInput("where: must be a JSON object")
    return value


def _order(values: list[str] | None) -> list[str] | None:
    return [v for v in values if v] or None if values else None


def _error(status: int, kind: str, exc: Exception, loc: list[str] | None = None) -> JSONResponse:
    message = str(exc)
    if status == 422:
        match = _ARG.match(message)
        field = match.group(1) if match else "request"
        return JSONResponse(
            status_code=status,
            content={"detail": [{"loc": loc or [field], "msg": message, "type": kind}]},
        )
    return JSONResponse(status_code=status, content={"detail": message, "type": kind})


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    def _unparsable(_: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own 422 echoes the input, which may hold NaN/Infinity and then cannot be
        # sent as JSON (a 500): location, message and type only
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        detail = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": e.get("type", ""),
            }
            for e in errors
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(InvalidInput)
    def _invalid(_: Request, exc: Exception) -> JSONResponse:
        return _error(422, "invalid_input", exc)

    @app.exception_handler(NotFoundError)
    def _not_found(_: Request, exc: Exception) -> JSONResponse:
        return _error(404, "not_found", exc)

    @app.exception_handler(ConflictError)
    def _conflict(_: Request, exc: Exception) -> JSONResponse:
        return _error(409, "conflict", exc)

    @app.exception_handler(UntrustedArtifactError)
    def _untrusted(_: Request, exc: Exception) -> JSONResponse:
        return _error(403, "untrusted_artifact", exc)

    @app.exception_handler(IntegrityError)
    def _integrity(_: Request, exc: Exception) -> JSONResponse:
        log.error("integrity error: %s", exc)
        return _error(500, "integrity_error", exc)

    @app.exception_handler(StorageError)
    def _storage(_: Request, exc: Exception) -> JSONResponse:
        log.error("storage error: %s", exc)
        errno = getattr(exc, "errno", None)
        return _error(507 if errno == 28 else 500, "storage_error", exc)


# -- the application ------------------------------------------------------------------------


def create_app(store: Store, *, process_workflows: bool = True) -> FastAPI:
    """The FastAPI application serving ``store``. With ``process_workflows`` a workflow
    submitted over HTTP is processed by a background task after the response is sent
    (otherwise run ``ctxstore worker``)."""
    from app import __version__

    app = FastAPI(
        title="ctxstore",
        version=__version__,
        description="Records, embeddings, models and batch workflows of a ctxstore store.",
    )
    _install_handlers(app)

    def ctx_of(name: str) -> Any:
        check_name(name, "context")
        return store.context(name, create=False)

    def schedule(tasks: BackgroundTasks, wf: BatchWorkflow) -> None:
        if process_workflows:
            tasks.add_task(_process, store, wf.workflow_id)

    @app.get("/health", response_model=Health, tags=["store"])
    def health() -> Health:
        return Health(
            version=__version__, format_version=FORMAT_VERSION, contexts=len(store.contexts())
        )

    contexts = APIRouter(prefix="/contexts", tags=["contexts"])

    @contexts.get("", response_model=ContextList)
    def list_contexts() -> ContextList:
        return ContextList(contexts=store.contexts())

    @contexts.post("", response_model=ContextInfo, status_code=201)
    def create_context(body: CreateContext) -> ContextInfo:
        check_name(body.name, "name")
        if body.name in store.contexts():
            raise ConflictError(f"context {body.name!r} already exists")
        store.context(body.name, create=True)
        return ContextInfo(name=body.name, collections={})

    @contexts.get("/{context}", response_model=ContextInfo)
    def get_context(context: str) -> ContextInfo:
        ctx = ctx_of(context)
        return ContextInfo(name=context, collections={c: ctx.count(c) for c in ctx.collections()})

    @contexts.delete("/{context}", status_code=204)
    def drop_context(context: str) -> Response:
        check_name(context, "context")
        store.drop_context(context)
        return Response(status_code=204)

    records = "/{context}/collections/{collection}"

    @contexts.post(f"{records}/records", response_model=BatchReceipt, status_code=201)
    def append(
        context: str,
        collection: str,
        body: AppendRequest,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
    ) -> BatchReceipt:
        check_user_batch_id(idempotency_key, "Idempotency-Key")
        batch_id = body.batch_id or idempotency_key or None
        receipt: BatchReceipt = ctx_of(context).append(collection, body.records, batch_id=batch_id)
        if receipt.duplicate:
            response.status_code = 200
        return receipt

    @contexts.get(f"{records}/records", response_model=Records)
    def query_get(
        context: str,
        collection: str,
        where: Annotated[str | None, Query(description="Filter as JSON")] = None,
        order_by: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int | None, Query(ge=0, le=100_000)] = 1000,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Records:
        found = ctx_of(context).query(
            collection, _where(where), order_by=_order(order_by), limit=limit, offset=offset
        )
        return Records(records=found, count=len(found))

    @contexts.post(f"{records}/query", response_model=Records)
    def query_post(context: str, collection: str, body: QueryRequest) -> Records:
        limit = 1000 if body.limit is None else body.limit
        found = ctx_of(context).query(
            collection, body.where, order_by=body.order_by, limit=limit, offset=body.offset
        )
        return Records(records=found, count=len(found))

    @contexts.get(f"{records}/records/{{record_id}}", response_model=Json)
    def get_record(context: str, collection: str, record_id: str) -> Json:
        if not 0 < len(record_id) <= 256:
            raise InvalidInput("record_id: must be 1-256 characters")
        found: Json = ctx_of(context).get(collection, record_id)
        return found

    @contexts.get(f"{records}/count", response_model=Count)
    def count_get(
        context: str,
        collection: str,
        where: Annotated[str | None, Query(description="Filter as JSON")] = None,
    ) -> Count:
        return Count(count=ctx_of(context).count(collection, _where(where)))

    @contexts.post(f"{records}/count", response_model=Count)
    def count_post(context: str, collection: str, body: CountRequest) -> Count:
        return Count(count=ctx_of(context).count(collection, body.where))

    @contexts.delete(f"{records}/records", response_model=BatchWorkflow, status_code=202)
    def delete_records(
        context: str, collection: str, body: DeleteRequest, tasks: BackgroundTasks
    ) -> BatchWorkflow:
        ctx_of(context)
        check_name(collection, "collection")
        if not body.where:
            raise InvalidInput("where: must not be empty (deleting everything needs a filter)")
        wf: BatchWorkflow = store.workflows.submit(
            "delete",
            context=context,
            params={"collection": collection, "where": body.where},
            chunk_size=body.chunk_size,
        )
        schedule(tasks, wf)
        return wf

    @contexts.post(f"{records}/compact", response_model=CompactionReport)
    def compact(context: str, collection: str) -> CompactionReport:
        ctx = ctx_of(context)
        check_name(collection, "collection")
        if collection not in ctx.collections():
            raise NotFoundError(f"collection {collection!r} not found in {context!r}")
        report: CompactionReport = ctx.compact(collection)
        return report

    @contexts.get("/{context}/embeddings", response_model=list[Json])
    def list_embeddings(context: str) -> list[Json]:
        return [e.model_dump(mode="json") for e in ctx_of(context).embeddings.list()]

    @contexts.post("/{context}/embeddings/{name}/search", response_model=SearchResponse)
    def search(context: str, name: str, body: SearchRequest) -> SearchResponse:
        import numpy as np

        check_name(name, "name")
        query = np.asarray(body.query, dtype=np.float64)
        if query.size == 0 or (query.ndim == 2 and query.shape[1] == 0):
            raise InvalidInput("query: must not be empty")
        hits = ctx_of(context).embeddings.search(name, query, k=body.k, metric=body.metric)
        if query.ndim == 1:
            return SearchResponse(hits=[HitOut(id=h.id, score=h.score) for h in hits])
        return SearchResponse(hits=[[HitOut(id=h.id, score=h.score) for h in row] for row in hits])

    @contexts.get("/{context}/export", response_class=FileResponse)
    def export(context: str) -> FileResponse:
        ctx_of(context)
        tmp = Path(tempfile.mkdtemp(prefix="ctxstore-export-"))
        dest = tmp / f"{context}.tar.gz"
        try:
            store.export_context(context, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return FileResponse(
            dest,
            media_type="application/gzip",
            filename=f"{context}.tar.gz",
            background=BackgroundTask(shutil.rmtree, tmp, True),
        )

    app.include_router(contexts)

    @app.post("/import", response_model=Manifest, status_code=201, tags=["contexts"])
    def import_archive(
        archive: Annotated[UploadFile, File(description="A .tar.gz written by export")],
        name: Annotated[str | None, Query()] = None,
        on_conflict: Annotated[Literal["fail", "overwrite", "merge", "skip"], Query()] = "fail",
    ) -> Manifest:
        if name is not None:
            check_name(name, "name")
        with _uploaded(archive) as path:
            try:
                manifest: Manifest = store.import_context(path, name=name, on_conflict=on_conflict)
            except (IntegrityError, SchemaVersionError) as exc:
                raise InvalidInput(f"archive: {exc}") from None
        return manifest

    wf = APIRouter(prefix="/workflows", tags=["workflows"])

    @wf.post("", response_model=BatchWorkflow, status_code=202)
    def submit(body: SubmitRequest, tasks: BackgroundTasks) -> BatchWorkflow:
        ctx_of(body.context)
        flow: BatchWorkflow = store.workflows.submit(
            body.workflow_type,
            context=body.context,
            items=body.items,
            params=body.params,
            workflow_id=body.workflow_id,
            chunk_size=body.chunk_size,
        )
        schedule(tasks, flow)
        return flow

    @wf.get("", response_model=list[BatchWorkflow])
    def list_workflows(
        status: Annotated[WorkflowStatus | None, Query()] = None,
        workflow_type: Annotated[str | None, Query(max_length=64)] = None,
        context: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=0, le=10_000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[BatchWorkflow]:
        flows: list[BatchWorkflow] = store.workflows.list(
            status=status, workflow_type=workflow_type, context=context, limit=limit, offset=offset
        )
        return flows

    @wf.get("/{workflow_id}", response_model=BatchWorkflow)
    def get_workflow(workflow_id: str) -> BatchWorkflow:
        flow: BatchWorkflow = store.workflows.get(workflow_id)
        return flow

    @wf.post("/{workflow_id}/cancel", response_model=BatchWorkflow)
    def cancel(workflow_id: str) -> BatchWorkflow:
        flow: BatchWorkflow = store.workflows.cancel(workflow_id)
        return flow

    @wf.post("/{workflow_id}/rollback", response_model=BatchWorkflow)
    def rollback(workflow_id: str) -> BatchWorkflow:
        flow: BatchWorkflow = store.workflows.rollback(workflow_id)
        return flow

    app.include_router(wf)
    _ = Body
    return app


def _process(store: Store, workflow_id: str) -> None:
    """Background task: process a submitted workflow; failures are recorded in it."""
    try:
        store.workflows.process(workflow_id)
    except StorageError as exc:  # e.g. another worker took it, or it was cancelled
        log.info("workflow %s not processed here: %s", workflow_id, exc)


@contextlib.contextmanager
def _uploaded(upload: UploadFile) -> Iterator[Path]:
    """The upload copied to a private temp file (removed afterwards)."""
    fd, name = tempfile.mkstemp(prefix="ctxstore-upload-", suffix=".tar.gz")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := upload.file.read(UPLOAD_CHUNK):
                out.write(chunk)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


__all__ = ["create_app"]
