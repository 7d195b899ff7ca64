"""``/contexts/{context}/embeddings``: list the embedding sets, search one."""

from __future__ import annotations

from typing import cast

import numpy as np
from fastapi import APIRouter

from app.core.artifacts import Hit
from app.core.errors import InvalidInput
from app.core.rules import SetName, check
from app.surfaces.http.deps import StoreDep, open_context
from app.surfaces.http.models import HitOut, Json, SearchRequest, SearchResponse

router = APIRouter(prefix="/contexts/{context}/embeddings", tags=["contexts"])


@router.get("", response_model=list[Json])
def list_embeddings(context: str, store: StoreDep) -> list[Json]:
    return [e.model_dump(mode="json") for e in open_context(store, context).embeddings.list()]


@router.post("/{name}/search", response_model=SearchResponse)
def search(context: str, name: str, body: SearchRequest, store: StoreDep) -> SearchResponse:
    check(SetName, name, "name")
    query = np.asarray(body.query, dtype=np.float64)
    if query.size == 0 or (query.ndim == 2 and query.shape[1] == 0):
        raise InvalidInput("query: must not be empty")
    hits = open_context(store, context).embeddings.search(name, query, k=body.k, metric=body.metric)
    if query.ndim == 1:
        return SearchResponse(hits=_out(cast(list[Hit], hits)))
    return SearchResponse(hits=[_out(row) for row in cast(list[list[Hit]], hits)])


def _out(hits: list[Hit]) -> list[HitOut]:
    return [HitOut(id=h.id, score=h.score) for h in hits]
