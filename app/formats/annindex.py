"""An embedding set's approximate-search (ANN) index: the HNSW graph file and its document.

The graph is built and read by the optional extra ``ann`` (``usearch``, imported lazily: without
it, building raises ``StorageError`` naming the extra). Keys in the graph are the set's global
row numbers (shard after shard, in order), so the index holds no ids of its own.

The document (``layout.ANN_META``, a checked JSON document like the set's ``metadata.json``)
is the index's commit point: which file, its size and SHA-256, the parameters, and the set it
was built from (the set's ``sha256``, row count and dimension). An index whose set changed
since is *stale*: searches ignore it. This module knows the formats, nothing of where they are
stored.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from app.core.atomic import fsync_dir, removed_on_failure
from app.core.errors import IntegrityError, StorageError, io_error
from app.core.layout import ANN_FILE_PATTERN
from app.formats.hashio import check_document, dump_checked, parse_checked, sha256_fd

FORMAT = "ctxstore.ann"
FORMAT_VERSION = 1
KINDS = ("hnsw",)
ENGINE = "usearch"
EXTRA = "ann"
METRICS = {"cosine": "cos", "dot": "ip", "l2": "l2sq"}
SCALARS = ("f32", "f16", "i8")
DEFAULTS: dict[str, Any] = {
    "metric": "cosine",
    "connectivity": 16,
    "expansion_add": 64,
    "expansion_search": 64,
    "dtype": "f16",
    "oversample": 3,
}
"""``build_index`` parameters and their defaults. ``oversample``: candidates fetched per hit
wanted, re-scored exactly from the set's vectors (scores of returned hits are exact)."""
ADD_BLOCK = 65_536  # rows handed to the engine per call (bounded copies of a mapped set)


def engine() -> Any:
    """The ``usearch.index`` module; ``StorageError`` naming the extra when missing."""
    try:
        import usearch.index as module
    except ImportError:
        raise StorageError(
            "build_index needs the optional extra 'ann' (pip install 'ctxstore[ann]', "
            "which installs usearch)"
        ) from None
    return module


def available() -> bool:
    """Whether the ``ann`` extra is installed."""
    try:
        engine()
    except StorageError:
        return False
    return True


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """The full parameter set (defaults filled in) or ``ValueError`` naming the bad one."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} (known: {', '.join(DEFAULTS)})")
    out = {**DEFAULTS, **params}
    if out["metric"] not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    if out["dtype"] not in SCALARS:
        raise ValueError(f"dtype must be one of {', '.join(SCALARS)}")
    for key in ("connectivity", "expansion_add", "expansion_search", "oversample"):
        value = out[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
            raise ValueError(f"{key} must be an int in 1..4096")
    return out


def new_graph(dim: int, params: dict[str, Any]) -> Any:
    """An empty engine index for ``dim``-dimensional rows with ``params``."""
    return engine().Index(
        ndim=dim,
        metric=METRICS[params["metric"]],
        dtype=params["dtype"],
        connectivity=params["connectivity"],
        expansion_add=params["expansion_add"],
        expansion_search=params["expansion_search"],
    )


def add_rows(graph: Any, vectors: Any, start: int) -> None:
    """Add ``vectors`` (any float array, e.g. a mapped shard) under keys ``start, start+1, ...``
    in blocks (a mapped shard is copied block by block, never whole)."""
    for at in range(0, vectors.shape[0], ADD_BLOCK):
        block = np.ascontiguousarray(vectors[at : at + ADD_BLOCK], dtype=np.float32)
        keys = np.arange(start + at, start + at + block.shape[0], dtype=np.uint64)
        graph.add(keys, block, threads=0)


def write_graph(path: Path, graph: Any) -> tuple[str, int]:
    """Write ``graph`` to ``path`` atomically and durably (temporary file beside it, fsync,
    rename, folder fsync); returns its ``(sha256, size)``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise io_error("writing", path, exc) from exc
    tmp = Path(tmp_name)
    with removed_on_failure(tmp, "writing", path):
        graph.save(str(tmp))
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fsync(fd)
            digest, size = sha256_fd(fd), os.fstat(fd).st_size
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    return digest, size


def view_graph(path: Path) -> Any:
    """The graph stored at ``path``, memory-mapped read-only (the caller checked the file's
    SHA-256 first); ``IntegrityError`` naming it if the engine cannot read it."""
    module = engine()
    try:
        graph = module.Index.restore(str(path), view=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise IntegrityError(f"{path}: unreadable ANN index ({str(exc)[:120]})") from None
    if graph is None:
        raise IntegrityError(f"{path}: unreadable ANN index")
    return graph


def make_doc(
    *,
    kind: str,
    params: dict[str, Any],
    file: str,
    sha256: str,
    size: int,
    set_sha256: str,
    count: int,
    dim: int,
    built_at: str,
    next_file: int,
) -> dict[str, Any]:
    """The document of an index built from a set (``set_sha256``, ``count`` rows of ``dim``)."""
    return {
        "document": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "engine": ENGINE,
        "params": params,
        "file": file,
        "sha256": sha256,
        "size_bytes": size,
        "set_sha256": set_sha256,
        "count": count,
        "dim": dim,
        "built_at": built_at,
        "next_file": next_file,
    }


def dump(doc: dict[str, Any]) -> bytes:
    return dump_checked(doc)


def parse(data: bytes, path: Path) -> dict[str, Any]:
    """The document ``data`` read from ``path``: checksum, header and fields checked
    (``IntegrityError`` naming ``path`` otherwise)."""
    doc = parse_checked(data, path)
    check_document(doc, path, FORMAT, FORMAT_VERSION)
    ints = ("size_bytes", "count", "dim", "next_file")
    strs = ("kind", "engine", "file", "sha256", "set_sha256", "built_at")
    bad = (
        any(not isinstance(doc.get(k), int) or isinstance(doc.get(k), bool) for k in ints)
        or any(not isinstance(doc.get(k), str) for k in strs)
        or not isinstance(doc.get("params"), dict)
        or doc.get("kind") not in KINDS
        or ANN_FILE_PATTERN.fullmatch(str(doc.get("file"))) is None
    )
    if bad:
        raise IntegrityError(f"{path}: inconsistent ANN index document")
    try:
        doc["params"] = check_params(doc["params"])
    except ValueError:
        raise IntegrityError(f"{path}: inconsistent ANN index document") from None
    return doc


__all__ = [
    "DEFAULTS",
    "EXTRA",
    "FORMAT",
    "KINDS",
    "METRICS",
    "add_rows",
    "available",
    "check_params",
    "dump",
    "engine",
    "make_doc",
    "new_graph",
    "parse",
    "view_graph",
    "write_graph",
]
