"""ctxstore: design-by-contract storage for research records, embeddings, models and batch
workflows. See SPEC.md (shared) and README.md; ``open_store`` is the entry point."""

from app.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    SchemaVersionError,
    StorageError,
    UntrustedArtifactError,
)
from app.core.schemas import BatchReceipt, CompactionReport, IntegrityReport, RecordVersion
from app.managers.context import Context
from app.managers.store import Store, open_store

__version__ = "0.1.0"

__all__ = [
    "BatchReceipt",
    "CompactionReport",
    "ConflictError",
    "Context",
    "IntegrityError",
    "IntegrityReport",
    "InvalidInput",
    "NotFoundError",
    "RecordVersion",
    "SchemaVersionError",
    "StorageError",
    "Store",
    "UntrustedArtifactError",
    "__version__",
    "open_store",
]
