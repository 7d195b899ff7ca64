"""Public home of the manager Protocols (SPEC section 10)."""

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
