"""ctxstore: design-by-contract storage for research records, embeddings, models and batch
workflows. ``open_store`` is the entry point; see README.md and docs/api.md."""

from app.core.access_types import AuditEntry, AuditEvent, AuditPage, TokenInfo
from app.core.artifacts import EmbeddingInfo, EmbeddingSet, Hit, ModelInfo
from app.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    SchemaVersionError,
    StorageError,
    UntrustedArtifactError,
)
from app.core.maintenance_types import GcItem, GcReport
from app.core.schemas import (
    Analogy,
    BatchReceipt,
    CompactionReport,
    Concept,
    Frame,
    IntegrityReport,
    RecordVersion,
)
from app.core.transfer_types import ContextState, Manifest, ManifestFile
from app.core.version import __version__
from app.core.workflow_types import BatchWorkflow, WorkflowStatus
from app.managers.buffer import AppendBuffer
from app.managers.context import Context
from app.managers.store import Store, open_store
from app.managers.workflows import WorkflowManager

__all__ = [
    "Analogy",
    "AppendBuffer",
    "AuditEntry",
    "AuditEvent",
    "AuditPage",
    "BatchReceipt",
    "BatchWorkflow",
    "CompactionReport",
    "Concept",
    "ConflictError",
    "Context",
    "ContextState",
    "EmbeddingInfo",
    "EmbeddingSet",
    "Frame",
    "GcItem",
    "GcReport",
    "Hit",
    "IntegrityError",
    "IntegrityReport",
    "InvalidInput",
    "Manifest",
    "ManifestFile",
    "ModelInfo",
    "NotFoundError",
    "RecordVersion",
    "SchemaVersionError",
    "StorageError",
    "Store",
    "TokenInfo",
    "UntrustedArtifactError",
    "WorkflowManager",
    "WorkflowStatus",
    "__version__",
    "open_store",
]
