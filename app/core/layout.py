"""The embedded store's file layout: every file and folder name, in one place.

A store directory::

    ctxstore.json                     marker (format version)
    contexts/<context>/               one folder per context
        context.json                  catalog (collections, schemas, indexes)
        <collection>.jsonl            batch log per collection (the truth for records)
        <context>.sqlite              query index (derived from the logs)
        <part>/...                    one folder per file-holding part (embeddings, models)
    contexts/.<purpose>-<hex>/        staging folders (swept at open; .spool-*: a large
                                      batch being appended)
    workflows/tracker.sqlite          workflow tracker
    workflows/items/                  staged workflow items
    trust/                            pickle trust marks
    access.sqlite                     service tokens and the audit log (created on first write)

Inside the part folders::

    embeddings/<set>/metadata.json    commit point of a set
    embeddings/<set>/shard-NNNNNN.npz one shard
    models/<name>/vNNNN.json          commit point of a model version
    models/<name>/vNNNN.<suffix>      its file (pth, joblib, safetensors)
    ann/<set>/index.json              commit point of a set's approximate-search index
    ann/<set>/hnsw-NNNNNN.usearch     the index (derived from the set; never exported)

Only names live here; no module but this one spells them. Nothing here touches the disk.
"""

from __future__ import annotations

import re
from pathlib import Path

STORE_MARKER = "ctxstore.json"
CONTEXTS_DIR = "contexts"
WORKFLOWS_DIR = "workflows"
TRUST_DIR = "trust"

CATALOG_FILE = "context.json"
LOG_SUFFIX = ".jsonl"
INDEX_SUFFIX = ".sqlite"

SET_META = "metadata.json"
SHARD_PATTERN = re.compile(r"shard-(\d{6,})\.npz")
MODEL_RECORD_PATTERN = re.compile(r"v(\d{4,})\.json")


def contexts_dir(root: Path) -> Path:
    return root / CONTEXTS_DIR


def workflows_dir(root: Path) -> Path:
    return root / WORKFLOWS_DIR


def trust_dir(root: Path) -> Path:
    return root / TRUST_DIR


def marker(root: Path) -> Path:
    return root / STORE_MARKER


def log_name(collection: str) -> str:
    """File name of a collection's batch log."""
    return f"{collection}{LOG_SUFFIX}"


def collection_of(file_name: str) -> str | None:
    """The collection a log file name belongs to, or None if it is not a log's name."""
    if file_name.endswith(LOG_SUFFIX) and len(file_name) > len(LOG_SUFFIX):
        return file_name[: -len(LOG_SUFFIX)]
    return None


def index_name(context: str) -> str:
    """File name of a context's SQLite query index."""
    return f"{context}{INDEX_SUFFIX}"


def catalog(folder: Path) -> Path:
    return folder / CATALOG_FILE


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.npz"


def model_stem(version: int) -> str:
    return f"v{version:04d}"


def model_record(version: int) -> str:
    """File name of a model version's record (its commit point)."""
    return f"{model_stem(version)}.json"


def model_file(version: int, suffix: str) -> str:
    return f"{model_stem(version)}.{suffix}"


MODEL_FILE_PATTERN = re.compile(r"v(\d{4,})\.([a-z][a-z0-9_]*)")
"""A model version's file (``model_file``): group 1 the version, group 2 the suffix (the
record's ``.json`` matches too: callers keep the suffixes of registered formats)."""
# -- added by issue 10 (parts, store directory) ---------------------------------------------

EMBEDDINGS_DIR = "embeddings"
"""Folder of a context's embedding sets (the ``embeddings`` part)."""
MODELS_DIR = "models"
"""Folder of a context's models (the ``models`` part)."""
STORE_LOCK = ".store.lock"
"""The store's writer lock (create, drop, install contexts)."""
TRACKER_FILE = "tracker.sqlite"
"""The workflow tracker, inside the workflows folder."""
NO_TRUST_DIR = ".no-trust"
"""Private, empty trust folder of a staged (imported) context: nothing it holds is trusted."""
SHARD_SUFFIX = ".npz"
"""Suffix of embedding shard files (any such file in a set folder counts as a shard's data)."""
SPOOL_PURPOSE = "spool"
"""Staging purpose of the private folder a large batch is spooled in while it is appended."""
STAGING_PURPOSES = ("import", "export", "save", "merge", "dropped", "replaced", SPOOL_PURPOSE)
"""Purposes of the dot-named staging folders in the contexts folder (never listed as contexts)."""


