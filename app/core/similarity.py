"""Exact top-k similarity search: blocked matrix products, ``argpartition`` per block, merge.

``TopK`` consumes one shard after another (``add``); memory stays bounded by the block size
whatever the size of the set, and the result equals a brute-force search over all rows.

Scores: ``cosine`` = x.q / (|x| |q|) (0 for a zero vector); ``dot`` = x.q; ``l2`` = |x - q|,
computed as sqrt(|x|^2 - 2 x.q + |q|^2) from the cached row norms. Higher is better for
``cosine``/``dot``, lower for ``l2``; results come best first, ties by row order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

METRICS = ("cosine", "dot", "l2")
BLOCK_ELEMENTS = 8 << 20  # elements of the shard matrix per block (32 MiB as float32)
SCORE_ELEMENTS = 16 << 20  # elements of the score matrix per block (64 MiB as float32)


def compute_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """Arithmetic type for a set stored as ``dtype``: float64 stays, others use float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def row_norms(vectors: Array) -> Array:
    """Euclidean norm of every row, in the compute dtype, without a full temporary copy."""
    ct = compute_dtype(vectors.dtype)
    out = np.empty(vectors.shape[0], dtype=ct)
    step = max(1, BLOCK_ELEMENTS // max(1, vectors.shape[1]))
    for start in range(0, vectors.shape[0], step):
        block = np.asarray(vectors[start : start + step], dtype=ct)
        np.sqrt(np.einsum("ij,ij->i", block, block), out=out[start : start + step])
    return out


def row_term(norms: Array, metric: str, dtype: np.dtype[Any]) -> Array | None:
    """What ``TopK.add`` needs per row: 1/|x| (0 for a zero row) for ``cosine``, |x|^2 for
    ``l2``, nothing for ``dot``."""
    if metric == "dot":
        return None
    n: Array = np.asarray(norms, dtype=dtype)
    out: Array = np.zeros_like(n)
    if metric == "cosine":
        np.divide(1.0, n, out=out, where=n > 0)
    else:
        np.multiply(n, n, out=out)
    return out


BLOCK = 256  # columns per block of ``_by_block_max``
SMALL_BLOCKS = 4  # below this many blocks per kept row, argpartition is as fast
CANDIDATES = 16  # more candidates per kept row than this: argpartition instead


def _by_block_max(scores: Array, k: int) -> tuple[Array, Array] | None:
    """The ``k`` best scores of each row and their columns (ties: lowest column first), by
    a threshold instead of a selection over every score: ``t`` = the ``k``-th largest of the
    rows' per-block maxima is at most the ``k``-th largest score (``k`` blocks each hold a
    score >= ``t``), so every score of the top ``k`` is >= ``t``; those few candidates are
    sorted exactly. ``None`` when it does not pay (NaN scores, or many equal scores)."""
    nq, b = scores.shape
    full = b // BLOCK
    maxima = scores[:, : full * BLOCK].reshape(nq, full, BLOCK).max(axis=2)
    if b > full * BLOCK:
        tail = scores[:, full * BLOCK :].max(axis=1, keepdims=True)
        maxima = np.concatenate([maxima, tail], axis=1)
    nb = maxima.shape[1]
    threshold = np.partition(maxima, nb - k, axis=1)[:, nb - k]
    if np.isnan(threshold).any():
        return None
    rows, cols = np.nonzero(scores >= threshold[:, None])
    if rows.size > CANDIDATES * k * nq:
        return None
    vals = scores[rows, cols]
    order = np.lexsort((cols, -vals, rows))  # by row, best first, then by column
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=nq))[:-1]])
    keep = np.arange(rows.size) - starts[rows] < k  # every row has >= k candidates
    return vals[keep].reshape(nq, k), cols[keep].reshape(nq, k)


class TopK:
    """Running exact top-``k`` of every query row over the shards ``add``-ed so far."""

    def __init__(self, queries: Array, metric: str, k: int) -> None:
        self.metric = metric
        self.k = k
        q = np.asarray(queries, dtype=queries.dtype)
        if metric == "cosine":
            qn = np.linalg.norm(q, axis=1, keepdims=True)
            q = np.divide(q, qn, out=np.zeros_like(q), where=qn > 0)
        self.queries = np.ascontiguousarray(q)
        self.qsq = np.einsum("ij,ij->i", q, q) if metric == "l2" else None
        self._vals: list[Array] = []
        self._idx: list[Array] = []

    def add(self, vectors: Array, term: Array | None, offset: int) -> None:
        """Score rows ``vectors`` (global row numbers start at ``offset``); ``term`` is
        ``row_term(norms, metric)`` of these rows (cache it: it depends on the rows only)."""
        n, dim = vectors.shape
        nq = self.queries.shape[0]
        if n == 0 or nq == 0:
            return
        ct = self.queries.dtype
        step = max(1, SCORE_ELEMENTS // nq)
        if vectors.dtype != ct:  # converted block by block: bound the copies too
            step = max(1, min(step, BLOCK_ELEMENTS // max(1, dim)))
        for start in range(0, n, step):
            block = np.asarray(vectors[start : start + step])
            if block.dtype != ct:
                block = block.astype(ct)
            # nq x b scores; one query is a matrix-vector product
            single = nq == 1
            scores = (block @ self.queries[0]).reshape(1, -1) if single else self.queries @ block.T
            if term is not None and self.metric == "cosine":
                scores *= term[start : start + step]
            elif term is not None and self.metric == "l2":
                scores *= 2.0
                scores -= term[start : start + step]
            self._keep(scores, offset + start)

    def _keep(self, scores: Array, offset: int) -> None:
        b = scores.shape[1]
        picked = _by_block_max(scores, self.k) if b >= SMALL_BLOCKS * self.k * BLOCK else None
        if picked is not None:
            vals, part = picked
        elif b > self.k:
            part = np.argpartition(scores, b - self.k, axis=1)[:, b - self.k :]
            vals = np.take_along_axis(scores, part, axis=1)
        else:
            part = np.broadcast_to(np.arange(b), scores.shape)
            vals = scores
        self._vals.append(vals)
        self._idx.append(part + offset)

    def result(self) -> tuple[Array, Array]:
        """``(scores, rows)``, each ``nq x min(k, rows seen)``, best first."""
        nq = self.queries.shape[0]
        if not self._vals:
            return np.empty((nq, 0)), np.empty((nq, 0), dtype=np.int64)
        vals = np.concatenate(self._vals, axis=1)
        idx = np.concatenate(self._idx, axis=1)
        kk = min(self.k, vals.shape[1])
        if vals.shape[1] > kk:
            part = np.argpartition(vals, vals.shape[1] - kk, axis=1)[:, vals.shape[1] - kk :]
            vals = np.take_along_axis(vals, part, axis=1)
            idx = np.take_along_axis(idx, part, axis=1)
        order = np.lexsort((idx, -vals), axis=1)
        vals = np.take_along_axis(vals, order, axis=1).astype(np.float64)
        idx = np.take_along_axis(idx, order, axis=1)
        if self.metric == "l2":
            assert self.qsq is not None
            vals = np.sqrt(np.maximum(self.qsq[:, None] - vals, 0.0))
        return vals, idx
