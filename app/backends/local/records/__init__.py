"""The embedded backend's records: one batch log per collection plus the context's query index.

Modules (each named for what lives in it):

- ``context_records``: ``LocalRecords``, the ``Records`` of one context
  (``app.backends.protocols``): readiness and recovery, the writer lock, and every call
  ``app.managers.context.Context`` makes, over the modules below;
- ``collection``: ``CollectionLog``, one collection's log and its slice of the index kept in
  step (write path, recovery, compaction, reads of the log);
- ``catalog``: ``Catalog``, the context's collection catalogue (schemas, indexed fields);
- ``side_table``: building a collection's next index content aside, then swapping it in;
- ``logcheck``: verification of a collection's index against its log;
- ``rebuild``: rebuilding a context's index from its logs.

The on-disk formats live below, in ``app.formats.batchlog`` (the log's bytes) and
``app.formats.sqlindex`` (the index's tables). See ``docs/api.md`` for the public API.
"""

from __future__ import annotations

from app.backends.local.records.catalog import Catalog
from app.backends.local.records.collection import CollectionLog
from app.backends.local.records.context_records import LocalRecords
from app.backends.local.records.rebuild import rebuild_index

__all__ = ["Catalog", "CollectionLog", "LocalRecords", "rebuild_index"]