ANN_DIR = "ann"
"""Folder of a context's approximate-search (ANN) indexes, one item folder per embedding set:
derived data, rebuilt from the set, never part of an export (not a context part)."""
ANN_META = "index.json"
"""Commit point of a set's ANN index (what it was built from, its file's size and SHA-256)."""
ANN_META_PATTERN = re.compile(re.escape(ANN_META))
ANN_FILE_PATTERN = re.compile(r"hnsw-(\d{6,})\.usearch")
"""An ANN index file (``ann_file``); numbers are never reused within a set's folder."""


def ann_file(number: int) -> str:
    """File name of the ANN index number ``number`` of a set."""
    return f"hnsw-{number:06d}.usearch"


def staging_prefix(purpose: str) -> str:
    """Start of the name of a staging folder for ``purpose``: ``.<purpose>-``."""
    return f".{purpose}-"


def tracker(root: Path) -> Path:
    """The workflow tracker of the store at ``root``."""
    return workflows_dir(root) / TRACKER_FILE


def index_files_glob(context: str) -> str:
    """Glob of a context's index and its SQLite side files (``-wal``, ``-shm``)."""
    return f"{index_name(context)}*"


# -- added for the backend seam (app.backends.local) -----------------------------------------

SET_META_PATTERN = re.compile(re.escape(SET_META))


def context_dir(root: Path, context: str) -> Path:
    """The folder of ``context`` (a valid name) in the store at ``root``."""
    return contexts_dir(root) / context


def part_dir(context_folder: Path, part: str) -> Path:
    """The folder of a file-holding part (``EMBEDDINGS_DIR``, ``MODELS_DIR``) of a context."""
    return context_folder / part


ITEMS_DIR = "items"
ITEMS_SUFFIX = ".jsonl"


def staged_items_name(workflow_id: str, token: str) -> str:
    """File name of a workflow's staged items (``workflows/items/<workflow>.<token>.jsonl``)."""
    return f"{workflow_id}.{token}{ITEMS_SUFFIX}"


def rebuild_name(index_file: str) -> str:
    """The index being rebuilt aside, next to ``index_file`` (swapped in when complete)."""
    return f".{index_file}.rebuild"


__all__ = [
    "ANN_DIR",
    "ANN_FILE_PATTERN",
    "ANN_META",
    "ANN_META_PATTERN",
    "CATALOG_FILE",
    "CONTEXTS_DIR",
    "EMBEDDINGS_DIR",
    "INDEX_SUFFIX",
    "ITEMS_DIR",
    "ITEMS_SUFFIX",
    "LOG_SUFFIX",
    "MODELS_DIR",
    "MODEL_FILE_PATTERN",
    "MODEL_RECORD_PATTERN",
    "NO_TRUST_DIR",
    "SET_META",
    "SET_META_PATTERN",
    "SHARD_PATTERN",
    "SHARD_SUFFIX",
    "SPOOL_PURPOSE",
    "STAGING_PURPOSES",
    "STORE_LOCK",
    "STORE_MARKER",
    "TRACKER_FILE",
    "TRUST_DIR",
    "WORKFLOWS_DIR",
    "ann_file",
    "catalog",
    "collection_of",
    "context_dir",
    "contexts_dir",
    "index_files_glob",
    "index_name",
    "log_name",
    "marker",
    "model_file",
    "model_record",
    "model_stem",
    "part_dir",
    "rebuild_name",
    "shard_name",
    "staged_items_name",
    "staging_prefix",
    "tracker",
    "trust_dir",
    "workflows_dir",
]


# -- added by issue 11 (service access: tokens and the audit log) ----------------------------

