"""``/tokens`` and ``/audit``: manage bearer tokens and read the audit log (admin, with a
token for every context: ``scopes.STORE_ADMIN``).

``POST /tokens`` answers the new token once (the store keeps only its keyed hash);
``GET /tokens`` lists them without secrets; ``DELETE /tokens/{name}`` revokes one;
``GET /audit?offset=&limit=`` pages the audit log. See docs/api.md, "Service security".
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from app.core.access_types import AuditPage, Scope, TokenInfo
from app.surfaces.http.deps import StoreDep, audit_target

router = APIRouter(tags=["access"])


class CreateToken(BaseModel):
    """A token to create: its name, scope and (optionally) the only contexts it may see."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=128)
    scope: Scope
    contexts: list[str] | None = Field(default=None, max_length=1000)


class NewToken(BaseModel):
    """The created token, shown once: keep ``token``, the store cannot show it again."""

    token: str
    info: TokenInfo


@router.post("/tokens", response_model=NewToken, status_code=201)
def create_token(body: CreateToken, request: Request, store: StoreDep) -> NewToken:
    audit_target(request, body.name)
    token: str = store.tokens.create(body.name, scope=body.scope, contexts=body.contexts)
    info = next(t for t in store.tokens.list() if t.name == body.name)
    return NewToken(token=token, info=info)


@router.get("/tokens", response_model=list[TokenInfo])
def list_tokens(store: StoreDep) -> list[TokenInfo]:
    tokens: list[TokenInfo] = store.tokens.list()
    return tokens


@router.delete("/tokens/{name}", status_code=204)
def revoke_token(name: str, store: StoreDep) -> Response:
    store.tokens.revoke(name)
    return Response(status_code=204)


@router.get("/audit", response_model=AuditPage)
def audit(
    store: StoreDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=0, le=10_000)] = 100,
) -> AuditPage:
    page: AuditPage = store.audit.page(offset=offset, limit=limit)
    return page


__all__ = ["router"]
