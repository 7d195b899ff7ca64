"""Request and response bodies of the HTTP service (pydantic models; docs/api.md, "HTTP")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.rules import MetricValue

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
    metric: MetricValue = "cosine"


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
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    max_retries: int = Field(default=0, ge=0, le=50)


__all__ = [
    "AppendRequest",
    "ContextInfo",
    "ContextList",
    "Count",
    "CountRequest",
    "CreateContext",
    "DeleteRequest",
    "Health",
    "HitOut",
    "Json",
    "QueryRequest",
    "Records",
    "SearchRequest",
    "SearchResponse",
    "SubmitRequest",
]