ACCESS_FILE = "access.sqlite"
"""The store's service tokens and audit log (one SQLite file, created on first write)."""


def access_file(root: Path) -> Path:
    """The tokens-and-audit database of the store at ``root``."""
    return root / ACCESS_FILE


__all__ += ["ACCESS_FILE", "access_file"]


# -- added by issue 12 (object storage: files and documents over an fsspec URL) ---------------

OBJECT_BLOBS = "blobs"
"""Below a part's prefix: the uploaded file contents, named by their SHA-256."""
OBJECT_NAMES = "names"
"""Below a part's prefix: one small object per file key (``<item>/<file>``) holding the
SHA-256 and size of its blob; written after the upload, it is what makes the file visible."""
OBJECT_DOCS = "docs"
"""Below a part's prefix: the part's documents (``<item>/<document>``)."""
OBJECT_CACHE_SUFFIX = ".part"
"""A cache download in progress (``<sha256>.<random>.part``), renamed when verified."""


def object_part(base: str, context: str, part: str) -> str:
    """The prefix of a context's part in an object store (``<base>/<context>/<part>``)."""
    return f"{base}/{context}/{part}"


def object_blob(part_prefix: str, sha256: str) -> str:
    """The content-addressed object holding a file's bytes."""
    return f"{part_prefix}/{OBJECT_BLOBS}/{sha256}"


def object_name(part_prefix: str, key: str) -> str:
    """The object recording which blob a file key names."""
    return f"{part_prefix}/{OBJECT_NAMES}/{key}"


def object_doc(part_prefix: str, key: str) -> str:
    """The object holding a document."""
    return f"{part_prefix}/{OBJECT_DOCS}/{key}"


def cached_blob(cache: Path, sha256: str) -> Path:
    """A verified local copy of a blob in an object store's cache folder."""
    return cache / sha256


__all__ += [
    "OBJECT_BLOBS",
    "OBJECT_CACHE_SUFFIX",
    "OBJECT_DOCS",
    "OBJECT_NAMES",
    "cached_blob",
    "object_blob",
    "object_doc",
    "object_name",
    "object_part",
]


# -- added by issue 12 (models' high-water mark as a part document) ----------------------------

MODEL_HIGH_WATER = "high-water"
"""A model's document holding the highest version ever given out (kept when versions are
deleted, so a number is never given out twice): ``models/<name>/high-water`` on the embedded
backend, a document row on PostgreSQL."""
MODEL_DOCUMENT_PATTERN = re.compile(r"v(\d{4,})\.json|high-water")
"""The documents of a model: its version records and its high-water mark."""

__all__ += ["MODEL_DOCUMENT_PATTERN", "MODEL_HIGH_WATER"]


# -- added by issue 12 (a server store's local working folder) --------------------------------

WORK_ENV = "CTXSTORE_WORK"
"""The environment variable naming a server store's local working folder."""
WORK_HOME = "ctxstore/work"
"""Below ``$XDG_CACHE_HOME`` (``~/.cache``): one working folder per server store."""
OBJECT_CACHE_DIR = "object-cache"
"""In a working folder: verified local copies of the store's blobs."""


def work_dir(cache_home: Path, store_key: str) -> Path:
    """The default working folder of the server store identified by ``store_key``."""
    return cache_home / WORK_HOME / store_key


def object_cache_dir(work: Path) -> Path:
    """The blob cache inside a server store's working folder."""
    return work / OBJECT_CACHE_DIR


__all__ += ["OBJECT_CACHE_DIR", "WORK_ENV", "WORK_HOME", "object_cache_dir", "work_dir"]


# -- added by issue 12 (the workflow tracker of a server store) -------------------------------

OBJECT_WORKFLOWS = "_workflows"
"""Below a files URL: the staged workflow items of a server store (never a context name)."""


def object_items(base: str) -> str:
    """The folder of staged items files under a files URL (``<base>/_workflows/items``)."""
    return f"{base}/{OBJECT_WORKFLOWS}/{ITEMS_DIR}"


__all__ += ["OBJECT_WORKFLOWS", "object_items"]
