"""``Store.gc`` and ``ctxstore gc`` (docs/api.md, "Garbage collection").

Leftover staging folders are made by a real child process killed with SIGKILL inside
``store.staging``; a folder a live operation holds is never listed nor removed. Every test
compares a dry run with the real run that follows: the same items (paths, bytes), and the dry
run changed nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from backend_matrix import BACKENDS, kind_env

import app
from app.backends.objects import ObjectParts
from app.backends.protocols import FileDigest, FileWriter
from app.core.atomic import atomic_file
from app.core.layout import shard_name
from app.managers.maintenance.gc import Collectable

ROOT = Path(__file__).resolve().parent.parent


def env() -> dict[str, str]:
    """The test process's environment now (fixtures set $CTXSTORE_WORK, the AWS variables),
    without $CTXSTORE_ROOT."""
    return {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}


HOLDER = textwrap.dedent(
    """
    import contextlib, sys, time
    import app
    store = app.open_store(sys.argv[1])
    with contextlib.ExitStack() as stack:
        for spec in sys.argv[2:]:
            purpose, size = spec.split(":")
            folder = stack.enter_context(store.staging(purpose))
            (folder / "payload.bin").write_bytes(b"x" * int(size))
            print(folder, flush=True)
        time.sleep(600)
    """
)


def killed_leftovers(root: Path, *specs: tuple[str, int]) -> list[Path]:
    """The staging folders (purpose, payload size) of one child killed (SIGKILL) while it
    held them (one child: opening a store sweeps the leftovers of earlier ones)."""
    args = [f"{purpose}:{size}" for purpose, size in specs]
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), *args],
        stdout=subprocess.PIPE,
        env={**env(), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        folders = [Path(child.stdout.readline().decode().strip()) for _ in specs]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert all(f.is_dir() for f in folders)
    return folders


def killed_leftover(root: Path, purpose: str, size: int) -> Path:
    return killed_leftovers(root, (purpose, size))[0]


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size (what a dry run must leave unchanged)."""
    out: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            if f.endswith(("-wal", "-shm")):
                continue  # SQLite's own side files come and go with connections
            out[path] = os.lstat(path).st_size
    return out


def test_killed_leftovers_are_reported_then_removed_and_live_ones_kept(
    store: app.Store, store_root: Path
) -> None:
    store.context("c").append("t", [{"id": "1"}])
    dead_import, dead_merge = killed_leftovers(store_root, ("import", 1000), ("merge", 2500))
    with store.staging("save") as live:
        (live / "busy.bin").write_bytes(b"y" * 10)
        before = tree(store_root)
        dry = store.gc()
        assert tree(store_root) == before  # a dry run changes nothing
        assert dry.dry_run is True
        assert sorted(dry.paths("staging")) == sorted([str(dead_import), str(dead_merge)])
        assert {i.path: i.bytes for i in dry.items} == {
            str(dead_import): 1000,
            str(dead_merge): 2500,
        }
        done = store.gc(dry_run=False)
        assert done.dry_run is False
        assert done.items == dry.items and done.bytes == dry.bytes == 3500
        assert not dead_import.exists() and not dead_merge.exists()
        assert live.is_dir() and (live / "busy.bin").is_file()  # in use: never touched
    assert store.context("c").get("t", "1") == {"id": "1"}
    assert store.gc().items == []


def test_a_dropped_context_left_by_a_killed_drop_is_collected(
    store: app.Store, store_root: Path
) -> None:
    dead = killed_leftover(store_root, "dropped", 4096)
    report = store.gc()
    assert report.paths() == [str(dead)] and report.bytes == 4096
    assert store.gc(dry_run=False).items == report.items
    assert not dead.exists()


def test_gc_on_a_store_that_never_ran_a_workflow_creates_no_tracker(
    store: app.Store, store_root: Path
) -> None:
    store.context("c").append("t", [{"id": "1"}])
    before = tree(store_root)
    report = store.gc(workflows_older_than=dt.timedelta(0), compact_ratio=0.5)
    assert report.items == []
    assert tree(store_root) == before


