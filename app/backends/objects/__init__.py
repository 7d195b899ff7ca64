"""Files and documents over an fsspec URL (``s3://bucket/prefix`` via s3fs, or a directory).

``ObjectParts(url, cache)`` hands out each context part's ``ObjectFileStore`` and
``ObjectMetaStore`` (the ``FileStore`` / ``MetaStore`` contracts of
``app.backends.protocols``). A file's bytes are uploaded under a content-addressed name
(``layout.object_blob``), then a small name object (``layout.object_name``) records which blob
the key names: only that second write makes the file visible. Reads are verified (SHA-256) into
a local cache folder and served from there (``app.backends.objects.cache``). Blobs no name
refers to (an upload interrupted before its name was written, a deleted file) are removed by
``app.backends.objects.gc`` once older than a grace period.

This package imports fsspec; nothing outside it does, and ``import ctxstore`` never imports it.
"""

from __future__ import annotations

from app.backends.objects.files import ObjectFileStore
from app.backends.objects.location import Location
from app.backends.objects.meta import ObjectMetaStore
from app.backends.objects.parts import ObjectParts

__all__ = ["Location", "ObjectFileStore", "ObjectMetaStore", "ObjectParts"]
