"""Approximate-search indexes of embedding sets (docs/api.md, "Embeddings"): build, find the
current one, drop, verify.

Each set has at most one index, kept through the backend seam like every part's files: the
graph in the ``ann`` part's ``FileStore`` under ``<set>/hnsw-NNNNNN.usearch`` and its commit
point ``<set>/index.json`` in the ``ann`` part's ``MetaStore`` (``app.formats.annindex``).
The index is derived data: it names the set content it was built from (the set's
``sha256``), so after the set changes it is stale and searches ignore it until it is rebuilt
(``EmbeddingStore`` rebuilds it under the writer lock after each save, and drops it with the
set). The ``ann`` part is no context part: export, import and merge never carry it.

A graph file's SHA-256 is checked the first time this process opens that file identity
(``filecheck.VERIFIED``, as for shards), then the file is memory-mapped read-only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from app.backends.protocols import FileDigest, FileStore, MetaStore
from app.core.artifacts import EmbeddingInfo
from app.core.clock import utc_iso
from app.core.errors import IntegrityError, StorageError, environmental
from app.core.layout import ANN_FILE_PATTERN, ANN_META, ann_file
from app.core.nofollow import lstat_as, open_regular
from app.formats import annindex
from app.formats.filecheck import VERIFIED, identity

CACHE_GRAPHS = 16


class Current(NamedTuple):
    """A set's usable index: the mapped graph and its parsed document."""

    graph: Any
    doc: dict[str, Any]


def doc_key(name: str) -> str:
    return f"{name}/{ANN_META}"


def is_current(doc: dict[str, Any], info: EmbeddingInfo) -> bool:
    """Whether the index ``doc`` was built from exactly the set ``info`` describes."""
    return bool(
        doc["set_sha256"] == info.sha256 and doc["count"] == info.count and doc["dim"] == info.dim
    )


class AnnIndexes:
    """The indexes of one context's sets, in the ``ann`` part's ``files`` and ``meta``."""

    def __init__(self, files: FileStore, meta: MetaStore) -> None:
        self._files = files
        self._meta = meta
        self._graphs: dict[str, tuple[tuple[int, ...], str, Any]] = {}
        self._docs: dict[tuple[str, bytes], dict[str, Any]] = {}
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return len(self._graphs)

    def document(self, name: str) -> dict[str, Any] | None:
        """The set's index document (checked), or None when it has none."""
        key = doc_key(name)
        data = self._meta.read(key)
        if data is None:
            return None
        with self._guard:
            parsed = self._docs.get((name, data))
        if parsed is None:  # parse (checksum, fields) once per document version
            parsed = annindex.parse(data, self._meta.where(key))
            with self._guard:
                if len(self._docs) >= CACHE_GRAPHS:
                    self._docs.pop(next(iter(self._docs)))
                self._docs[(name, data)] = parsed
        return parsed

    def current(self, name: str, info: EmbeddingInfo, metric: str) -> Current | None:
        """The set's index if it is current, built for ``metric`` and the extra is installed;
        else None (the caller searches exactly)."""
        doc = self.document(name)
        if doc is None or not is_current(doc, info) or doc["params"]["metric"] != metric:
            return None
        if not annindex.available():
            return None
        return Current(self._open(name, doc), doc)

    def _open(self, name: str, doc: dict[str, Any]) -> Any:
        key = f"{name}/{doc['file']}"
        path = self._files.local_path(key)
        st = lstat_as(path, "file")
        if st is None:
            raise IntegrityError(f"{path}: ANN index file is missing")
        ident = identity(st)
        with self._guard:
            hit = self._graphs.get(key)
        sha = doc["sha256"]
        if hit is not None and hit[0] == ident and hit[1] == sha and VERIFIED.known(ident, sha):
            return hit[2]
        fd = open_regular(path)
        try:
            ident = VERIFIED.check_fd(fd, path, doc["sha256"], doc["size_bytes"])
        finally:
            os.close(fd)
        graph = annindex.view_graph(path)
        if len(graph) != doc["count"] or graph.ndim != doc["dim"]:
            raise IntegrityError(f"{path}: the ANN index does not match its document")
        with self._guard:
            if len(self._graphs) >= CACHE_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = (ident, doc["sha256"], graph)
        return graph

    def build(
        self,
        name: str,
        info: EmbeddingInfo,
        blocks: Iterable[Any],
        kind: str,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """Build the set's index from its row ``blocks`` (shard vectors, in order) and commit
        it (file first, then the document; older files removed). The caller holds the writer
        lock and ``info`` is the set's current state."""
        graph = annindex.new_graph(info.dim, params)
        start = 0
        for vectors in blocks:
            annindex.add_rows(graph, vectors, start)
            start += vectors.shape[0]
        number = self._next_number(name)
        file = ann_file(number)
        key = f"{name}/{file}"
        stored = self._files.put(key, lambda path: FileDigest(*annindex.write_graph(path, graph)))
        doc = annindex.make_doc(
            kind=kind,
            params=params,
            file=file,
            sha256=stored.sha256,
            size=stored.size,
            set_sha256=info.sha256,
            count=info.count,
            dim=info.dim,
            built_at=utc_iso(),
            next_file=number + 1,
        )
        self._meta.write(doc_key(name), annindex.dump(doc))  # the commit point
        self._files.retain(name, {key})
        self._forget_cached(name)
        return doc

    def _next_number(self, name: str) -> int:
        used = [1]
        for key in self._files.list(name):
            found = ANN_FILE_PATTERN.fullmatch(key.rpartition("/")[2])
            if found is not None:
                used.append(int(found.group(1)) + 1)
        try:
            doc = self.document(name)
        except IntegrityError:  # replaced by the new document
            doc = None
        if doc is not None:
            used.append(int(doc["next_file"]))
        return max(used)

    def drop(self, name: str) -> None:
        """Remove the set's index (document first, then its files). Caller holds the lock."""
        self._meta.delete(doc_key(name))
        self._files.retain(name, set())
        self._forget_cached(name)

    def _forget_cached(self, name: str) -> None:
        prefix = name + "/"
        with self._guard:
            for key in [k for k in self._graphs if k.startswith(prefix)]:
                del self._graphs[key]

    def verify(self, exists: Callable[[str], bool]) -> list[str]:
        """Problems of every index: a damaged document, a missing or damaged graph file (size
        and SHA-256 re-hashed). A stale index is no damage (searches ignore it); nor is the
        index of a set that ``exists`` says is gone (dropped with its set)."""
        problems: list[str] = []
        try:
            items = self._meta.items()
        except IntegrityError as exc:
            return [str(exc)]
        for name in items:
            try:
                doc = self.document(name)
            except IntegrityError as exc:
                problems.append(str(exc))
                continue
            except StorageError as exc:
                if environmental(exc) is not None:
                    raise
                problems.append(str(exc))
                continue
            if doc is None or not exists(name):
                continue
            problem = self._files.check(f"{name}/{doc['file']}", doc["size_bytes"], doc["sha256"])
            if problem is not None:
                problems.append(problem)
        return problems


__all__ = ["AnnIndexes", "Current", "is_current"]
