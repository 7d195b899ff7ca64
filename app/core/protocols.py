"""Runtime-checkable Protocols typing the managers (docs/api.md, "Contracts and types").

They describe the public surface only; the concrete classes are ``icontract.DBC`` subclasses
(a class cannot be both DBC and Protocol) that satisfy them structurally.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from app.core.schemas import BatchReceipt, CompactionReport, IntegrityReport, RecordVersion


@runtime_checkable
class RecordStoreProtocol(Protocol):
    """Record collections of one context (met by ``Context``)."""

    def append(
        self, collection: str, records: Iterable[Any], *, batch_id: str | None = None
    ) -> BatchReceipt: ...

    def get(self, collection: str, record_id: str) -> dict[str, Any]: ...

    def query(
        self,
        collection: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]: ...

    def iter(
        self,
        collection: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]: ...

    def count(self, collection: str, where: Mapping[str, Any] | None = None) -> int: ...

    def delete(
        self,
        collection: str,
        ids: Iterable[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        batch_id: str | None = None,
    ) -> int: ...

    def history(self, collection: str, record_id: str) -> list[RecordVersion]: ...

    def compact(self, collection: str) -> CompactionReport: ...

    def collections(self) -> list[str]: ...

    def verify(self) -> IntegrityReport: ...

    def rebuild_index(self) -> None: ...


@runtime_checkable
class EmbeddingStoreProtocol(Protocol):
    """Embedding sets of one context (met by ``ctx.embeddings``)."""

    def save(
        self,
        name: str,
        ids: Sequence[str],
        vectors: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
        mode: str = "overwrite",
    ) -> Any: ...

    def load(self, name: str, *, mmap: bool = True) -> Any: ...

    def search(
        self,
        name: str,
        query: Any,
        *,
        k: int = 10,
        metric: str = "cosine",
        where: Mapping[str, Any] | None = None,
        collection: str | None = None,
        exact: bool = True,
    ) -> Any: ...

    def build_index(self, name: str, *, kind: str = "hnsw", **params: Any) -> None: ...

    def list(self) -> builtins.list[Any]: ...

    def info(self, name: str) -> Any: ...

    def delete(self, name: str) -> None: ...


@runtime_checkable
class ModelStoreProtocol(Protocol):
    """Versioned models of one context (met by ``ctx.models``)."""

    def save(self, name: str, model: Any, *, metadata: Mapping[str, Any] | None = None) -> Any: ...

    def load(
        self, name: str, *, version: int | None = None, into: Any = None, trusted: bool = False
    ) -> Any: ...

    def list(self) -> builtins.list[Any]: ...

    def versions(self, name: str) -> builtins.list[Any]: ...

    def delete(self, name: str, *, version: int | None = None) -> None: ...


@runtime_checkable
class BatchPersistenceProtocol(Protocol):
    """The batch workflow tracker (met by ``store.workflows``)."""

    def submit(
        self,
        workflow_type: str,
        *,
        context: str,
        items: Iterable[Any] | None = None,
        params: Mapping[str, Any] | None = None,
        workflow_id: str | None = None,
        chunk_size: int = 1000,
    ) -> Any: ...

    def process(self, workflow_id: str) -> Any: ...

    def process_pending(self, *, limit: int | None = None) -> builtins.list[Any]: ...

    def get(self, workflow_id: str) -> Any: ...

    def list(
        self,
        *,
        status: Any = None,
        workflow_type: str | None = None,
        context: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Any]: ...

    def cancel(self, workflow_id: str) -> Any: ...

    def rollback(self, workflow_id: str) -> Any: ...

    def recover(self, *, stale_after: float = 60.0) -> builtins.list[Any]: ...

    def metrics(self) -> dict[str, Any]: ...

    def purge(self, *, older_than: dt.timedelta) -> int: ...

    def register(self, workflow_type: str, handler: Callable[..., None]) -> None: ...


@runtime_checkable
class PersistenceProtocol(Protocol):
    """Whole-context persistence (met by ``Store``)."""

    def contexts(self) -> list[str]: ...

    def save_context(self, name: str, state: Any) -> Any: ...

    def load_context(self, name: str) -> Any: ...

    def export_context(self, name: str, dest: str | Path) -> Any: ...

    def import_context(
        self, src: str | Path, *, name: str | None = None, on_conflict: str = "fail"
    ) -> Any: ...

    def verify(self) -> IntegrityReport: ...

    def stats(self) -> dict[str, Any]: ...
