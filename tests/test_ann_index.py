"""Approximate search (docs/api.md "Embeddings", "Filtered and approximate search"): the
index built by ``build_index`` (optional extra ``ann``), used by ``search(exact=False)``,
checked like every file, rebuilt after the set changes, dropped with it, never exported.
Runs on the backend matrix; tests that read or damage the embedded files are marked."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import app

pytest.importorskip("usearch", reason="the optional extra 'ann' is not installed")

DIM = 24
ROOT = Path(__file__).resolve().parents[1]


def clustered(n: int, seed: int = 3, centres: int = 40) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, DIM))
    return (c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, DIM))).astype(np.float32)


def names(n: int, prefix: str = "v") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def recall(approx: list[list[app.Hit]], exact: list[list[app.Hit]]) -> float:
    got = [
        len({h.id for h in a} & {h.id for h in e}) / len(e)
        for a, e in zip(approx, exact, strict=True)
    ]
    return float(np.mean(got))


def ann_dir(ctx: app.Context, name: str) -> Path:
    return Path(ctx.path) / "ann" / name


def test_approximate_search_uses_the_index_with_exact_scores(ctx: app.Context) -> None:
    vectors = clustered(3000)
    ctx.embeddings.save("s", names(3000), vectors)
    assert ctx.embeddings.index_info("s") is None
    queries = clustered(40, seed=11)
    exact = ctx.embeddings.search("s", queries, k=10)
    assert ctx.embeddings.search("s", queries, k=10, exact=False) == exact  # no index: exact
    ctx.embeddings.build_index("s", expansion_search=200)
    info = ctx.embeddings.index_info("s")
    assert info is not None and info["kind"] == "hnsw" and info["count"] == 3000
    assert info["params"]["metric"] == "cosine" and len(info["sha256"]) == 64
    approx = ctx.embeddings.search("s", queries, k=10, exact=False)
    assert recall(approx, exact) >= 0.9
    for hits, truth in zip(approx, exact, strict=True):  # every returned score is exact
        by_id = {h.id: h.score for h in truth}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        for h in hits:
            if h.id in by_id:
                assert h.score == pytest.approx(by_id[h.id], rel=1e-5, abs=1e-6)
    one = ctx.embeddings.search("s", queries[0], k=5, exact=False)
    assert isinstance(one, list) and len(one) == 5 and isinstance(one[0], app.Hit)


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_other_metrics_and_a_metric_mismatch(ctx: app.Context, metric: str) -> None:
    vectors = clustered(1500)
    ctx.embeddings.save("s", names(1500), vectors)
    ctx.embeddings.build_index("s", metric=metric, dtype="f32", expansion_search=200)
    queries = clustered(20, seed=12)
    exact = ctx.embeddings.search("s", queries, k=5, metric=metric)
    approx = ctx.embeddings.search("s", queries, k=5, metric=metric, exact=False)
    assert recall(approx, exact) >= 0.9
    # an index built for another metric is not used: the search is exact
    assert ctx.embeddings.search("s", queries, k=5, exact=False) == ctx.embeddings.search(
        "s", queries, k=5
    )


def test_the_index_is_rebuilt_after_the_set_changes_and_dropped_with_it(
    ctx: app.Context,
) -> None:
    vectors = clustered(1200)
    ctx.embeddings.save("s", names(1000), vectors[:1000], mode="overwrite")
    ctx.embeddings.build_index("s", connectivity=8)
    first = ctx.embeddings.index_info("s")
    assert first is not None and first["count"] == 1000
    # append: rebuilt with the same parameters over all rows
    ctx.embeddings.save("s", names(200, "new"), vectors[1000:], mode="append")
    second = ctx.embeddings.index_info("s")
    assert second is not None and second["count"] == 1200
    assert second["params"] == first["params"] and second["file"] != first["file"]
    hit = ctx.embeddings.search("s", vectors[1100], k=1, exact=False)
    assert hit[0].id == "new100"  # an appended row is found through the rebuilt index
    # overwrite: rebuilt again
    ctx.embeddings.save("s", names(300, "o"), vectors[:300])
    third = ctx.embeddings.index_info("s")
    assert third is not None and third["count"] == 300
    assert ctx.embeddings.search("s", vectors[7], k=1, exact=False)[0].id == "o7"
    ctx.embeddings.delete("s")
    with pytest.raises(app.NotFoundError):
        ctx.embeddings.index_info("s")
    ctx.embeddings.save("s", names(10), vectors[:10])  # same name again: no index left over
    assert ctx.embeddings.index_info("s") is None
    assert ctx.embeddings.verify() == []


@pytest.mark.embedded_only("reads the ann folder's files")
def test_files_stored_per_set_and_old_ones_removed(ctx: app.Context) -> None:
    vectors = clustered(500)
    ctx.embeddings.save("s", names(500), vectors)
    ctx.embeddings.build_index("s")
    ctx.embeddings.build_index("s")  # a rebuild replaces the file
    files = sorted(p.name for p in ann_dir(ctx, "s").iterdir())
    info = ctx.embeddings.index_info("s")
    assert info is not None and files == sorted(["index.json", info["file"]])
    assert info["file"] == "hnsw-000002.usearch"
    ctx.embeddings.delete("s")
    assert not ann_dir(ctx, "s").exists()


@pytest.mark.embedded_only("damages the graph file on disk")
def test_a_damaged_index_is_found_on_load_and_by_verify(ctx: app.Context) -> None:
    vectors = clustered(800)
    ctx.embeddings.save("s", names(800), vectors)
    ctx.embeddings.build_index("s")
    info = ctx.embeddings.index_info("s")
    assert info is not None
    path = ann_dir(ctx, "s") / info["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))  # a new identity: the next open hashes it again
    with pytest.raises(app.IntegrityError) as err:
        ctx.embeddings.search("s", vectors[0], k=3, exact=False)
    assert str(path) in str(err.value)
    problems = ctx.embeddings.verify()
    assert len(problems) == 1 and str(path) in problems[0]
    assert not ctx.verify().ok
    ctx.embeddings.search("s", vectors[0], k=3)  # the exact search does not use it
    ctx.embeddings.build_index("s")  # a rebuild repairs it
    assert ctx.embeddings.verify() == []
    doc = ann_dir(ctx, "s") / "index.json"
    doc.write_bytes(doc.read_bytes().replace(b'"count"', b'"Count"'))
    assert any(str(doc) in p for p in ctx.embeddings.verify())
    with pytest.raises(app.IntegrityError):
        ctx.embeddings.search("s", vectors[0], k=3, exact=False)


@pytest.mark.embedded_only("plants a link in the ann folder")
def test_a_link_where_an_index_belongs_is_damage(ctx: app.Context, tmp_path: Path) -> None:
    vectors = clustered(300)
    ctx.embeddings.save("s", names(300), vectors)
    ctx.embeddings.build_index("s")
    elsewhere = tmp_path / "elsewhere"
    ann_dir(ctx, "s").rename(elsewhere)
    ann_dir(ctx, "s").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(app.IntegrityError) as err:
        ctx.embeddings.search("s", vectors[0], k=3, exact=False)
    assert str(ann_dir(ctx, "s")) in str(err.value)
    problems = ctx.embeddings.verify()
    assert len(problems) == 1 and str(ann_dir(ctx, "s")) in problems[0]
    assert not ctx.verify().ok


def test_the_index_is_never_exported(store: app.Store, ctx: app.Context, tmp_path: Path) -> None:
    vectors = clustered(600)
    ctx.embeddings.save("s", names(600), vectors)
    ctx.embeddings.build_index("s")
    dest = tmp_path / "ctx.tar.gz"
    manifest = store.export_context(ctx.name, dest)
    with tarfile.open(dest, "r:gz") as tf:
        members = tf.getnames()
    assert any(m.startswith("embeddings/s/") for m in members)
    assert not any(
        "ann" in m.split("/")[0] or m.endswith((".usearch", "index.json")) for m in members
    )
    assert not any("ann/" in f.path for f in manifest.files)
    other = app.open_store(tmp_path / "other")
    try:
        other.import_context(dest, name="copy")
        sets = other.context("copy", create=False).embeddings
        assert sets.index_info("s") is None
        q = vectors[:3]
        assert sets.search("s", q, k=4, exact=False) == sets.search("s", q, k=4)
        sets.build_index("s")
        assert sets.index_info("s") is not None
    finally:
        other.close()


def test_bad_kind_and_parameters_are_invalid_input(ctx: app.Context) -> None:
    ctx.embeddings.save("s", names(20), clustered(20))
    with pytest.raises(app.InvalidInput) as err:
        ctx.embeddings.build_index("s", kind="ivf")
    assert err.value.argument == "kind"
    for params in ({"metric": "hamming"}, {"connectivity": 0}, {"dtype": "f64"}, {"nope": 1}):
        with pytest.raises(app.InvalidInput) as err:
            ctx.embeddings.build_index("s", **params)
        assert err.value.argument == "params"
    with pytest.raises(app.NotFoundError):
        ctx.embeddings.build_index("missing")
    assert ctx.embeddings.index_info("s") is None


def test_without_the_extra_build_index_names_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['usearch'] = None; sys.modules['usearch.index'] = None\n"
        "import numpy as np, app\n"
        f"s = app.open_store({str(tmp_path / 'st')!r}); e = s.context('c').embeddings\n"
        "e.save('s', ['a', 'b'], np.eye(2, dtype=np.float32))\n"
        "print(e.search('s', np.ones(2), k=1, exact=False)[0].id)\n"
        "try:\n    e.build_index('s')\nexcept app.StorageError as exc:\n    print('ERR', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    assert lines[0] in ("a", "b")  # exact search works without the extra
    assert lines[1].startswith("ERR") and "'ann'" in lines[1] and "usearch" in lines[1]
