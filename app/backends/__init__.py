"""The backend seam (layer between ``formats`` and ``managers``).

- ``protocols``: what a backend provides (``Records``, ``WorkflowTracker``, ``FileStore``,
  ``MetaStore``, ``ContextCatalog``, bundled as ``Backend``) and what each call guarantees;
- ``local``: the embedded implementation (JSONL + SQLite + files in one directory);
- ``registry``: ``backend_for(root)``, the switch from a store's root to its backend.
"""
