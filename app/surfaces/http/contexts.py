"""``/contexts``: list, create, show and drop contexts."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.core.errors import ConflictError
from app.core.rules import ContextName, check
from app.surfaces.http.deps import StoreDep, open_context
from app.surfaces.http.models import ContextInfo, ContextList, CreateContext

router = APIRouter(prefix="/contexts", tags=["contexts"])


@router.get("", response_model=ContextList)
def list_contexts(store: StoreDep) -> ContextList:
    return ContextList(contexts=store.contexts())


@router.post("", response_model=ContextInfo, status_code=201)
def create_context(body: CreateContext, store: StoreDep) -> ContextInfo:
    check(ContextName, body.name, "name")
    if body.name in store.contexts():
        raise ConflictError(f"context {body.name!r} already exists")
    store.context(body.name, create=True)
    return ContextInfo(name=body.name, collections={})


@router.get("/{context}", response_model=ContextInfo)
def get_context(context: str, store: StoreDep) -> ContextInfo:
    ctx = open_context(store, context)
    return ContextInfo(name=context, collections={c: ctx.count(c) for c in ctx.collections()})


@router.delete("/{context}", status_code=204)
def drop_context(context: str, store: StoreDep) -> Response:
    check(ContextName, context, "context")
    store.drop_context(context)
    return Response(status_code=204)
