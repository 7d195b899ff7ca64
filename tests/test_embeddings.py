"""SPEC section 5 (embeddings), sentence by sentence, plus the format, integrity and search
guarantees of issue 3. File internals used: SPEC's layout ``embeddings/<name>/...npz +
metadata.json`` (to flip real bytes and to check that a failed call wrote nothing)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import app
from app.core.artifacts import EmbeddingInfo, EmbeddingSet, Hit
from app.formats import npz
from app.protocols import EmbeddingStoreProtocol

RNG = np.random.default_rng(20240601)


def rows(n: int, dim: int = 8, dtype: Any = np.float32, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(dtype)


def names(n: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def set_dir(ctx: app.Context, name: str) -> Path:
    return Path(ctx.path) / "embeddings" / name


def shard_files(ctx: app.Context, name: str) -> list[Path]:
    return sorted(set_dir(ctx, name).glob("*.npz"))


def snapshot(ctx: app.Context) -> dict[str, bytes]:
    root = Path(ctx.path) / "embeddings"
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def flip(path: Path, position: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ save / load basics ----


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(ctx: app.Context, dtype: Any, mmap: bool) -> None:
    vectors, ids = rows(50, 6, dtype), names(50)
    info = ctx.embeddings.save("words", ids, vectors, metadata={"model": "glove", "n": 1})
    es = ctx.embeddings.load("words", mmap=mmap)
    assert isinstance(es, EmbeddingSet)
    assert es.ids == ids and list(es.ids) == ids and all(type(i) is str for i in es.ids)
    assert es.vectors.dtype == dtype and es.vectors.shape == (50, 6)
    assert np.array_equal(es.vectors, vectors)
    assert es.metadata == {"model": "glove", "n": 1}
    assert es.info == info


@pytest.mark.embedded_only("hashes the NPZ shard file in the context folder")
def test_embedding_info_fields(ctx: app.Context) -> None:
    before = dt.datetime.now(dt.UTC)
    info = ctx.embeddings.save("words", names(10), rows(10, 4))
    assert isinstance(info, EmbeddingInfo)
    assert (info.name, info.count, info.dim, info.dtype) == ("words", 10, 4, "float32")
    created = dt.datetime.fromisoformat(info.created_at)
    assert before - dt.timedelta(seconds=1) <= created <= dt.datetime.now(dt.UTC)
    (shard,) = shard_files(ctx, "words")
    assert info.sha256 == hashlib.sha256(shard.read_bytes()).hexdigest()
    assert ctx.embeddings.info("words") == info


@pytest.mark.embedded_only("opens the shard files in the context folder with numpy")
def test_every_npz_opens_with_plain_numpy_load(ctx: app.Context) -> None:
    ctx.embeddings.save("words", names(20), rows(20, 5, np.float16))
    ctx.embeddings.save("words", names(7, "x"), rows(7, 5, np.float16, 1), mode="append")
    files = shard_files(ctx, "words")
    assert len(files) == 2
    got_ids: list[str] = []
    got_vectors = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            assert {"ids", "vectors"} <= set(z.files)
            got_ids += z["ids"].tolist()
            got_vectors.append(z["vectors"])
    assert got_ids == names(20) + names(7, "x")
    expected = np.concatenate([rows(20, 5, np.float16), rows(7, 5, np.float16, 1)])
    assert np.array_equal(np.concatenate(got_vectors), expected)


@pytest.mark.embedded_only("reads metadata.json and the shard files in the context folder")
def test_metadata_json_is_plain_json_listing_ordered_shards(ctx: app.Context) -> None:
    ctx.embeddings.save("words", names(3), rows(3), metadata={"source": "test"})
    ctx.embeddings.save("words", names(2, "b"), rows(2, seed=2), mode="append")
    doc = json.loads((set_dir(ctx, "words") / "metadata.json").read_text())
    assert doc["name"] == "words" and doc["count"] == 5 and doc["metadata"] == {"source": "test"}
    listed = [s["file"] for s in doc["shards"]]
    assert listed == [f.name for f in shard_files(ctx, "words")] and len(listed) == 2
    for s in doc["shards"]:
        data = (set_dir(ctx, "words") / s["file"]).read_bytes()
        assert s["sha256"] == hashlib.sha256(data).hexdigest()


def test_ids_accept_tuple_and_numpy_array(ctx: app.Context) -> None:
    ctx.embeddings.save("a", tuple(names(4)), rows(4))
    ctx.embeddings.save("b", np.array(names(4)), rows(4))
    assert ctx.embeddings.load("a").ids == ctx.embeddings.load("b").ids == names(4)


# ---------------------------------------------------------------------------- mmap ----


def test_mmap_load_maps_instead_of_reading(ctx: app.Context) -> None:
    vectors = rows(20_000, 256)  # 20 MB
    ctx.embeddings.save("big", names(20_000), vectors)
    io_file = Path("/proc/self/io")
    before = int(io_file.read_text().split("rchar:")[1].split()[0]) if io_file.exists() else 0
    es = ctx.embeddings.load("big", mmap=True)
    after = int(io_file.read_text().split("rchar:")[1].split()[0]) if io_file.exists() else 0
    assert isinstance(es.vectors, np.memmap) and isinstance(es.ids.array, np.memmap)
    assert not es.vectors.flags.writeable
    assert es.vectors.ctypes.data % 64 == 0  # aligned for BLAS
    if io_file.exists():
        assert after - before < vectors.nbytes // 20, "load(mmap=True) read the matrix"
    assert np.array_equal(es.vectors[123], vectors[123])
    full = ctx.embeddings.load("big", mmap=False)
    assert not isinstance(full.vectors, np.memmap) and np.array_equal(full.vectors, vectors)


# ----------------------------------------------------------------------- bad inputs ----


def nan_rows() -> np.ndarray[Any, Any]:
    v = rows(3)
    v[1, 2] = np.nan
    return v


def inf_rows() -> np.ndarray[Any, Any]:
    v = rows(3, dtype=np.float64)
    v[2, 0] = -np.inf
    return v


BAD_SAVES: list[tuple[str, Callable[[], tuple[Any, Any]], dict[str, Any], str]] = [
    ("nan", lambda: (names(3), nan_rows()), {}, "vectors"),
    ("inf", lambda: (names(3), inf_rows()), {}, "vectors"),
    ("rank1", lambda: (names(3), rows(3)[0]), {}, "vectors"),
    ("rank3", lambda: (names(3), rows(3).reshape(3, 2, 4)), {}, "vectors"),
    ("int", lambda: (names(3), np.ones((3, 4), dtype=np.int64)), {}, "vectors"),
    ("bool", lambda: (names(3), np.ones((3, 4), dtype=bool)), {}, "vectors"),
    ("complex", lambda: (names(3), np.ones((3, 4), dtype=np.complex64)), {}, "vectors"),
    ("dim0", lambda: (names(3), np.ones((3, 0), dtype=np.float32)), {}, "vectors"),
    ("too_few_ids", lambda: (names(2), rows(3)), {}, "ids"),
    ("too_many_ids", lambda: (names(4), rows(3)), {}, "ids"),
    ("duplicate_ids", lambda: (["a", "b", "a"], rows(3)), {}, "ids"),
    ("empty_id", lambda: (["a", "", "c"], rows(3)), {}, "ids"),
    ("non_str_id", lambda: (["a", 2, "c"], rows(3)), {}, "ids"),
    ("nul_id", lambda: (["a", "b\x00", "c"], rows(3)), {}, "ids"),
    ("ids_str", lambda: ("abc", rows(3)), {}, "ids"),
    ("ids_generator", lambda: ((f"g{i}" for i in range(3)), rows(3)), {}, "ids"),
    ("metadata_nan", lambda: (names(3), rows(3)), {"metadata": {"x": float("nan")}}, "metadata"),
    ("metadata_list", lambda: (names(3), rows(3)), {"metadata": [1, 2]}, "metadata"),
    ("mode", lambda: (names(3), rows(3)), {"mode": "merge"}, "mode"),
]


@pytest.mark.parametrize("case", BAD_SAVES, ids=[c[0] for c in BAD_SAVES])
def test_bad_save_raises_invalid_input_and_writes_nothing(
    ctx: app.Context, case: tuple[str, Callable[[], tuple[Any, Any]], dict[str, Any], str]
) -> None:
    _, make, kwargs, argument = case
    ctx.embeddings.save("words", names(3, "z"), rows(3, seed=9))
    before = snapshot(ctx)
    ids, vectors = make()
    for target in ("words", "fresh"):
        with pytest.raises(app.InvalidInput, match=argument):
            ctx.embeddings.save(target, ids, vectors, **kwargs)
    assert snapshot(ctx) == before
    assert [i.name for i in ctx.embeddings.list()] == ["words"]


@pytest.mark.parametrize(
    "bad", ["../evil", "", ".", "..", "a/b", "x" * 65, "-lead", 5, None, "a b"]
)
def test_bad_names_rejected_before_touching_files(ctx: app.Context, bad: Any) -> None:
    for call in (
        lambda: ctx.embeddings.save(bad, names(2), rows(2)),
        lambda: ctx.embeddings.load(bad),
        lambda: ctx.embeddings.search(bad, rows(1)[0]),
        lambda: ctx.embeddings.info(bad),
        lambda: ctx.embeddings.delete(bad),
    ):
        with pytest.raises(app.InvalidInput, match="name"):
            call()
    assert not (Path(ctx.path) / "embeddings").exists()
    assert not (Path(ctx.path).parent / "evil").exists()


def test_append_dimension_mismatch_and_duplicates_write_nothing(ctx: app.Context) -> None:
    ctx.embeddings.save("words", names(5), rows(5, 4))
    before = snapshot(ctx)
    with pytest.raises(app.InvalidInput, match="vectors: dimension 3"):
        ctx.embeddings.save("words", names(2, "n"), rows(2, 3), mode="append")
    with pytest.raises(app.InvalidInput, match="ids: 1 ids already"):
        ctx.embeddings.save("words", ["new", "w3"], rows(2, 4), mode="append")
    with pytest.raises(app.InvalidInput, match="ids"):
        ctx.embeddings.save("words", ["n1", "n1"], rows(2, 4), mode="append")
    assert snapshot(ctx) == before
    assert ctx.embeddings.info("words").count == 5


def test_nothing_written_when_overflowing_the_sets_dtype(ctx: app.Context) -> None:
    ctx.embeddings.save("half", names(2), rows(2, 4, np.float16))
    before = snapshot(ctx)
    big = np.full((1, 4), 1e6, dtype=np.float32)
    with pytest.raises(app.InvalidInput, match="float16"):
        ctx.embeddings.save("half", ["big"], big, mode="append")
    assert snapshot(ctx) == before


# ------------------------------------------------------------------- modes / listing ----


@pytest.mark.embedded_only("lists the shard files in the set's folder")
def test_append_adds_a_shard_and_overwrite_replaces(ctx: app.Context) -> None:
    a, b = rows(4, 3, seed=1), rows(3, 3, seed=2)
    ctx.embeddings.save("s", names(4), a, metadata={"v": 1})
    first = shard_files(ctx, "s")
    info = ctx.embeddings.save("s", names(3, "b"), b, mode="append")
    assert shard_files(ctx, "s")[0] == first[0] and len(shard_files(ctx, "s")) == 2
    assert info.count == 7 and [s.count for s in info.shards] == [4, 3]
    assert info.metadata == {"v": 1}  # None keeps the metadata on append
    es = ctx.embeddings.load("s", mmap=True)
    assert es.ids == names(4) + names(3, "b")
    assert np.array_equal(es.vectors, np.concatenate([a, b]))
    info = ctx.embeddings.save("s", ["only"], rows(1, 2), metadata={"v": 2})
    assert (info.count, info.dim, info.metadata) == (1, 2, {"v": 2})
    assert len(shard_files(ctx, "s")) == 1 and shard_files(ctx, "s")[0] not in first
    assert ctx.embeddings.load("s").ids == ["only"]


def test_append_to_missing_set_creates_it(ctx: app.Context) -> None:
    info = ctx.embeddings.save("new", names(2), rows(2), mode="append")
    assert info.count == 2 and ctx.embeddings.load("new").ids == names(2)


def test_append_casts_to_the_sets_dtype(ctx: app.Context) -> None:
    ctx.embeddings.save("s", names(2), rows(2, 4, np.float32))
    ctx.embeddings.save("s", ["x"], rows(1, 4, np.float64, 5), mode="append")
    es = ctx.embeddings.load("s", mmap=False)
    assert es.vectors.dtype == np.float32 and es.info is not None
    assert es.info.dtype == "float32"
    assert np.allclose(es.vectors[2], rows(1, 4, np.float64, 5)[0])


def test_list_info_delete(ctx: app.Context) -> None:
    assert ctx.embeddings.list() == []
    for n in ("b", "a", "c"):
        ctx.embeddings.save(n, names(2), rows(2))
    assert [i.name for i in ctx.embeddings.list()] == ["a", "b", "c"]
    ctx.embeddings.delete("b")
    assert [i.name for i in ctx.embeddings.list()] == ["a", "c"]
    assert not set_dir(ctx, "b").exists()
    for call in (
        lambda: ctx.embeddings.load("b"),
        lambda: ctx.embeddings.info("b"),
        lambda: ctx.embeddings.delete("b"),
        lambda: ctx.embeddings.search("b", rows(1)[0]),
    ):
        with pytest.raises(app.NotFoundError):
            call()


def test_store_meets_protocol_and_persists_across_reopen(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        ctx = s.context("c")
        assert isinstance(ctx.embeddings, EmbeddingStoreProtocol)
        ctx.embeddings.save("p", names(3), rows(3))
    with app.open_store(store_root) as s:
        es = s.context("c").embeddings.load("p", mmap=False)
        assert es.ids == names(3) and np.array_equal(es.vectors, rows(3))


# --------------------------------------------------------------------------- search ----


def reference(
    matrix: np.ndarray[Any, Any], query: np.ndarray[Any, Any], metric: str
) -> np.ndarray[Any, Any]:
    """Brute-force scores in float64, independent of the library."""
    m, q = matrix.astype(np.float64), query.astype(np.float64)
    if metric == "dot":
        return m @ q
    if metric == "cosine":
        return (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    return np.linalg.norm(m - q, axis=1)


def check_hits(
    hits: list[Hit], ids: list[str], scores: np.ndarray[Any, Any], metric: str, k: int
) -> None:
    order = np.argsort(scores if metric == "l2" else -scores, kind="stable")[:k]
    assert len(hits) == min(k, len(ids))
    assert all(isinstance(h, Hit) and isinstance(h.id, str) for h in hits)
    got = [h.score for h in hits]
    assert got == sorted(got, reverse=metric != "l2")  # best first
    position = {rid: i for i, rid in enumerate(ids)}
    tol = 1e-4 * max(1.0, float(np.abs(scores).max()))
    for rank, h in enumerate(hits):
        assert abs(h.score - scores[position[h.id]]) <= tol  # the hit's true score
        assert abs(h.score - scores[order[rank]]) <= tol  # equals brute force at this rank


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_search_equals_brute_force_across_shards(ctx: app.Context, metric: str, dtype: Any) -> None:
    dim = 24
    parts = [rows(n, dim, dtype, seed) for n, seed in ((300, 1), (17, 2), (450, 3))]
    all_ids: list[str] = []
    for i, part in enumerate(parts):
        ids = names(part.shape[0], f"s{i}-")
        ctx.embeddings.save("set", ids, part, mode="append")
        all_ids += ids
    matrix = np.concatenate(parts)
    queries = rows(6, dim, np.float64, 99)
    queries[0] = matrix[10]  # an exact match
    for k in (1, 10, 50):
        batch = ctx.embeddings.search("set", queries, k=k, metric=metric)
        assert isinstance(batch, list) and len(batch) == len(queries)
        for q, hits in zip(queries, batch, strict=True):
            check_hits(hits, all_ids, reference(matrix, q, metric), metric, k)
        single = ctx.embeddings.search("set", queries[2], k=k, metric=metric)
        check_hits(single, all_ids, reference(matrix, queries[2], metric), metric, k)
        assert [h.id for h in single] == [h.id for h in batch[2]]
    best = ctx.embeddings.search("set", matrix[10], k=1, metric=metric)
    if metric != "dot":
        assert best[0].id == all_ids[10]


def test_search_large_k_zero_vectors_and_list_queries(ctx: app.Context) -> None:
    vectors = rows(5, 3)
    vectors[4] = 0.0
    ctx.embeddings.save("s", names(5), vectors)
    hits = ctx.embeddings.search("s", [1.0, 0.0, 0.0], k=100)
    assert len(hits) == 5 and {h.id for h in hits} == set(names(5))
    assert next(h.score for h in hits if h.id == "w4") == 0.0  # cosine of a zero row
    zero = ctx.embeddings.search("s", np.zeros(3), k=2, metric="cosine")
    assert [h.score for h in zero] == [0.0, 0.0]
    assert ctx.embeddings.search("s", np.zeros((0, 3)), k=2) == []


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"metric": "manhattan"}, "metric"),
        ({"k": 0}, "k"),
        ({"k": -3}, "k"),
        ({"k": True}, "k"),
        ({"k": 2.5}, "k"),
        ({"query": np.ones(5)}, "query: dimension 5"),
        ({"query": np.ones((2, 2))}, "query: dimension 2"),
        ({"query": np.full(4, np.nan)}, "query"),
        ({"query": np.array([1.0, np.inf, 0, 0])}, "query"),
        ({"query": np.ones((1, 1, 4))}, "query"),
        ({"query": np.array(["a", "b", "c", "d"])}, "query"),
        ({"query": 3.0}, "query"),
    ],
)
def test_bad_search_raises_invalid_input(
    ctx: app.Context, kwargs: dict[str, Any], argument: str
) -> None:
    ctx.embeddings.save("s", names(3), rows(3, 4))
    args = {"query": np.ones(4), "k": 2, "metric": "cosine"} | kwargs
    query = args.pop("query")
    with pytest.raises(app.InvalidInput, match=argument):
        ctx.embeddings.search("s", query, **args)


# ------------------------------------------------------------------------ integrity ----


@pytest.mark.embedded_only("flips bits of the shard file in the context folder")
def test_flipped_vector_bit_detected_by_load_search_and_verify(store: app.Store) -> None:
    ctx = store.context("c")
    ctx.embeddings.save("s", names(100), rows(100, 16))
    (shard,) = shard_files(ctx, "s")
    flip(shard, npz.layout(shard)["vectors"].offset + 16 * 4 * 50 + 3, bit=6)
    with pytest.raises(app.IntegrityError, match=re.escape(shard.name)):
        ctx.embeddings.load("s", mmap=False)
    with pytest.raises(app.IntegrityError, match=re.escape(shard.name)):
        ctx.embeddings.search("s", rows(1, 16)[0])
    report = ctx.verify()
    assert not report.ok and any(shard.name in p for p in report.problems)


@pytest.mark.embedded_only("flips bits of the shard file in the context folder")
def test_search_notices_damage_after_a_clean_first_search(ctx: app.Context) -> None:
    ctx.embeddings.save("s", names(50), rows(50, 8))
    assert len(ctx.embeddings.search("s", rows(1, 8)[0], k=3)) == 3
    (shard,) = shard_files(ctx, "s")
    flip(shard, npz.layout(shard)["norms"].offset + 4)
    with pytest.raises(app.IntegrityError, match=re.escape(shard.name)):
        ctx.embeddings.search("s", rows(1, 8)[0])


@pytest.mark.embedded_only("flips bits of the shard file in the context folder")
def test_any_flipped_bit_never_loads_wrong_data(ctx: app.Context) -> None:
    vectors, ids = rows(40, 8), names(40)
    ctx.embeddings.save("s", ids, vectors)
    (shard,) = shard_files(ctx, "s")
    pristine = shard.read_bytes()
    rng = np.random.default_rng(5)
    raised = 0
    for position in rng.choice(len(pristine), size=60, replace=False):
        data = bytearray(pristine)
        data[int(position)] ^= 1 << int(rng.integers(8))
        shard.write_bytes(bytes(data))
        assert any(shard.name in p for p in ctx.embeddings.verify())
        try:
            es = ctx.embeddings.load("s", mmap=False)
        except app.IntegrityError as exc:
            assert shard.name in str(exc)
            raised += 1
            continue
        assert es.ids == ids and np.array_equal(es.vectors, vectors)  # flip was harmless
    assert raised > 30
    shard.write_bytes(pristine)
    assert ctx.embeddings.verify() == []


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.embedded_only("truncates the shard file in the context folder")
def test_truncated_shard_raises_integrity_error(ctx: app.Context, mmap: bool) -> None:
    ctx.embeddings.save("s", names(30), rows(30, 8))
    (shard,) = shard_files(ctx, "s")
    with open(shard, "r+b") as fh:
        fh.truncate(shard.stat().st_size - 100)
    with pytest.raises(app.IntegrityError, match=re.escape(shard.name)):
        ctx.embeddings.load("s", mmap=mmap)
    assert any("size" in p and shard.name in p for p in ctx.embeddings.verify())


@pytest.mark.embedded_only("removes the shard file from the context folder")
def test_missing_shard_reported(ctx: app.Context) -> None:
    ctx.embeddings.save("s", names(3), rows(3))
    (shard,) = shard_files(ctx, "s")
    shard.unlink()
    with pytest.raises(app.IntegrityError, match="missing"):
        ctx.embeddings.load("s")
    assert any("missing" in p for p in ctx.verify().problems)


@pytest.mark.embedded_only("flips bits of metadata.json in the context folder")
def test_flipped_metadata_json_detected(ctx: app.Context) -> None:
    ctx.embeddings.save("s", names(3), rows(3), metadata={"about": "colours"})
    meta = set_dir(ctx, "s") / "metadata.json"
    pristine = meta.read_bytes()
    for position in range(0, len(pristine), max(1, len(pristine) // 40)):
        for bit in (0, 3, 5):
            data = bytearray(pristine)
            data[position] ^= 1 << bit
            meta.write_bytes(bytes(data))
            with pytest.raises(app.IntegrityError, match=r"metadata\.json"):
                ctx.embeddings.info("s")
            assert any("metadata.json" in p for p in ctx.verify().problems)
    meta.write_bytes(pristine)
    assert ctx.verify().ok


@pytest.mark.embedded_only("rewrites metadata.json in the context folder")
def test_newer_metadata_format_raises_schema_version_error(ctx: app.Context) -> None:
    from app.formats.hashio import dump_checked

    ctx.embeddings.save("s", names(3), rows(3))
    meta = set_dir(ctx, "s") / "metadata.json"
    doc = json.loads(meta.read_text())
    doc["format_version"] = 99
    meta.write_bytes(dump_checked(doc))
    with pytest.raises(app.SchemaVersionError):
        ctx.embeddings.load("s")


@pytest.mark.embedded_only("rewrites metadata.json in the context folder")
def test_crafted_metadata_cannot_point_outside_the_set(ctx: app.Context) -> None:
    from app.formats.hashio import dump_checked

    ctx.embeddings.save("s", names(3), rows(3))
    meta = set_dir(ctx, "s") / "metadata.json"
    doc = json.loads(meta.read_text())
    doc["shards"][0]["file"] = "../../../context.json"
    meta.write_bytes(dump_checked(doc))
    with pytest.raises(app.IntegrityError, match="inconsistent"):
        ctx.embeddings.load("s")


# ----------------------------------------------------------------------- concurrency ----


def test_readers_see_whole_sets_while_a_writer_overwrites(
    ctx: app.Context, backend_kind: str
) -> None:
    versions = [(names(200, f"v{v}-"), rows(200, 8, seed=v)) for v in range(6)]
    ctx.embeddings.save("s", *versions[0])
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                es = ctx.embeddings.load("s", mmap=True)
                v = int(es.ids[0][1 : es.ids[0].index("-")])
                assert es.ids == versions[v][0]
                assert np.array_equal(es.vectors, versions[v][1])
                hits = ctx.embeddings.search("s", versions[v][1][0], k=1)
                assert len(hits) == 1 and hits[0].id.startswith("v")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for v in range(1, 6):
        ctx.embeddings.save("s", *versions[v])
    done.set()
    for t in readers:
        t.join()
    assert errors == []
    if backend_kind == "embedded":  # the set's folder: one shard, no temporary file left
        assert len(shard_files(ctx, "s")) == 1
        assert not [p for p in set_dir(ctx, "s").iterdir() if p.name.endswith(".tmp")]


def test_saves_from_two_processes_serialise(store_root: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, app\n"
        "with app.open_store(sys.argv[1]) as s:\n"
        "    ctx = s.context('c')\n"
        "    for i in range(5):\n"
        "        ids = [f'{sys.argv[2]}-{i}-{j}' for j in range(50)]\n"
        "        ctx.embeddings.save('s', ids, np.ones((50, 4), np.float32), mode='append')\n"
    )
    with app.open_store(store_root) as s:
        s.context("c")
    env = {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(store_root), tag], env=env)
        for tag in ("p", "q")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with app.open_store(store_root) as s:
        ctx = s.context("c")
        info = ctx.embeddings.info("s")
        assert info.count == 500 and len(info.shards) == 10
        assert len(set(ctx.embeddings.load("s").ids)) == 500
        assert ctx.verify().ok


# ------------------------------------------------------------------------ zip format ----


@pytest.mark.parametrize("limit", [0xFFFFFFFF, 100])
@pytest.mark.embedded_only("opens the shard file in the context folder as a zip")
def test_shards_are_standard_zips_also_with_zip64_records(
    ctx: app.Context, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    import zipfile

    from app.formats import zipstream

    monkeypatch.setattr(zipstream, "LIMIT", limit)  # 100: every size/offset goes to zip64
    vectors = rows(300, 16, np.float64)
    ctx.embeddings.save("z", names(300), vectors)
    (shard,) = shard_files(ctx, "z")
    with zipfile.ZipFile(shard) as zf:
        assert zf.testzip() is None  # every member's CRC-32 checks
        infos = {i.filename: i for i in zf.infolist()}
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos.values())
    with np.load(shard, allow_pickle=False) as z:
        assert np.array_equal(z["vectors"], vectors) and z["ids"].tolist() == names(300)
    es = ctx.embeddings.load("z", mmap=True)
    assert np.array_equal(es.vectors, vectors) and es.vectors.ctypes.data % 64 == 0
    assert ctx.embeddings.search("z", vectors[7], k=1)[0].id == "w7"


def test_equal_content_gives_identical_files(ctx: app.Context) -> None:
    a = ctx.embeddings.save("a", names(20), rows(20))
    b = ctx.embeddings.save("b", names(20), rows(20))
    assert a.sha256 == b.sha256


def test_empty_set_round_trips_and_searches(ctx: app.Context) -> None:
    info = ctx.embeddings.save("e", [], np.empty((0, 4), dtype=np.float32))
    assert (info.count, info.dim) == (0, 4)
    for mmap in (True, False):
        es = ctx.embeddings.load("e", mmap=mmap)
        assert es.ids == [] and es.vectors.shape == (0, 4)
    assert ctx.embeddings.search("e", np.ones(4)) == []
    ctx.embeddings.save("e", ["a"], np.ones((1, 4), dtype=np.float32), mode="append")
    assert [h.id for h in ctx.embeddings.search("e", np.ones(4))] == ["a"]
    assert ctx.verify().ok