def _workflow(store: app.Store, n: int, start: int) -> str:
    items = [{"id": f"r{i}", "v": i} for i in range(start, start + n)]
    wf = store.workflows.submit("append", context="c", items=items, params={"collection": "t"})
    return wf.workflow_id


def test_finished_workflows_older_than_are_purged_and_pending_kept(store: app.Store) -> None:
    done_ids = [_workflow(store, 20, k * 20) for k in range(3)]
    for wid in done_ids:
        assert store.workflows.process(wid).status == app.WorkflowStatus.COMPLETED
    pending = _workflow(store, 5, 100)
    time.sleep(0.05)  # finished strictly before the cut-off
    assert store.gc(workflows_older_than=dt.timedelta(days=1)).items == []  # too recent
    dry = store.gc(workflows_older_than=dt.timedelta(0))
    assert sorted(dry.paths("workflow")) == sorted(f"workflow:{w}" for w in done_ids)
    assert [w.workflow_id for w in store.workflows.list()] != [pending]  # still there
    done = store.gc(dry_run=False, workflows_older_than=dt.timedelta(0))
    assert done.items == dry.items
    assert [w.workflow_id for w in store.workflows.list()] == [pending]
    assert store.context("c").count("t") == 60  # their records stay
    assert store.workflows.verify() == []


def test_compaction_over_the_ratio_reports_the_bytes_it_frees(store: app.Store) -> None:
    ctx = store.context("c")
    for round_ in range(10):
        ctx.append("churn", [{"id": f"k{j}", "round": round_} for j in range(20)])
    ctx.append("steady", [{"id": f"s{j}"} for j in range(20)])  # nothing superseded
    records = ctx.query("churn", order_by="id")
    assert store.gc(compact_ratio=0.95).items == []  # 90% superseded: under the ratio
    dry = store.gc(compact_ratio=0.5)
    assert dry.paths() == ["c/churn"] and dry.bytes > 0
    done = store.gc(dry_run=False, compact_ratio=0.5)
    assert done.items == dry.items
    assert ctx.query("churn", order_by="id") == records
    assert store.gc(compact_ratio=0.5).items == []  # nothing superseded any more
    assert store.verify().ok


def test_keep_model_versions_is_refused_plainly(store: app.Store) -> None:
    with pytest.raises(app.InvalidInput) as err:
        store.gc(keep_model_versions=3)
    assert err.value.argument == "keep_model_versions"
    with pytest.raises(app.InvalidInput):
        store.gc(compact_ratio=1.5)
    with pytest.raises(app.InvalidInput):
        store.gc(workflows_older_than=60)  # type: ignore[arg-type]


def writing(data: bytes) -> FileWriter:
    def write(path: Path) -> FileDigest:
        with atomic_file(path) as fh:
            fh.write(data)
        return FileDigest(hashlib.sha256(data).hexdigest(), len(data))

    return write


def test_object_store_garbage_is_what_remove_garbage_removes(tmp_path: Path) -> None:
    files = ObjectParts(str(tmp_path / "objects"), tmp_path / "cache").files("c1", "embeddings")
    assert isinstance(files, Collectable)
    kept = files.put(f"s/{shard_name(1)}", writing(b"kept bytes"))
    gone = files.put(f"s/{shard_name(2)}", writing(b"deleted shard!"))
    assert files.delete(f"s/{shard_name(2)}")
    assert files.garbage(time.time() - 3600) == []  # inside the grace period
    found = files.garbage(time.time() + 1)
    assert [size for _, size in found] == [gone.size]
    assert found[0][0].endswith(gone.sha256)
    files.remove_garbage([path for path, _ in found])
    assert files.garbage(time.time() + 1) == []
    assert files.list("s") == [kept.key]
    with os.fdopen(files.open(kept.key), "rb") as fh:
        assert fh.read() == b"kept bytes"


