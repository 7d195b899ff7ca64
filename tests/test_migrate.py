"""``ctxstore migrate SRC DST`` (docs/api.md, "Moving a store"): every context moves, export
then import, with its current records (byte-equal; an archive holds no superseded versions),
indexes, embeddings and models; an
existing destination context is refused before anything moves unless ``--replace``; the
source is only read. Directory to directory here; the PostgreSQL sides run in
tests/test_migrate_pg.py when a server is available.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from backend_matrix import BACKENDS

import app
from app.core.urls import redact
from app.managers.maintenance.migrate import migrate_store

ROOT = Path(__file__).resolve().parent.parent


def env() -> dict[str, str]:
    """The test process's environment now (fixtures set $CTXSTORE_WORK, the AWS variables),
    without $CTXSTORE_ROOT."""
    return {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True,
        timeout=300,
        env={**env(), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=False,
    )


def fill(root: Path | str) -> None:
    """Three contexts: churned records with an index, a deletion, embeddings, a model."""
    with app.open_store(root) as store:
        a = store.context("alpha")
        a.define_collection("people", indexes=["age"])
        for round_ in range(3):
            a.append(
                "people",
                [{"id": f"p{i}", "age": 20 + i + round_, "big": 1e20} for i in range(30)],
                batch_id=f"round-{round_}",
            )
        a.delete("people", ["p3"])
        a.embeddings.save("vecs", [f"p{i}" for i in range(5)], np.arange(15.0).reshape(5, 3))
        a.models.save("m", {"w": [1, 2, 3]}, format="joblib")
        store.context("beta").append("notes", [{"id": "n1", "text": "héllo"}])
        store.context("gamma")  # empty


def snapshot(root: Path | str) -> dict[str, Any]:
    """What must be equal across the move: every record as stored, the indexed query, the
    history of one record, embeddings and the model."""
    out: dict[str, Any] = {}
    with app.open_store(root, create=False) as store:
        for name in store.contexts():
            ctx = store.context(name, create=False)
            out[name] = {coll: ctx.query(coll, order_by="id") for coll in ctx.collections()}
        a = store.context("alpha", create=False)
        out["young"] = a.query("people", where={"age": {"$lt": 25}}, order_by="age")
        out["history"] = [(v.batch_id, v.deleted, v.data) for v in a.history("people", "p3")]
        vecs = a.embeddings.load("vecs")
        out["vecs"] = (vecs.ids, vecs.vectors.tolist())
        out["model"] = a.models.load("m", trusted=True)
    return out


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm", ".lock"))
    }


def test_migrate_moves_every_context_and_leaves_the_source(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    fill(src)
    expected = snapshot(src)
    before = files(src)
    proc = cli("migrate", str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "migrated 3 context(s)" in out and "3 new, 0 replaced" in out
    assert "30 records" in out  # the current records: 29 people and 1 note
    moved = snapshot(dst)
    # an archive carries current records, not superseded versions (export compacts): the
    # history of the deleted record stays in the source only
    assert moved.pop("history") == [] and expected.pop("history") != []
    assert moved == expected
    assert files(src) == before  # only read
    with app.open_store(dst, create=False) as store:
        assert store.verify().ok
        assert not [p for p in (dst / "contexts").iterdir() if p.name.startswith(".")]


def test_an_existing_destination_context_is_refused_before_anything_moves(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    fill(src)
    with app.open_store(dst) as store:
        store.context("beta").append("notes", [{"id": "mine"}])
    proc = cli("migrate", str(src), str(dst))
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.startswith("error: ") and "beta" in err and "--replace" in err
    with app.open_store(dst, create=False) as store:
        assert store.contexts() == ["beta"]  # nothing moved
        assert store.context("beta").query("notes") == [{"id": "mine"}]
    again = cli("migrate", str(src), str(dst), "--replace", "--json")
    assert again.returncode == 0, again.stderr
    report = orjson.loads(again.stdout)
    assert report["moved"] == ["alpha", "gamma"] and report["replaced"] == ["beta"]
    assert {k: v for k, v in snapshot(dst).items() if k != "history"} == {
        k: v for k, v in snapshot(src).items() if k != "history"
    }


def test_trusted_pickles_stay_trusted_and_untrusted_ones_stay_untrusted(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    with app.open_store(src) as store:
        models = store.context("m").models
        kept = models.save("kept", {"w": 1}, format="joblib")
        doubtful = models.save("doubtful", {"w": 2}, format="joblib")
        (store.trust_dir / doubtful.sha256).unlink()  # no longer vouched for in the source
        assert models.is_trusted(kept.sha256) and not models.is_trusted(doubtful.sha256)
        with app.open_store(dst) as dest:
            report = migrate_store(store, dest)
            assert report.trusted_models == 1
            moved = dest.context("m", create=False).models
            assert moved.load("kept") == {"w": 1}  # no trusted=True needed
            with pytest.raises(app.UntrustedArtifactError):
                moved.load("doubtful")
            assert moved.load("doubtful", trusted=True) == {"w": 2}


def test_migrate_store_in_python_reports_each_context(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    fill(src)
    seen: list[str] = []
    with app.open_store(src) as source, app.open_store(dst) as dest:
        report = migrate_store(source, dest, on_context=seen.append)
        assert seen == ["alpha", "beta", "gamma"] == report.moved
        assert report.bytes > 0
        with pytest.raises(app.InvalidInput):
            migrate_store(source, source)
        with pytest.raises(app.ConflictError):
            migrate_store(source, dest)


def test_a_missing_source_creates_no_destination(tmp_path: Path) -> None:
    proc = cli("migrate", str(tmp_path / "nothing"), str(tmp_path / "dst"))
    assert proc.returncode == 1 and proc.stderr.startswith(b"error: ")
    assert not (tmp_path / "dst").exists()


# -- PostgreSQL on either side (PostgreSQL + a files directory, or + a bucket on moto S3) ---


@pytest.fixture(params=BACKENDS[1:])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_migrate_directory_to_postgresql_and_back(
    matrix_store_args: tuple[str, str | None], tmp_path: Path
) -> None:
    pg_root, pg_files = matrix_store_args
    assert pg_files is not None
    src, back = tmp_path / "src", tmp_path / "back"
    fill(src)
    expected = snapshot(src)
    expected.pop("history")
    there = cli("migrate", str(src), pg_root, "--files", pg_files)
    assert there.returncode == 0, there.stderr
    assert b"3 new, 0 replaced, 30 records" in there.stdout
    assert redact(pg_root).encode() in there.stdout  # the URL as shown: password redacted
    with app.open_store(pg_root, files=pg_files, create=False) as store:
        assert store.contexts() == ["alpha", "beta", "gamma"]
        assert store.verify().ok
    refused = cli("migrate", str(src), pg_root, "--files", pg_files)
    assert refused.returncode == 1 and b"--replace" in refused.stderr
    home = cli("migrate", pg_root, str(back), "--src-files", pg_files, "--json")
    assert home.returncode == 0, home.stderr
    assert orjson.loads(home.stdout)["moved"] == ["alpha", "beta", "gamma"]
    moved = snapshot(back)
    moved.pop("history")
    assert moved == expected


def test_two_postgresql_stores_may_not_share_a_files_url(
    matrix_store_args: tuple[str, str | None], tmp_path: Path
) -> None:
    pg_root, pg_files = matrix_store_args
    assert pg_files is not None
    with app.open_store(pg_root, files=pg_files) as store:
        store.context("c").append("t", [{"id": "1"}])
    proc = cli(
        "migrate",
        pg_root,
        pg_root + "&application_name=other",
        "--files",
        pg_files,
        "--src-files",
        pg_files,
    )
    assert proc.returncode in (1, 2)
    assert proc.stderr.startswith(b"error: ")
