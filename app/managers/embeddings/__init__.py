"""Embedding sets of a context (``ctx.embeddings``, docs/api.md "Embeddings").

- ``store``: ``EmbeddingStore`` (save / load / search / list / info / delete / verify);
- ``checks``: the input checks behind its preconditions;
- ``search``: the cache of verified, memory-mapped shards and the assembly of hits.

The ``metadata.json`` document lives in ``app.formats.setmeta``, the shard format in
``app.formats.npz``; files and documents go through the backend seam (``app.backends``).
"""

from app.managers.embeddings.store import EmbeddingStore, recorded_files

__all__ = ["EmbeddingStore", "recorded_files"]
