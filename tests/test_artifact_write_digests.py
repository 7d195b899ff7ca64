"""What a model or embedding save records about its file is what the file holds: the
whole-file SHA-256 and size, computed while the file is written (no read-back pass); a byte
changed anywhere is caught on load, also for an older record listing piece digests. Also:
the exact top-k search's threshold selection equals a full sort, ties included."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import app
from app.core.errors import IntegrityError
from app.core.similarity import BLOCK, SMALL_BLOCKS, TopK, _by_block_max
from app.formats.hashio import chunk_digests, dump_checked
from app.formats.modelcodecs import CHUNK


def model_files(ctx: app.Context, name: str, version: int, fmt: str) -> tuple[Path, Any]:
    folder = ctx.path / "models" / name
    record = json.loads((folder / f"v{version:04d}.json").read_text())
    return folder / f"v{version:04d}.{fmt}", record


@pytest.mark.embedded_only("reads the model file and its record in the context folder")
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_saved_model_record_matches_its_file(ctx: app.Context, fmt: str) -> None:
    torch.manual_seed(1)
    state = {"a": torch.randn(2500, 1024), "b": torch.randn(7), "c": torch.arange(5)}
    info = ctx.models.save("m", state, format=fmt)
    path, record = model_files(ctx, "m", info.version, fmt)
    data = path.read_bytes()
    assert len(data) > CHUNK  # more than one piece
    assert info.sha256 == record["sha256"] == hashlib.sha256(data).hexdigest()
    assert info.size_bytes == len(data)
    assert "chunk_sha256" not in record  # one digest, one pass
    back = ctx.models.load("m")
    assert all(torch.equal(back[k], v) for k, v in state.items())


@pytest.mark.embedded_only("changes a byte of the model file in the context folder")
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("older_record", [False, True])
def test_a_changed_byte_in_any_piece_is_caught(
    ctx: app.Context, fmt: str, older_record: bool
) -> None:
    torch.manual_seed(2)
    weights = torch.randn(2200, 1024)
    info = ctx.models.save("m", {"w": weights}, format=fmt)
    path, record = model_files(ctx, "m", info.version, fmt)
    pristine = path.read_bytes()
    if older_record:  # as versions saved by an earlier ctxstore: piece digests listed
        record["chunk_sha256"] = chunk_digests(pristine, CHUNK)
        record["chunk_bytes"] = CHUNK
        record.pop("checksum")
        path.with_name(f"v{info.version:04d}.json").write_bytes(dump_checked(record))
        assert torch.equal(ctx.models.load("m")["w"], weights)
    for position in (100, CHUNK + 1, len(pristine) - 1):
        damaged = bytearray(pristine)
        damaged[position] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(IntegrityError):
            ctx.models.load("m")
    path.write_bytes(pristine)
    assert torch.equal(ctx.models.load("m")["w"], weights)


@pytest.mark.embedded_only("hashes the shard file in the context folder")
def test_saved_shard_digest_matches_its_file(ctx: app.Context) -> None:
    vectors = np.random.default_rng(3).standard_normal((3000, 512), dtype=np.float32)
    info = ctx.embeddings.save("s", [f"r{i}" for i in range(3000)], vectors)
    shard = info.shards[0]
    data = (ctx.path / "embeddings" / "s" / shard.file).read_bytes()
    assert (shard.sha256, shard.size_bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    assert np.array_equal(ctx.embeddings.load("s", mmap=False).vectors, vectors)


# -- exact top-k by threshold ----------------------------------------------------------------


def top_reference(scores: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, Any]:
    """Columns of the k best scores of each row, ties by column (a full stable sort)."""
    return np.stack([np.lexsort((np.arange(row.size), -row))[:k] for row in scores])


@pytest.mark.parametrize("seed", range(6))
def test_block_threshold_selection_equals_a_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 12))
    cols = SMALL_BLOCKS * k * BLOCK + int(rng.integers(0, 3 * BLOCK))
    scores = rng.standard_normal((int(rng.integers(1, 9)), cols)).astype(np.float32)
    if seed % 2:
        scores = np.round(scores, 1)  # many ties, also at the k-th place
    picked = _by_block_max(scores, k)
    assert picked is not None
    vals, where = picked
    expected = top_reference(scores, k)
    assert np.array_equal(where, expected)
    assert np.array_equal(vals, np.take_along_axis(scores, expected, axis=1))


def test_block_threshold_declines_equal_scores_and_nan() -> None:
    k = 3
    cols = SMALL_BLOCKS * k * BLOCK
    assert _by_block_max(np.ones((2, cols), dtype=np.float32), k) is None  # all candidates
    nan = np.zeros((1, cols), dtype=np.float32)
    nan[0, :] = np.nan
    assert _by_block_max(nan, k) is None


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_topk_over_many_rows_equals_brute_force(metric: str) -> None:
    rng = np.random.default_rng(9)
    matrix = np.round(rng.standard_normal((20_000, 6)), 1).astype(np.float32)  # ties
    queries = rng.standard_normal((5, 6)).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1)
    term = {"cosine": 1 / norms, "l2": norms**2, "dot": None}[metric]
    top = TopK(queries, metric, 10)
    top.add(matrix[:12_000], None if term is None else term[:12_000], 0)
    top.add(matrix[12_000:], None if term is None else term[12_000:], 12_000)
    scores, rows = top.result()
    q64, m64 = queries.astype(np.float64), matrix.astype(np.float64)
    if metric == "l2":
        ref = -np.linalg.norm(m64[None, :, :] - q64[:, None, :], axis=2)
    elif metric == "cosine":
        ref = (q64 / np.linalg.norm(q64, axis=1, keepdims=True)) @ (m64 / norms[:, None]).T
    else:
        ref = q64 @ m64.T
    for qi in range(len(queries)):
        best = np.sort(ref[qi])[::-1][:10]
        got = -scores[qi] if metric == "l2" else scores[qi]
        assert np.allclose(got, best, atol=1e-4)  # the 10 best scores, best first
        assert np.allclose(ref[qi][rows[qi]], best, atol=1e-4)  # at the rows returned
