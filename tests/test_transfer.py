"""Whole contexts: save/load round trips, export/import with each ``on_conflict``."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import numpy as np
import orjson
import pytest
from recdata import analogy

import app
from app.core.transfer_types import ContextState, Manifest


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file below ``root`` with its bytes (locks excluded: they are empty)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock" and not p.name.endswith((".sqlite-shm",))
    }


def fill(ctx: app.Context, n: int = 50) -> None:
    ctx.append("analogies", [analogy(i) for i in range(n)], batch_id="first")
    ctx.append("analogies", [analogy(1, note="v2")])
    ctx.delete("analogies", ["a2"])
    ctx.append("notes", [{"id": "n1", "text": "hello", "meta": {"k": [1, 2]}}])


def test_save_load_round_trip_records_and_embeddings(store: app.Store) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    from app.core.artifacts import EmbeddingSet

    es = EmbeddingSet(ids=[f"e{i}" for i in range(20)], vectors=vectors, metadata={"m": "x"})
    state = ContextState(
        collections={"analogies": [analogy(i) for i in range(30)], "empty": []},
        embeddings={"vec": es},
    )
    manifest = store.save_context("saved", state)
    assert isinstance(manifest, Manifest)
    assert manifest.collections == {"analogies": 30, "empty": 0}
    assert manifest.embeddings["vec"]["count"] == 20
    loaded = store.load_context("saved")
    assert loaded.collections == state.collections
    assert loaded.embeddings == state.embeddings
    assert loaded.models == {}
    # save replaces the content entirely
    store.save_context("saved", ContextState(collections={"notes": [{"id": "x", "v": 1}]}))
    again = store.load_context("saved")
    assert again.collections == {"notes": [{"id": "x", "v": 1}]}
    assert again.embeddings == {}
    assert store.context("saved").verify().ok


@pytest.mark.embedded_only("compares the context folder's files before and after")
def test_save_rejects_bad_state_and_leaves_context(store: app.Store) -> None:
    fill(store.context("c"))
    before = tree(store.root / "contexts" / "c")
    bad = ContextState(collections={"analogies": [{"id": "x", "quality_score": 3.0}]})
    with pytest.raises(app.InvalidInput):
        store.save_context("c", bad)
    with pytest.raises(app.InvalidInput):
        store.save_context("c", ContextState(collections={"../x": []}))
    with pytest.raises(app.InvalidInput):
        store.save_context("c", 42)
    assert tree(store.root / "contexts" / "c") == before
    assert sorted(p.name for p in (store.root / "contexts").iterdir()) == ["c"]


def test_models_round_trip(store: app.Store) -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(3, 2)
    store.save_context("m", ContextState(models={"net": net}))
    loaded = store.load_context("m").models["net"]
    assert set(loaded) == {"weight", "bias"}
    assert torch.equal(loaded["weight"], net.state_dict()["weight"])


def test_export_archive_is_plain_tar_gz_with_manifest_first(
    store: app.Store, tmp_path: Path
) -> None:
    ctx = store.context("src")
    fill(ctx)
    dest = tmp_path / "out.tar.gz"
    manifest = store.export_context("src", dest)
    assert manifest.context == "src"
    assert manifest.collections == {"analogies": 49, "notes": 1}
    assert manifest.library_version == app.__version__
    with tarfile.open(dest, "r:gz") as tf:
        names = tf.getnames()
        assert names[0] == "manifest.json"
        on_disk = orjson.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        log = tf.extractfile("analogies.jsonl").read()  # type: ignore[union-attr]
    assert Manifest.model_validate(on_disk) == manifest
    assert not any(n.endswith((".sqlite", ".lock")) for n in names)
    assert {f.path for f in manifest.files} == set(names[1:])
    assert log.count(b'{"put":') == 49  # compacted: superseded versions and tombstones gone
    assert b'"a2"' not in log
    gzip.decompress(dest.read_bytes())
    with tarfile.open(dest, "r|gz") as stream:  # one gzip member: stream readers see it all
        assert [m.name for m in stream] == names
    assert not list(tmp_path.glob(".*"))  # no temp file left beside the archive
    assert not [p for p in (store.root / "contexts").iterdir() if p.name.startswith(".")]


def test_import_new_name_and_fail_conflict(store: app.Store, tmp_path: Path) -> None:
    fill(store.context("src"))
    dest = tmp_path / "a.tar.gz"
    store.export_context("src", dest)
    other = app.open_store(tmp_path / "other")
    try:
        m = other.import_context(dest)
        assert m.context == "src"
        ctx = other.context("src", create=False)
        assert ctx.count("analogies") == 49
        assert ctx.get("analogies", "a1")["note"] == "v2"
        with pytest.raises(app.NotFoundError):
            ctx.get("analogies", "a2")
        assert ctx.verify().ok
        # batch ids survive an export/import: appending batch "first" again is a duplicate
        again = [analogy(i) for i in range(50)]
        assert ctx.append("analogies", again, batch_id="first").duplicate
        with pytest.raises(app.ConflictError):  # the request digest travels too
            ctx.append("analogies", [analogy(0)], batch_id="first")
        before = tree(other.root)
        with pytest.raises(app.ConflictError):
            other.import_context(dest)
        with pytest.raises(app.ConflictError):
            other.import_context(dest, name="src", on_conflict="fail")
        assert tree(other.root) == before
        other.import_context(dest, name="copy")
        assert other.contexts() == ["copy", "src"]
        cat = orjson.loads((other.root / "contexts" / "copy" / "context.json").read_bytes())
        assert cat["context"] == "copy"
        assert other.context("copy").count("notes") == 1
    finally:
        other.close()


@pytest.mark.embedded_only("lists the contexts folder for leftover staging folders")
def test_import_overwrite_replaces_content(store: app.Store, tmp_path: Path) -> None:
    fill(store.context("src"))
    dest = tmp_path / "a.tar.gz"
    store.export_context("src", dest)
    target = store.context("dst")
    target.append("analogies", [analogy(500)])
    target.append("extra", [{"id": "z"}])
    store.import_context(dest, name="dst", on_conflict="overwrite")
    ctx = store.context("dst")
    assert ctx.collections() == ["analogies", "notes"]
    assert ctx.count("analogies") == 49
    with pytest.raises(app.NotFoundError):
        ctx.get("analogies", "a500")
    assert ctx.verify().ok
    ctx.append("analogies", [analogy(600)])  # the swapped context is writable
    assert store.context("dst").count("analogies") == 50
    assert not [p for p in (store.root / "contexts").iterdir() if p.name.startswith(".")]


def test_import_merge_later_version_wins(store: app.Store, tmp_path: Path) -> None:
    src = store.context("src")
    src.append("analogies", [analogy(i) for i in range(10)])
    dst = store.context("dst")
    dst.append("analogies", [analogy(5, who="dst-old")])  # older than src's a5? no: later
    src.append("analogies", [analogy(5, who="src-new"), analogy(6, who="src-new")])
    dst.append("analogies", [analogy(6, who="dst-newest"), analogy(99, who="dst-only")])
    dest = tmp_path / "a.tar.gz"
    store.export_context("src", dest)
    store.import_context(dest, name="dst", on_conflict="merge")
    ctx = store.context("dst")
    assert ctx.get("analogies", "a5")["who"] == "src-new"  # import later -> wins
    assert ctx.get("analogies", "a6")["who"] == "dst-newest"  # local later -> kept
    assert ctx.get("analogies", "a99")["who"] == "dst-only"
    assert ctx.count("analogies") == 11
    assert ctx.verify().ok
    # merging the same archive again changes nothing
    before = store.load_context("dst")
    store.import_context(dest, name="dst", on_conflict="merge")
    assert store.load_context("dst") == before


def test_import_skip_keeps_existing_records(store: app.Store, tmp_path: Path) -> None:
    src = store.context("src")
    src.append("analogies", [analogy(i, who="src") for i in range(5)])
    src.append("notes", [{"id": "n"}])
    dst = store.context("dst")
    dst.append("analogies", [analogy(0, who="dst")])
    dest = tmp_path / "a.tar.gz"
    store.export_context("src", dest)
    dst.append("analogies", [analogy(1, who="dst-later")])
    store.import_context(dest, name="dst", on_conflict="skip")
    ctx = store.context("dst")
    assert ctx.get("analogies", "a0")["who"] == "dst"
    assert ctx.get("analogies", "a1")["who"] == "dst-later"
    assert ctx.get("analogies", "a4")["who"] == "src"
    assert ctx.count("analogies") == 5
    assert ctx.count("notes") == 1


@pytest.mark.embedded_only("compares the context folder's files before and after")
def test_export_import_embeddings_merge_and_skip(store: app.Store, tmp_path: Path) -> None:
    src = store.context("src")
    src.append("analogies", [analogy(0)])
    src.embeddings.save("vec", ["a", "b"], np.array([[1, 0], [0, 1]], dtype=np.float32))
    dest = tmp_path / "a.tar.gz"
    m = store.export_context("src", dest)
    assert m.embeddings["vec"]["count"] == 2
    store.import_context(dest, name="fresh")
    assert store.context("fresh").embeddings.load("vec") == src.embeddings.load("vec")
    dst = store.context("dst")
    dst.embeddings.save("vec", ["b", "c"], np.array([[5, 5], [7, 7]], dtype=np.float32))
    store.import_context(dest, name="dst", on_conflict="skip")
    skipped = store.context("dst").embeddings.load("vec", mmap=False)
    rows = dict(zip(skipped.ids.tolist(), skipped.vectors.tolist(), strict=True))
    assert rows == {"a": [1, 0], "b": [5, 5], "c": [7, 7]}
    store.import_context(dest, name="dst", on_conflict="merge")
    merged = store.context("dst").embeddings.load("vec", mmap=False)
    rows = dict(zip(merged.ids.tolist(), merged.vectors.tolist(), strict=True))
    assert rows == {"a": [1, 0], "b": [0, 1], "c": [7, 7]}
    other = store.context("dim3")
    other.embeddings.save("vec", ["z"], np.ones((1, 3), dtype=np.float32))
    other.collections()  # opening builds the (derived) index; the import must change nothing
    before = tree(store.root / "contexts" / "dim3")
    with pytest.raises(app.ConflictError):
        store.import_context(dest, name="dim3", on_conflict="merge")
    assert tree(store.root / "contexts" / "dim3") == before


def test_imported_joblib_model_stays_untrusted(store: app.Store, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    src = store.context("src")
    src.models.save("reg", model)
    dest = tmp_path / "a.tar.gz"
    manifest = store.export_context("src", dest)
    assert manifest.models["reg"][0]["format"] == "joblib"
    other = app.open_store(tmp_path / "other")
    try:
        other.import_context(dest)
        assert not (other.root / "trust").exists() or not list((other.root / "trust").iterdir())
        with pytest.raises(app.UntrustedArtifactError):
            other.context("src").models.load("reg")
        loaded = other.context("src").models.load("reg", trusted=True)
        assert loaded.predict([[2.0]])[0] == pytest.approx(2.0)
    finally:
        other.close()


def test_export_unknown_context_and_bad_dest(store: app.Store, tmp_path: Path) -> None:
    with pytest.raises(app.NotFoundError):
        store.export_context("nope", tmp_path / "x.tar.gz")
    store.context("c").append("notes", [{"id": "1"}])
    with pytest.raises(app.InvalidInput):
        store.export_context("c", tmp_path)
    with pytest.raises(app.InvalidInput):
        store.export_context("c", tmp_path / "missing" / "x.tar.gz")
    with pytest.raises(app.InvalidInput):
        store.export_context("../c", tmp_path / "x.tar.gz")
    with pytest.raises(app.InvalidInput):
        store.import_context(tmp_path / "x.tar.gz", on_conflict="replace")
    with pytest.raises(app.NotFoundError):
        store.import_context(tmp_path / "nothing.tar.gz")
