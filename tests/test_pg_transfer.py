"""Whole contexts on PostgreSQL + a files URL (a directory, or S3 on moto): an archive exported
from one backend imports into the other with identical records (byte-equal logs), embeddings
and models; batch ids survive the move; install replaces a context's part rows atomically and
drop forgets them; gc removes only blobs no row names. REAL servers (tests/backend_servers.py).

Records still live in each host's working folder until ``PgRecords`` is wired, so a second
host is shown at the level of the parts (its own pool, cache and working folder).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from backend_matrix import BACKENDS, kind_env
from recdata import analogy

import app
from app.backends.postgres.backend import PostgresBackend
from app.backends.postgres.catalog import PgContexts
from app.backends.postgres.connect import Database
from app.backends.postgres.files import PgParts
from app.core.artifacts import EmbeddingSet
from app.core.layout import object_blob, object_part
from app.managers.models.trust import FolderMarks, LayeredMarks


@pytest.fixture(params=BACKENDS[1:])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Opener = Callable[[str], app.Store]


@pytest.fixture
def pg_store(
    matrix_store_args: tuple[str, str | None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Opener]:
    """``open_host(name)``: the PostgreSQL store (a fresh schema, files on a directory or a
    fresh bucket) opened with its own local working folder (one per simulated host)."""
    root, files = matrix_store_args
    stores: list[app.Store] = []

    def open_host(host: str) -> app.Store:
        monkeypatch.setenv("CTXSTORE_WORK", str(tmp_path / f"work-{host}"))
        stores.append(app.open_store(root, files=files))
        return stores[-1]

    yield open_host
    for s in stores:
        s.close()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[app.Store]:
    """An embedded store (whatever ``backend_kind`` the module's PostgreSQL store has)."""
    with app.open_store(tmp_path / "embedded") as store:
        yield store


def fill(ctx: app.Context) -> None:
    ctx.append("analogies", [analogy(i) for i in range(40)], batch_id="first")
    ctx.append("analogies", [analogy(1, note="v2")], batch_id="second")
    ctx.delete("analogies", ["a2"], batch_id="third")
    ctx.append("notes", [{"id": "n1", "x": 1e20, "y": -0.0, "big": 2**62 + 1, "s": "é"}])
    rng = np.random.default_rng(3)
    ctx.embeddings.save("vec", [f"e{i}" for i in range(30)], rng.standard_normal((30, 8)))
    ctx.models.save("w", {"w": torch.arange(6, dtype=torch.float32)}, format="safetensors")
    ctx.models.save("w", {"w": torch.ones(3)}, format="safetensors")
    ctx.models.save("j", {"a": 1}, format="joblib")


def members(archive: Path) -> dict[str, bytes]:
    """The archive's files (the manifest aside: it carries a creation time; a log's header
    line aside: each export writes a compacted copy with a new generation)."""
    with tarfile.open(archive, "r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            if m.isfile() and not m.name.endswith("manifest.json"):
                fh = tar.extractfile(m)
                assert fh is not None
                data = fh.read()
                out[m.name] = data.split(b"\n", 1)[1] if m.name.endswith(".jsonl") else data
    return out


def content(ctx: app.Context) -> dict[str, Any]:
    """What a context holds, comparably across backends."""
    emb = ctx.embeddings.load("vec", mmap=False)
    return {
        "analogies": sorted(ctx.query("analogies", limit=None), key=lambda r: r["id"]),
        "notes": ctx.query("notes", limit=None),
        "vec_ids": emb.ids.tolist(),
        "vec": np.asarray(emb.vectors).tolist(),
        "models": [(v.version, v.format, v.sha256, v.size_bytes) for v in ctx.models.versions("w")],
        "w": ctx.models.load("w")["w"].tolist(),
        "j": ctx.models.load("j", trusted=True),  # imported pickles stay untrusted
    }


def test_embedded_to_pg_and_back_is_identical(
    pg_store: Opener, tmp_path: Path, embedded: app.Store
) -> None:
    fill(embedded.context("src"))
    first = tmp_path / "embedded.tar.gz"
    embedded.export_context("src", first)
    want = content(embedded.context("src"))

    pg = pg_store("one")
    pg.import_context(first, name="moved")
    assert content(pg.context("moved")) == want
    assert pg.context("moved").verify().ok
    # the parts live in the database and the files URL, not in the working folder
    assert not (pg.contexts_dir / "moved" / "embeddings").exists()
    second = tmp_path / "pg.tar.gz"
    pg.export_context("moved", second)
    same = members(second)
    same.pop("context.json")  # names the context
    assert same == {k: v for k, v in members(first).items() if k != "context.json"}

    back = app.open_store(tmp_path / "back")
    try:
        back.import_context(second, name="again")
        assert content(back.context("again")) == want
    finally:
        back.close()


def test_a_second_host_sees_the_parts(
    pg_store: Opener,
    tmp_path: Path,
    embedded: app.Store,
) -> None:
    """Another host (its own connection pool, cache and working folder) reads the imported
    parts at once, and shares the models' high-water mark."""
    from app.managers.embeddings import EmbeddingStore
    from app.managers.models import ModelStore

    fill(embedded.context("src"))
    embedded.export_context("src", tmp_path / "a.tar.gz")
    one = pg_store("one")
    one.import_context(tmp_path / "a.tar.gz", name="c")
    backend = one.backend
    assert isinstance(backend, PostgresBackend)
    db = Database(backend._url)
    parts = PgParts(db, backend.files_url, tmp_path / "cache-two")
    catalog = PgContexts(db, tmp_path / "host-two")
    lock = catalog.context_lock("c")
    root = tmp_path / "host-two" / "c"
    try:
        sets = EmbeddingStore(
            root / "embeddings",
            lock,
            "c",
            files=parts.files("c", "embeddings"),
            meta=parts.meta("c", "embeddings"),
        )
        assert [e.name for e in sets.list()] == ["vec"]
        assert sets.load("vec", mmap=False).ids.tolist() == [f"e{i}" for i in range(30)]
        models = ModelStore(
            root / "models",
            lock,
            "c",
            tmp_path / "trust-two",
            files=parts.files("c", "models"),
            meta=parts.meta("c", "models"),
            marks=LayeredMarks(parts.marks(), FolderMarks(tmp_path / "trust-two")),
        )
        assert [v.version for v in models.versions("w")] == [1, 2]
        # a pickle saved on one host is trusted on every host (the mark is a row); the one
        # that came with the archive is not
        with pytest.raises(app.UntrustedArtifactError):
            models.load("j")
        one.context("c").models.save("j", {"a": 2}, format="joblib")
        assert models.load("j") == {"a": 2}
        with pytest.raises(app.UntrustedArtifactError):
            models.load("j", version=1)
        # a deleted number is never given out again, on any host
        one.context("c").models.delete("w", version=2)
        assert models.save("w", {"w": torch.zeros(2)}).version == 3
        assert [v.version for v in one.context("c").models.versions("w")] == [1, 3]
    finally:
        catalog.close()
        db.close()


def test_batch_ids_survive_a_move_between_pg_contexts(pg_store: Opener, tmp_path: Path) -> None:
    pg = pg_store("one")
    ctx = pg.context("c")
    fill(ctx)
    pg.export_context("c", tmp_path / "c.tar.gz")
    pg.import_context(tmp_path / "c.tar.gz", name="d")
    moved = pg.context("d")
    again = [analogy(i) for i in range(40)]
    assert moved.append("analogies", again, batch_id="first").duplicate
    with pytest.raises(app.ConflictError):
        moved.append("analogies", [analogy(7, note="other")], batch_id="second")


def test_overwrite_replaces_the_part_rows_and_drop_forgets_them(
    pg_store: Opener, tmp_path: Path
) -> None:
    pg = pg_store("one")
    ctx = pg.context("c")
    fill(ctx)
    ctx.embeddings.save("extra", ["x"], np.ones((1, 4)))
    pg.export_context("c", tmp_path / "full.tar.gz")
    ctx.embeddings.delete("extra")
    ctx.models.delete("w")
    pg.export_context("c", tmp_path / "less.tar.gz")
    pg.import_context(tmp_path / "full.tar.gz", name="c", on_conflict="overwrite")
    live = pg.context("c")
    assert sorted(e.name for e in live.embeddings.list()) == ["extra", "vec"]
    assert [v.version for v in live.models.versions("w")] == [1, 2]
    pg.import_context(tmp_path / "less.tar.gz", name="c", on_conflict="overwrite")
    live = pg.context("c")
    assert [e.name for e in live.embeddings.list()] == ["vec"]
    assert live.models.names() == ["j"]
    pg.drop_context("c")
    again = pg.context("c")  # re-created empty: no rows left behind
    assert again.embeddings.list() == [] and again.models.names() == []


def test_merge_into_a_pg_context(pg_store: Opener, tmp_path: Path) -> None:
    pg = pg_store("one")
    ctx = pg.context("c")
    ctx.embeddings.save("vec", ["a", "b"], np.zeros((2, 4)))
    ctx.models.save("m", {"w": torch.zeros(2)})
    other = pg.context("o")
    other.append("notes", [{"id": "n", "v": 1}])
    other.embeddings.save("vec", ["b", "c"], np.ones((2, 4)))
    other.models.save("m", {"w": torch.ones(2)})
    pg.export_context("o", tmp_path / "o.tar.gz")
    pg.import_context(tmp_path / "o.tar.gz", name="c", on_conflict="merge")
    merged = pg.context("c")
    assert merged.get("notes", "n") == {"id": "n", "v": 1}
    vec = merged.embeddings.load("vec", mmap=False)
    assert vec.ids.tolist() == ["a", "b", "c"]
    assert np.asarray(vec.vectors)[1].tolist() == [1.0] * 4
    assert [v.version for v in merged.models.versions("m")] == [1, 2]
    assert merged.verify().ok


def test_save_and_load_context_on_pg(pg_store: Opener) -> None:
    pg = pg_store("one")
    es = EmbeddingSet(ids=["a", "b"], vectors=np.eye(2, dtype=np.float32), metadata={"k": 1})
    state = app.ContextState(collections={"notes": [{"id": "x", "v": 1}]}, embeddings={"e": es})
    pg.save_context("s", state)
    loaded = pg.load_context("s")
    assert loaded.collections == state.collections
    assert loaded.embeddings == state.embeddings


def test_gc_removes_only_unreferenced_blobs(pg_store: Opener, tmp_path: Path) -> None:
    pg = pg_store("one")
    ctx = pg.context("c")
    ctx.embeddings.save("vec", ["a"], np.ones((1, 4)))
    backend = pg.backend
    assert isinstance(backend, PostgresBackend)
    parts = backend.parts
    # an upload interrupted before its row committed: a blob nothing names
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"never recorded")
    prefix = object_part(parts.location.base, "c", "embeddings")
    parts.location.upload(orphan, object_blob(prefix, "0" * 64))
    assert parts.collect(older_than=time.time() - 3600) == []  # within the grace period
    removed = parts.collect(older_than=time.time() + 60)
    assert [r.rpartition("/")[2] for r in removed] == ["0" * 64]
    assert ctx.embeddings.load("vec", mmap=False).ids.tolist() == ["a"]
    # a dropped context's blobs are unreferenced once its rows are gone
    ctx.close()
    pg.drop_context("c")
    assert len(parts.collect(older_than=time.time() + 60)) == 1


def test_an_archive_from_pg_has_the_embedded_layout(pg_store: Opener, tmp_path: Path) -> None:
    pg = pg_store("one")
    fill(pg.context("c"))
    pg.export_context("c", tmp_path / "c.tar.gz")
    names = sorted(members(tmp_path / "c.tar.gz"))
    assert any(n.endswith("embeddings/vec/metadata.json") for n in names)
    assert any(n.endswith("models/w/v0002.safetensors") for n in names)
    assert any(n.endswith("analogies.jsonl") for n in names)
    raw = members(tmp_path / "c.tar.gz")
    log = next(v for k, v in raw.items() if k.endswith("notes.jsonl"))
    assert b"1e+20" in log or b"1e20" in log  # the record's own bytes, not a re-encoding
    assert io.BytesIO(log).read(1) == b"{"


def test_stats_count_and_measure_the_parts_on_pg(pg_store: Opener) -> None:
    pg = pg_store("one")
    ctx = pg.context("c")
    fill(ctx)
    stats = pg.stats()["contexts"]["c"]
    assert stats["records"] == 40
    assert stats["embeddings"] == {"vec": {"count": 30, "dim": 8, "dtype": "float64"}}
    assert stats["models"]["w"] == {"version": 2, "format": "safetensors"}
    shards = sum(s.size_bytes for s in ctx.embeddings.info("vec").shards)
    assert stats["embeddings_bytes"] > shards  # the shards and the set's metadata.json
    assert stats["models_bytes"] > 0
    assert stats["bytes"] >= stats["embeddings_bytes"] + stats["models_bytes"]
    assert stats["problems"] == []


def test_another_host_exports_what_one_host_imported(pg_store: Opener, tmp_path: Path) -> None:
    """Two hosts share nothing but the database and the files URL: what one imports, the
    other reads and exports byte-equal, and its import there is seen by the first."""
    one, two = pg_store("one"), pg_store("two")
    fill(one.context("c"))
    one.export_context("c", tmp_path / "one.tar.gz")
    other = two.context("c", create=False)
    assert content(other) == content(one.context("c"))
    two.export_context("c", tmp_path / "two.tar.gz")
    assert members(tmp_path / "two.tar.gz") == members(tmp_path / "one.tar.gz")
    two.import_context(tmp_path / "two.tar.gz", name="d")
    assert one.contexts() == ["c", "d"]
    assert content(one.context("d")) == content(one.context("c"))


KILLED_INSTALL = """
import sys, time
from pathlib import Path
import app
from app.backends.postgres import files_install

marker = Path(sys.argv[2])
real = files_install.replace_rows

def pause(conn, parts, context, staged):
    real(conn, parts, context, staged)  # rows written, the transaction not committed
    marker.write_text("in the install transaction")
    time.sleep(60)

files_install.replace_rows = pause
with app.open_store() as store:
    store.import_context(Path(sys.argv[1]), name="c", on_conflict="overwrite")
"""


def test_an_install_killed_before_its_commit_changes_nothing(
    pg_store: Opener, matrix_store_args: tuple[str, str | None], tmp_path: Path
) -> None:
    """SIGKILL of a process inside the install transaction (new blobs uploaded, rows written,
    not committed): the live context keeps its old records, files and documents on every
    host; the uploaded blobs are unreferenced and gc removes them, and only them."""
    root, files = matrix_store_args
    pg = pg_store("one")
    ctx = pg.context("c")
    ctx.append("notes", [{"id": "old", "v": 1}])
    ctx.embeddings.save("vec", ["a"], np.zeros((1, 4)))
    other = pg_store("src").context("src")
    other.append("notes", [{"id": "new", "v": 2}])
    other.embeddings.save("vec", ["b", "c"], np.ones((2, 4)))
    other.embeddings.save("more", ["d"], np.ones((1, 4)))
    pg.export_context("src", tmp_path / "new.tar.gz")
    marker = tmp_path / "marker"
    env = kind_env(root, files) | {"CTXSTORE_WORK": str(tmp_path / "work-killed")}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_INSTALL, str(tmp_path / "new.tar.gz"), str(marker)],
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the importing process ended before its commit"
            assert time.monotonic() < deadline, "the importing process never got there"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    for host in (pg, pg_store("two")):
        live = host.context("c", create=False)
        assert live.query("notes", limit=None) == [{"id": "old", "v": 1}]
        assert [e.name for e in live.embeddings.list()] == ["vec"]
        assert live.embeddings.load("vec", mmap=False).ids.tolist() == ["a"]
        assert live.verify().ok
    backend = pg.backend
    assert isinstance(backend, PostgresBackend)
    removed = backend.parts.collect(older_than=time.time() + 60)
    assert len(removed) == 2 and all("/c/embeddings/blobs/" in r for r in removed)
    assert pg.context("c").embeddings.load("vec", mmap=False).ids.tolist() == ["a"]


