"""Search support for ``EmbeddingStore``: the per-process cache of verified, memory-mapped
shards and the assembly of ``Hit`` lists from the top-k kernel's rows."""

from __future__ import annotations

import bisect
import threading
from pathlib import Path
from typing import Any

import numpy as np

from app.core.artifacts import EmbeddingInfo, Hit, ShardInfo
from app.core.errors import IntegrityError
from app.core.nofollow import lstat_as
from app.core.similarity import TopK, compute_dtype, row_term
from app.formats import npz
from app.formats.filecheck import VERIFIED, identity

Hits = list[Hit] | list[list[Hit]]
CACHE_SHARDS = 64


class CachedShard:
    """A verified, mapped shard with the per-metric row terms derived from its norms."""

    __slots__ = ("arrays", "ident", "sha256", "terms")

    def __init__(self, ident: tuple[int, ...], sha256: str, arrays: npz.ShardArrays) -> None:
        self.ident, self.sha256, self.arrays = ident, sha256, arrays
        self.terms: dict[str, Any] = {}

    def term(self, metric: str) -> Any:
        if metric not in self.terms:
            ct = compute_dtype(self.arrays.vectors.dtype)
            self.terms[metric] = row_term(self.arrays.norms, metric, ct)
        return self.terms[metric]


class ShardCache:
    """Shards mapped for search, keyed by their file-store key (``"<set>/<shard file>"``) and
    checked against the identity of the local file
    (device, inode, size, mtime, ctime; ``lstat``, never through a link). A shard's SHA-256
    is checked the first time this process opens that file identity (``filecheck.VERIFIED``,
    shared with ``load``) and again whenever the file changes. Thread-safe; bounded."""

    def __init__(self) -> None:
        self._entries: dict[str, CachedShard] = {}
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, path: Path, shard: ShardInfo, info: EmbeddingInfo) -> CachedShard:
        """The shard stored under ``key``, mapped from the local file ``path``."""
        st = lstat_as(path, "file")
        if st is None:
            raise IntegrityError(f"{path}: shard file is missing")
        with self._guard:
            hit = self._entries.get(key)
        ident = identity(st)
        if hit is not None and hit.ident == ident and VERIFIED.known(ident, shard.sha256):
            return hit
        arrays = npz.open_shard(
            path,
            count=shard.count,
            dim=info.dim,
            dtype=info.dtype,
            mmap=True,
            sha256=shard.sha256,
            size=shard.size_bytes,
        )
        entry = CachedShard(arrays.ident, shard.sha256, arrays)
        with self._guard:
            if len(self._entries) >= CACHE_SHARDS:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = entry
        return entry

    def forget(self, item: str) -> None:
        """Drop the entries of the shards of the set ``item``."""
        prefix = item + "/"
        with self._guard:
            for key in [k for k in self._entries if k.startswith(prefix)]:
                del self._entries[key]


def hit_lists(
    shards: list[CachedShard],
    starts: list[int],
    scores: Any,
    rows: Any,
    queries: Any,
    metric: str,
) -> list[list[Hit]]:
    """One list of ``Hit`` per query from the kernel's ``(scores, rows)``; rows are global
    row numbers over the shards (shard ``s`` starts at ``starts[s]``). For ``l2`` the
    distances of the hits are recomputed exactly from the vectors (no cancellation error)."""
    out: list[list[Hit]] = []
    for qi, row_ids in enumerate(rows.tolist()):
        where = [bisect.bisect_right(starts, r) - 1 for r in row_ids]
        local = [r - starts[s] for r, s in zip(row_ids, where, strict=True)]
        row_scores = scores[qi].tolist()
        if metric == "l2":
            picked = np.array(
                [shards[s].arrays.vectors[i] for s, i in zip(where, local, strict=True)],
                dtype=np.float64,
            ).reshape(len(local), -1)
            row_scores = np.linalg.norm(picked - queries[qi], axis=1).tolist()
        hits = [
            Hit.model_construct(id=str(shards[s].arrays.ids[i]), score=score)
            for s, i, score in zip(where, local, row_scores, strict=True)
        ]
        if metric == "l2":
            hits.sort(key=lambda h: h.score)
        out.append(hits)
    return out


def _best_first(hits: list[Hit], metric: str) -> bool:
    scores = [h.score for h in hits]
    return scores == sorted(scores, reverse=metric != "l2")


def search_result_ok(result: Hits, query: Any, k: int, metric: str) -> bool:
    """Postcondition of ``search``: at most ``k`` hits per query, best first, and one list
    per query row for a 2-D query."""
    lists: list[list[Hit]] = []
    for item in result:
        if isinstance(item, Hit):
            lists = [[h for h in result if isinstance(h, Hit)]]
            break
        lists.append(item)
    if np.ndim(query) == 2 and len(lists) != np.shape(query)[0]:
        return False
    return all(len(h) <= k and _best_first(h, metric) for h in lists)


# -- filtered search: candidates from a collection's filter ------------------------------------


