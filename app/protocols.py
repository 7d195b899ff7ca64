"""Public home of the manager Protocols (docs/api.md, "Contracts and types")."""

from app.core.protocols import (
    BatchPersistenceProtocol,
    EmbeddingStoreProtocol,
    ModelStoreProtocol,
    PersistenceProtocol,
    RecordStoreProtocol,
)

__all__ = [
    "BatchPersistenceProtocol",
    "EmbeddingStoreProtocol",
    "ModelStoreProtocol",
    "PersistenceProtocol",
    "RecordStoreProtocol",
]
