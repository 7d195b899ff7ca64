"""Batch workflow types: the status enum, its legal-transition table and the public model.

Pure definitions (no I/O). The state machine (docs/api.md, "Batch workflows")::

    pending ──> processing ──> completed ──┐
       │          │  │  └───> failed ─────┼──> rolled_back
       │          │  └──────> cancelled ──┘
       └──────────┼─────────> cancelled
                  └──> pending            (recover / a worker stopping)

Every other move raises ``ConflictError``.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import ConflictError, InvalidInput


class WorkflowStatus(enum.StrEnum):
    """Where a batch workflow is in its life."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"


TRANSITIONS: dict[WorkflowStatus, frozenset[WorkflowStatus]] = {
    WorkflowStatus.PENDING: frozenset({WorkflowStatus.PROCESSING, WorkflowStatus.CANCELLED}),
    WorkflowStatus.PROCESSING: frozenset(
        {
            WorkflowStatus.COMPLETED,
            WorkflowStatus.FAILED,
            WorkflowStatus.CANCELLED,
            WorkflowStatus.PENDING,
        }
    ),
    WorkflowStatus.COMPLETED: frozenset({WorkflowStatus.ROLLED_BACK}),
    WorkflowStatus.FAILED: frozenset({WorkflowStatus.ROLLED_BACK}),
    WorkflowStatus.CANCELLED: frozenset({WorkflowStatus.ROLLED_BACK}),
    WorkflowStatus.ROLLED_BACK: frozenset(),
}
"""Legal moves: ``TRANSITIONS[old]`` is the set of statuses ``old`` may move to."""

FINISHED: frozenset[WorkflowStatus] = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.FAILED,
        WorkflowStatus.CANCELLED,
        WorkflowStatus.ROLLED_BACK,
    }
)
"""Statuses that ``purge`` may remove (a workflow in them never runs again)."""


def is_legal(old: WorkflowStatus, new: WorkflowStatus) -> bool:
    return new in TRANSITIONS[old]


def check_transition(old: WorkflowStatus | str, new: WorkflowStatus | str) -> None:
    """Raise ``ConflictError`` unless ``old -> new`` is a legal move."""
    old_s, new_s = WorkflowStatus(old), WorkflowStatus(new)
    if not is_legal(old_s, new_s):
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[old_s])) or "nothing"
        raise ConflictError(
            f"illegal workflow transition {old_s.value} -> {new_s.value} "
            f"(from {old_s.value} only to: {allowed})"
        )


def parse_status(value: object, argument: str = "status") -> WorkflowStatus:
    """A ``WorkflowStatus`` from an enum member or its string value, else ``InvalidInput``."""
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return WorkflowStatus(value)
    except ValueError:
        names = ", ".join(s.value for s in WorkflowStatus)
        raise InvalidInput(f"{argument}: {str(value)[:40]!r} is not one of {names}") from None


class BatchWorkflow(BaseModel):
    """A snapshot of one batch workflow as the tracker holds it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workflow_id: str
    workflow_type: str
    context: str
    status: WorkflowStatus
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    heartbeat_at: dt.datetime | None = None
    items_total: int = 0
    items_processed: int = 0
    chunk_size: int = 1000
    chunks_total: int = 0
    chunks_done: int = 0
    error_count: int = 0
    errors: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    batch_ids: list[str] = Field(default_factory=list)
    cancel_requested: bool = False
    worker: str | None = None
    priority: int = 0
    max_retries: int = 0
    attempts: int = 0
    """Chunk attempts in all, first tries included (a retried chunk counts each try)."""
    not_before: dt.datetime | None = None
    """After a failed attempt handed back for a retry: no worker claims it before this."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (``None`` until both are known)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
