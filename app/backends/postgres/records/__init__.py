"""The PostgreSQL backend's records (PERSISTENCE_LAYER_STRATEGY.md section 11, "Records").

Modules:

- ``records``: ``PgRecords``, the ``Records`` of one context (``app.backends.protocols``):
  the catalogue of collections, the write path, maintenance; built on ``base`` (connection,
  transactions, readiness), ``reads`` (the index's reads) and ``logs`` (reads of the log,
  whole collections);
- ``tables``: the tables, their DDL and the expression indexes;
- ``bodies``: batch bodies built by ``app.formats.batchlog``, stored in parts with COPY and
  read back as a batch-log file;
- ``apply``: putting batches and current records into the tables (COPY + one upsert);
- ``logread``: history, latest commits, current records, compacted copies from the log;
- ``maintenance``: ``verify`` and ``rebuild``.
"""

from __future__ import annotations

from app.backends.postgres.records.records import PgBatch, PgPlan, PgRecords
from app.backends.postgres.records.tables import forget_context

__all__ = ["PgBatch", "PgPlan", "PgRecords", "forget_context"]
