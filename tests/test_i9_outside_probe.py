"""Found by an outside probe of the issue-9 build: user input that reached the store through
the CLI or HTTP, or odd arguments, leaked raw errors or changed values silently."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from service_support import local_client

import app
from app.service import create_app


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_refuses_integers_beyond_int64_instead_of_storing_floats(tmp_path: Path) -> None:
    data = tmp_path / "big.jsonl"
    data.write_text('{"id":"m","a":-9223372036854775809}\n{"id":"b","a":99999999999999999999999}\n')
    done = _cli(tmp_path / "s", "append", "c", "x", str(data))
    assert done.returncode != 0 and "64-bit" in done.stderr, done
    assert "Traceback" not in done.stderr
    with app.open_store(tmp_path / "s") as store:
        assert store.context("c").count("x") == 0  # nothing written, nothing turned into 1e+23


def test_cli_and_http_filters_refuse_integers_beyond_int64(tmp_path: Path) -> None:
    with app.open_store(tmp_path / "s") as store:
        store.context("c").append("x", [{"id": "min", "a": -(2**63)}, {"id": "zero", "a": 0}])
    done = _cli(tmp_path / "s", "query", "c", "x", "--where", '{"a": -9223372036854775809}')
    assert done.returncode != 0 and "64-bit" in done.stderr, done
    with app.open_store(tmp_path / "s") as store:
        client = local_client(create_app(store, auth=False))
        for where in ('{"a":-9223372036854775809}', '{"a":{"$nin":[-9223372036854775809]}}'):
            r = client.get("/contexts/c/collections/x/records", params={"where": where})
            assert r.status_code == 422, (where, r.status_code, r.text)


def test_http_invalid_body_with_nan_is_422_not_500(store: app.Store) -> None:
    client = local_client(create_app(store, auth=False))
    store.context("c").append("x", [{"id": "a"}])
    for url, body in (
        ("/contexts", b'{"name":NaN}'),
        ("/contexts/c/collections/x/query", b'{"limit":1e999}'),
    ):
        r = client.post(url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (url, r.status_code, r.text)
        assert r.json()["detail"]


def test_batch_id_with_a_lone_surrogate_is_invalid_input(ctx: app.Context) -> None:
    with pytest.raises(app.InvalidInput, match="batch_id"):
        ctx.append("x", [{"a": 1}], batch_id="b\ud800")
    with pytest.raises(app.InvalidInput, match="batch_id"):
        ctx.delete("x", ["q"], batch_id="\udc00")
    assert ctx.count("x") == 0


def test_datetimes_outside_utc_range_are_invalid_input(ctx: app.Context) -> None:
    for value in (
        dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=5))),
    ):
        with pytest.raises(app.InvalidInput, match="UTC"):
            ctx.append("x", [{"t": value}])
    assert ctx.count("x") == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flush_interval": float("inf")},
        {"flush_interval": 1e300},
        {"flush_interval": "1"},
        {"flush_interval": float("nan")},
        {"max_pending": 1.5},
        {"flush_every": 0},
    ],
)
def test_buffer_arguments_are_checked(ctx: app.Context, kwargs: dict[str, object]) -> None:
    with pytest.raises(app.InvalidInput, match=next(iter(kwargs))):
        ctx.buffer("b", **kwargs)  # type: ignore[arg-type]


def test_paths_with_nul_are_invalid_input(store: app.Store, tmp_path: Path) -> None:
    with pytest.raises(app.InvalidInput, match="root"):
        app.open_store(str(tmp_path / "a\x00b"))
    store.context("c").append("x", [{"id": "a"}])
    with pytest.raises(app.InvalidInput, match="dest"):
        store.export_context("c", str(tmp_path / "a\x00.tar.gz"))
    with pytest.raises(app.InvalidInput, match="src"):
        store.import_context(str(tmp_path / "a\x00.tar.gz"))


def test_a_closed_store_says_so_and_never_fails_a_workflow(store_root: Path) -> None:
    store = app.open_store(store_root)
    wf = store.workflows.submit(
        "append", context="c", items=[{"id": "a"}], params={"collection": "x"}
    )
    store.close()
    with pytest.raises(app.StorageError, match="closed"):
        store.context("c")
    with pytest.raises(app.StorageError, match="closed"):
        store.workflows.process(wf.workflow_id)
    with app.open_store(store_root) as again:
        assert again.workflows.get(wf.workflow_id).status == app.WorkflowStatus.PENDING
        assert again.workflows.process(wf.workflow_id).status == app.WorkflowStatus.COMPLETED


# -- a second probe: files damaged or planted by hand between operations -----------------


def _fresh(root: Path) -> Path:
    import numpy as np

    with app.open_store(root) as store:
        ctx = store.context("c1")
        ctx.append("notes", [{"id": "a"}])
        ctx.embeddings.save("e1", ["a", "b"], np.eye(2, dtype="float32"))
        ctx.models.save("m1", {"k": 1})
    return root / "contexts" / "c1"


def test_a_linked_context_folder_is_damage_and_nothing_is_written_through_it(
    tmp_path: Path,
) -> None:
    import shutil

    folder = _fresh(tmp_path / "s")
    outside = tmp_path / "outside"
    shutil.rmtree(folder)
    outside.mkdir()
    (outside / "keep.txt").write_text("k")
    folder.symlink_to(outside)
    with app.open_store(tmp_path / "s") as store:
        assert store.contexts() == ["c1"]  # listed as a damaged context, not hidden
        report = store.verify()
        assert not report.ok and "symbolic link" in report.problems[0]
        with pytest.raises(app.IntegrityError, match="symbolic link"):
            store.export_context("c1", tmp_path / "x.tar.gz")
        with pytest.raises(app.IntegrityError, match="symbolic link"):
            store.context("c1").count("notes")
        assert any("symbolic link" in p for p in store.stats()["problems"])
        assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]  # nothing written
        store.drop_context("c1")  # removes the link, never the target
        assert store.contexts() == [] and (outside / "keep.txt").exists()


def test_append_to_a_set_whose_metadata_is_gone_refuses(tmp_path: Path) -> None:
    import numpy as np

    folder = _fresh(tmp_path / "s")
    (folder / "embeddings" / "e1" / "metadata.json").unlink()
    with (
        app.open_store(tmp_path / "s") as store,
        pytest.raises(app.IntegrityError, match="metadata"),
    ):
        store.context("c1").embeddings.save(
            "e1", ["z"], np.ones((1, 2), dtype="float32"), mode="append"
        )
    shards = sorted(p.name for p in (folder / "embeddings" / "e1").iterdir())
    assert shards == ["shard-000001.npz"]  # the old rows were not dropped


@pytest.mark.parametrize("damage", ["log-deleted", "part-is-a-file", "metadata-deleted"])
def test_export_refuses_a_context_missing_a_part(tmp_path: Path, damage: str) -> None:
    import shutil

    folder = _fresh(tmp_path / "s")
    if damage == "log-deleted":
        (folder / "notes.jsonl").unlink()
    elif damage == "part-is-a-file":
        shutil.rmtree(folder / "embeddings")
        (folder / "embeddings").write_text("x")
    else:
        (folder / "embeddings" / "e1" / "metadata.json").unlink()
    with app.open_store(tmp_path / "s") as store:
        with pytest.raises(app.IntegrityError, match="export refused"):
            store.export_context("c1", tmp_path / "x.tar.gz")
        assert not store.verify().ok
    assert not (tmp_path / "x.tar.gz").exists()


def test_a_fifo_where_a_file_belongs_never_blocks(tmp_path: Path) -> None:
    import os

    folder = _fresh(tmp_path / "s")
    for directory, suffix in (
        (folder / "embeddings" / "e1", ".npz"),
        (folder / "models" / "m1", ".joblib"),
    ):
        victim = next(p for p in directory.iterdir() if p.name.endswith(suffix))
        victim.unlink()
        os.mkfifo(victim)
    with app.open_store(tmp_path / "s") as store:
        ctx = store.context("c1")
        for read in (
            lambda: ctx.embeddings.load("e1"),
            lambda: ctx.embeddings.load("e1", mmap=False, verify=False),
            lambda: ctx.models.load("m1"),
        ):
            with pytest.raises(app.IntegrityError, match="not a regular file"):
                read()
        assert not store.verify().ok


def test_a_linked_contexts_folder_is_reported(tmp_path: Path) -> None:
    _fresh(tmp_path / "s")
    (tmp_path / "s" / "contexts").rename(tmp_path / "real")
    (tmp_path / "s" / "contexts").symlink_to(tmp_path / "real")
    with app.open_store(tmp_path / "s") as store:
        report = store.verify()
    assert not report.ok and "link" in report.problems[0]