def test_verify_checks_the_parts_on_pg_and_export_never_packs_damage(
    pg_store: Opener, tmp_path: Path
) -> None:
    pg = pg_store("one")
    ctx = pg.context("c")
    fill(ctx)
    assert ctx.verify().ok
    backend = pg.backend
    assert isinstance(backend, PostgresBackend)
    shard = ctx.embeddings.info("vec").shards[0]
    files = backend.files("c", "embeddings")
    backend.parts.location.put(files.blob(shard.sha256), b"not the shard")  # damage on storage
    report = ctx.verify()
    assert not report.ok
    assert any(("vec" in p and "differs" in p) or "SHA-256" in p for p in report.problems)
    # this host still holds the shard's verified copy in its cache: what it exports is whole
    pg.export_context("c", tmp_path / "cached.tar.gz")
    pg.import_context(tmp_path / "cached.tar.gz", name="copy")
    assert pg.context("copy").verify().ok
    # a host without that copy downloads the damaged object and refuses it
    with pytest.raises(app.IntegrityError):
        pg_store("two").export_context("c", tmp_path / "damaged.tar.gz")
    assert not (tmp_path / "damaged.tar.gz").exists()


def test_a_pickle_saved_whole_is_trusted_on_every_host(pg_store: Opener) -> None:
    """``save_context`` writes its models in a staged local copy, whose trust marks land in
    this host's trust folder; the install shares them (every reader still checks the
    signature under the trust key)."""
    one, two = pg_store("one"), pg_store("two")
    one.save_context("s", app.ContextState(models={"j": {"a": 3}}))
    assert one.context("s").models.info("j").format == "joblib"
    assert two.context("s", create=False).models.load("j") == {"a": 3}