class RowMaps:
    """Per set version (its ``sha256``): the row number of every id, built once from the
    verified shards' ids and kept (bounded) for later filtered searches."""

    def __init__(self, limit: int = 8) -> None:
        self._maps: dict[tuple[str, str], dict[str, int]] = {}
        self._limit = limit
        self._guard = threading.Lock()

    def get(self, name: str, info: EmbeddingInfo, shards: list[CachedShard]) -> dict[str, int]:
        key = (name, info.sha256)
        with self._guard:
            found = self._maps.get(key)
        if found is not None:
            return found
        ids: list[str] = []
        for entry in shards:
            ids += entry.arrays.ids.tolist()
        made = dict(zip(ids, range(len(ids)), strict=True))
        with self._guard:
            for old in [k for k in self._maps if k[0] == name]:
                del self._maps[old]
            if len(self._maps) >= self._limit:
                self._maps.pop(next(iter(self._maps)))
            self._maps[key] = made
        return made


def candidate_rows(row_of: dict[str, int], ids: list[str]) -> Any:
    """The sorted, unique row numbers of those of ``ids`` the set holds."""
    get = row_of.get
    rows = [r for r in map(get, ids) if r is not None]
    return np.unique(np.array(rows, dtype=np.int64))


def subset_top(
    shards: list[CachedShard], starts: list[int], rows: Any, queries: Any, metric: str, k: int
) -> tuple[Any, Any]:
    """Exact top-``k`` over the global ``rows`` only (sorted): ``(scores, rows)`` as
    ``TopK.result`` gives them, rows mapped back to global row numbers."""
    top = TopK(queries, metric, k)
    bounds = np.searchsorted(rows, starts)
    at = 0
    for s, entry in enumerate(shards):
        local = rows[bounds[s] : bounds[s + 1]] - starts[s]
        if local.size == 0:
            continue
        term = entry.term(metric)
        rows_of = np.asarray(entry.arrays.vectors)[local]  # plain view: no memmap overhead
        top.add(rows_of, None if term is None else term[local], at)
        at += local.size
    scores, picked = top.result()
    return scores, rows[picked] if rows.size else picked


# -- approximate search: candidates from the set's ANN index, re-scored exactly ----------------


def ann_top(
    graph: Any,
    doc: dict[str, Any],
    shards: list[CachedShard],
    starts: list[int],
    queries: Any,
    metric: str,
    k: int,
) -> list[list[tuple[int, float]]]:
    """Per query, ``(row, exact score)`` of the best ``k`` of the graph's candidates (``k``
    times the index's ``oversample`` of them), best first (ties: row order)."""
    count = starts[-1]
    fetch = min(count, k * int(doc["params"]["oversample"]))
    if fetch == 0:
        return [[] for _ in range(queries.shape[0])]
    graph.expansion_search = max(int(doc["params"]["expansion_search"]), fetch)
    q32 = np.ascontiguousarray(queries, dtype=np.float32)
    found = graph.search(q32, fetch)
    keys = np.atleast_2d(np.asarray(found.keys))
    if hasattr(found, "counts"):  # several queries: BatchMatches
        counts = np.atleast_1d(np.asarray(found.counts))
    else:  # one query: Matches holds only what it found
        counts = np.array([keys.shape[1]])
    out: list[list[tuple[int, float]]] = []
    for qi in range(queries.shape[0]):
        rows = keys[qi, : int(counts[qi])].astype(np.int64)
        rows = rows[(rows >= 0) & (rows < count)]
        scores = exact_scores(shards, starts, rows, queries[qi], metric)
        order = np.lexsort((rows, scores if metric == "l2" else -scores))[:k]
        out.append([(int(rows[i]), float(scores[i])) for i in order])
    return out


def gather(shards: list[CachedShard], starts: list[int], rows: Any, field: str) -> Any:
    """``vectors`` or ``ids`` (``field``) of the global ``rows``, in their order: one fancy
    index per shard on a plain view of the mapped array."""
    where = np.searchsorted(starts, rows, side="right") - 1
    parts = []
    order = []
    for s in np.unique(where).tolist():
        mask = where == s
        source = np.asarray(getattr(shards[s].arrays, field))
        parts.append(source[rows[mask] - starts[s]])
        order.append(np.flatnonzero(mask))
    if len(parts) == 1:
        return parts[0]
    out = np.concatenate(parts)
    back = np.empty(rows.size, dtype=np.int64)
    back[np.concatenate(order)] = np.arange(rows.size)
    return out[back]


def exact_scores(
    shards: list[CachedShard], starts: list[int], rows: Any, query: Any, metric: str
) -> Any:
    """The exact scores of global ``rows`` for one query (float64)."""
    if rows.size == 0:
        return np.empty(0)
    picked = np.asarray(gather(shards, starts, rows, "vectors"), dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    if metric == "l2":
        return np.asarray(np.linalg.norm(picked - q, axis=1))
    dots = picked @ q
    if metric == "dot":
        return np.asarray(dots)
    norms = np.linalg.norm(picked, axis=1) * float(np.linalg.norm(q))
    return np.asarray(np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0))


def ann_hit_lists(
    shards: list[CachedShard], starts: list[int], found: list[list[tuple[int, float]]]
) -> list[list[Hit]]:
    """``Hit`` lists from ``ann_top``'s rows and scores."""
    out: list[list[Hit]] = []
    for pairs in found:
        rows = np.array([row for row, _ in pairs], dtype=np.int64)
        ids = gather(shards, starts, rows, "ids").tolist() if pairs else []
        out.append(
            [
                Hit.model_construct(id=str(rid), score=score)
                for rid, (_, score) in zip(ids, pairs, strict=True)
            ]
        )
    return out
