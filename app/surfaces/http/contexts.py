"""``/contexts``: list, create, show and drop contexts.

A token limited to some contexts sees only those: in the list, and when creating one (the gate
already answers 404 for a ``{context}`` outside it)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.core.errors import ConflictError
from app.core.rules import ContextName, check
from app.surfaces.http.deps import StoreDep, TokenDep, audit_target, open_context, visible
from app.surfaces.http.models import ContextInfo, ContextList, CreateContext

router = APIRouter(prefix="/contexts", tags=["contexts"])


@router.get("", response_model=ContextList)
def list_contexts(store: StoreDep, token: TokenDep) -> ContextList:
    return ContextList(contexts=[c for c in store.contexts() if token.sees(c)])


@router.post("", response_model=ContextInfo, status_code=201)
def create_context(
    body: CreateContext, request: Request, store: StoreDep, token: TokenDep
) -> ContextInfo:
    audit_target(request, body.name)
    check(ContextName, body.name, "name")
    visible(token, body.name)
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
