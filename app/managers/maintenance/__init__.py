"""Whole-store maintenance: garbage collection (``Store.gc``), ``ctxstore upgrade`` and
``ctxstore migrate`` (docs/api.md, "Garbage collection", "Upgrading a store", "Moving a
store")."""