# -- the command line ---------------------------------------------------------------------


def cli(root: Path | str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "app", "--root", str(root), *args],
        capture_output=True,
        timeout=120,
        env={**env(), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=False,
    )


def test_cli_gc_reports_then_applies(store_root: Path) -> None:
    app.open_store(store_root).close()
    dead = killed_leftover(store_root, "import", 321)
    dry = cli(store_root, "gc", "--json")
    assert dry.returncode == 0, dry.stderr
    report = orjson.loads(dry.stdout)
    assert report["dry_run"] is True and report["bytes"] == 321
    assert report["items"] == [{"kind": "staging", "path": str(dead), "bytes": 321}]
    assert dead.exists()
    text = cli(store_root, "gc")
    assert b"would remove 1 staging, 321 bytes" in text.stdout
    applied = cli(store_root, "gc", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert b"removed 1 staging, 321 bytes" in applied.stdout
    assert not dead.exists()


@pytest.mark.parametrize("value", ["7", "60", "1.5", "7 days", "-1d"])
def test_cli_durations_need_a_unit(store_root: Path, value: str) -> None:
    app.open_store(store_root).close()
    proc = cli(store_root, "gc", "--workflows-older-than", value)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("error: --workflows-older-than:")
    assert cli(store_root, "workflows", "recover", "--stale-after", value).returncode == 2
    worker = cli(store_root, "worker", "--once", "--recover-stale", value)
    assert worker.returncode == 2 and b"--recover-stale" in worker.stderr


def test_cli_gc_keep_model_versions_exits_2_naming_it(store_root: Path) -> None:
    app.open_store(store_root).close()
    proc = cli(store_root, "gc", "--keep-model-versions", "2")
    assert proc.returncode == 2
    assert b"keep_model_versions" in proc.stderr
    assert cli(store_root, "gc", "--workflows-older-than", "7d").returncode == 0


# -- PostgreSQL + a files URL (a directory, or a bucket on the moto S3 server) --------------


@pytest.fixture(params=BACKENDS[1:])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_pg_unreferenced_and_dropped_context_objects_are_collected_after_the_grace(
    matrix_store_args: tuple[str, str | None],
) -> None:
    root, files = matrix_store_args
    vectors = np.arange(12, dtype="float32").reshape(3, 4)
    with app.open_store(root, files=files) as store:
        keep = store.context("keep")
        keep.embeddings.save("e", ids=["a", "b", "c"], vectors=vectors)
        keep.embeddings.save("e", ids=["a", "b", "c"], vectors=vectors + 1)  # overwrite
        keep.embeddings.save("gone", ids=["x"], vectors=vectors[:1])
        keep.embeddings.delete("gone")
        keep.models.save("m", {"w": [1, 2, 3]}, format="joblib")
        dropped = store.context("dropped")
        dropped.embeddings.save("d", ids=["a", "b", "c"], vectors=vectors * 2)
        store.drop_context("dropped")
        time.sleep(0.05)
        assert store.gc().items == []  # everything is younger than the 24 h grace
        dry = store.gc(grace=dt.timedelta(0))
        paths = dry.paths("object")
        assert dry.items and set(dry.paths()) == set(paths)
        assert any("/keep/embeddings/blobs/" in p for p in paths)  # the overwritten shard...
        assert any("/dropped/" in p for p in paths)  # ...and the dropped context's files
        assert not any("/keep/models/" in p for p in paths)  # referenced: never listed
        assert all("***" in p or "@" not in p for p in paths)  # no credentials shown
        assert store.gc(grace=dt.timedelta(0)).items == dry.items  # the dry run removed nothing
        done = store.gc(dry_run=False, grace=dt.timedelta(0))
        assert done.items == dry.items and done.bytes == dry.bytes > 0
        assert store.gc(grace=dt.timedelta(0)).items == []
        loaded = store.context("keep").embeddings.load("e")
        assert loaded.vectors.tolist() == (vectors + 1).tolist()
        assert store.context("keep").models.load("m") == {"w": [1, 2, 3]}
        assert store.verify().ok
        again = store.context("dropped")  # a new context of the old name starts empty
        assert again.embeddings.list() == []


def test_pg_killed_staging_leftover_in_the_working_folder_is_collected(
    matrix_store_args: tuple[str, str | None],
) -> None:
    root, files = matrix_store_args
    with app.open_store(root, files=files) as store:
        store.context("c").append("t", [{"id": "1"}])
        child_env = kind_env(root, files)
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDER, root, "import:777"],
            stdout=subprocess.PIPE,
            env={**child_env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
        try:
            assert child.stdout is not None
            dead = Path(child.stdout.readline().decode().strip())
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert dead.is_dir() and dead.parent == store.contexts_dir
        assert files is not None
        listed = cli(root, "--files", files, "gc", "--json")
        assert listed.returncode == 0, listed.stderr
        assert orjson.loads(listed.stdout)["items"] == [
            {"kind": "staging", "path": str(dead), "bytes": 777}
        ]
        dry = store.gc()
        assert dry.items == [app.GcItem(kind="staging", path=str(dead), bytes=777)]
        assert store.gc(dry_run=False).items == dry.items
        assert not dead.exists()


def test_pg_gc_racing_saves_never_leaves_a_file_without_its_blob(
    matrix_store_args: tuple[str, str | None],
) -> None:
    """gc with no grace at all, looping on one connection while another saves embedding sets:
    a save either returns (and its set loads, verified) or fails cleanly; never a row naming a
    blob gc removed (the row's commit re-checks the blob under the part's gc lock)."""
    root, files = matrix_store_args
    rng = np.random.default_rng(3)
    saved: list[str] = []
    refused: list[str] = []
    stop = threading.Event()
    swept: list[int] = []

    failures: list[BaseException] = []

    def sweeper() -> None:
        try:
            with app.open_store(root, files=files) as other:
                while not stop.is_set():
                    swept.append(len(other.gc(dry_run=False, grace=dt.timedelta(0)).items))
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    with app.open_store(root, files=files) as store:
        ctx = store.context("race")
        thread = threading.Thread(target=sweeper)
        thread.start()
        try:
            for i in range(25):
                name = f"s{i}"
                try:
                    ctx.embeddings.save(name, ["a", "b"], rng.standard_normal((2, 8)))
                    saved.append(name)
                except app.StorageError:
                    refused.append(name)
                if i % 5 == 4:
                    ctx.embeddings.delete(saved.pop(0))  # leaves garbage to collect
        finally:
            stop.set()
            thread.join(120)
        assert failures == []  # gc never trips over an upload in flight
        assert swept and saved
        for name in saved:
            assert ctx.embeddings.load(name).vectors.shape == (2, 8)
        assert store.verify().ok, store.verify().problems


def test_pg_compaction_over_the_ratio_reports_the_bytes_it_frees(
    matrix_store_args: tuple[str, str | None],
) -> None:
    root, files = matrix_store_args
    with app.open_store(root, files=files) as store:
        ctx = store.context("c")
        for round_ in range(10):
            ctx.append("churn", [{"id": f"k{j}", "round": round_} for j in range(20)])
        ctx.append("steady", [{"id": f"s{j}"} for j in range(20)])
        records = ctx.query("churn", order_by="id")
        assert store.gc(compact_ratio=0.95).items == []
        dry = store.gc(compact_ratio=0.5)
        assert dry.paths() == ["c/churn"] and dry.bytes > 0
        assert not [p for p in store.contexts_dir.iterdir() if p.name.startswith(".")]
        done = store.gc(dry_run=False, compact_ratio=0.5)
        assert done.items == dry.items
        assert ctx.query("churn", order_by="id") == records
        assert store.gc(compact_ratio=0.5).items == []
        assert store.verify().ok
