"""Workflows on a REAL PostgreSQL (``app.backends.postgres.tracker``) with staged items on a real
object store (moto's S3 server, or a directory URL).

What only a server backend has to prove: claims are exclusive across processes (``FOR UPDATE
SKIP LOCKED``: no workflow claimed twice, none lost), heartbeats and stale takeover use the
DATABASE clock (a worker whose own clock is wrong is judged on the server's), staged items are
verified when read back from the object store, and the tracker's rows follow the same state
machine as the embedded one (each tracker test gets its own schema, ``fresh_schema``). Then
whole stores (``pg-files``, ``pg-s3``): a chunk is one unit of work (a failing or taken-over
chunk leaves none of its writes), cancel and rollback, SIGKILLs mid-chunk, and "several
machines": 4 worker processes sharing only the database URL and the S3 endpoint, one killed
mid-chunk, every chunk committed exactly once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_matrix import BACKENDS, kind_env
from backend_servers import s3_storage_options
from test_pg_access import fresh_schema

import app
from app.backends.objects.cache import BlobCache
from app.backends.objects.location import Location
from app.backends.postgres.backend import PostgresBackend
from app.backends.postgres.connect import Database
from app.backends.postgres.tracker import PgTracker
from app.backends.postgres.tracker_items import ObjectItems
from app.core import clock
from app.core.errors import ConflictError, IntegrityError, NotFoundError, SchemaVersionError
from app.core.workflow_types import BatchWorkflow
from app.core.workflow_types import WorkflowStatus as S

ROOT = Path(__file__).resolve().parent.parent


def make_tracker(url: str, files: str, cache: Path) -> PgTracker:
    options = s3_storage_options() if files.startswith("s3://") else None
    location = Location(files, options)
    return PgTracker(Database(url), ObjectItems(location, BlobCache(cache, location)))


@pytest.fixture
def schema_url(pg_url: str) -> str:
    return fresh_schema(pg_url)


@pytest.fixture
def tracker(schema_url: str, s3_url: str, tmp_path: Path) -> Iterator[PgTracker]:
    t = make_tracker(schema_url, s3_url, tmp_path / "cache")
    try:
        yield t
    finally:
        t.db.close()


def submit(t: PgTracker, wid: str, wtype: str, n: int = 5, chunk: int = 2) -> None:
    lines = (json.dumps({"id": f"{wid}-{i}", "n": i}).encode() for i in range(n))
    staged = t.stage_items(wid, lines, chunk)
    t.insert(
        {
            "workflow_id": wid,
            "workflow_type": wtype,
            "context": "default",
            "status": S.PENDING.value,
            "created_at": clock.wall(),
            "items_total": staged.count,
            "chunk_size": chunk,
            "chunks_total": len(staged.index),
            "params": "{}",
            "planned": 1,
            "items_file": staged.name,
            "items_sha256": staged.sha256,
        },
        staged.index,
    )


def db_now(url: str) -> float:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
    assert row is not None
    return float(row[0])


# -- rows, items, state machine -------------------------------------------------------------


def test_rows_items_and_state_machine(tracker: PgTracker) -> None:
    submit(tracker, "w1", "t-rows", n=5, chunk=2)
    with pytest.raises(ConflictError):
        submit(tracker, "w1", "t-rows")
    row = tracker.get("w1")
    assert row["status"] == "pending" and row["chunks_total"] == 3 and row["items_total"] == 5
    index = tracker.chunk_index("w1")
    chunks = [tracker.read_chunk(row["items_file"], index, n) for n in range(3)]
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert json.loads(chunks[2][0]) == {"id": "w1-4", "n": 4}
    with pytest.raises(NotFoundError):
        tracker.get("nope")
    with pytest.raises(ConflictError):
        tracker.move("w1", S.COMPLETED)  # pending -> completed is illegal
    claimed = tracker.claim("w1", "me", "host:1", clock.now())
    assert (
        claimed is not None and claimed["status"] == "processing" and claimed["worker"] == "host:1"
    )
    with pytest.raises(ConflictError):
        tracker.claim("w1", "other", "host:2", clock.now())
    assert tracker.chunk_done("w1", "someone-else", 0, 2, clock.now()) is None
    tracker.journal_add("w1", 0, 0, "append", "notes", "wf:w1:c0", ["a"], [])
    tracker.journal_add("w1", 0, 0, "append", "notes", "ignored", ["b"], [])  # first note wins
    done = tracker.chunk_done("w1", "me", 0, 2, clock.now())
    assert done is not None and done["chunks_done"] == 1 and done["items_processed"] == 2
    assert tracker.chunk_done("w1", "me", 0, 2, clock.now()) is None  # chunk 0 is counted once
    assert tracker.batch_ids("w1") == ["wf:w1:c0"]
    (note,) = tracker.journal("w1")
    assert note.ids == ["a"] and note.committed
    assert tracker.move("w1", S.COMPLETED, if_owner="other") is None
    moved = tracker.move(
        "w1", S.FAILED, if_owner="me", errors=["boom"], extra_errors=2, finished_at=clock.wall()
    )
    assert moved is not None and moved["status"] == "failed" and moved["error_count"] == 3
    assert json.loads(moved["errors"]) == ["boom"]
    assert tracker.check() == []
    assert tracker.aggregates()["by_status"] == {"failed": 1}
    assert tracker.purge([S.FAILED], clock.wall() + 1) == [row["items_file"]]
    assert not tracker.exists("w1") and list(tracker.journal("w1")) == []


def test_first_use_inside_a_unit_of_work_that_rolls_back(tracker: PgTracker) -> None:
    with pytest.raises(RuntimeError), tracker.db.transaction():
        submit(tracker, "wu", "t-unit")  # creates the tables, inside the unit of work
        assert tracker.exists("wu")
        raise RuntimeError("the unit of work fails")
    assert not tracker.exists("wu")  # the row went with it; the tables stayed
    submit(tracker, "wu", "t-unit")
    assert tracker.get("wu")["status"] == "pending"


def test_damaged_staged_object_is_found_by_check_and_read(
    schema_url: str, s3_url: str, tmp_path: Path
) -> None:
    first = make_tracker(schema_url, s3_url, tmp_path / "cache-a")
    submit(first, "wd", "t-damage", n=4, chunk=2)
    row = first.get("wd")
    key = f"{first.items.folder}/{row['items_file']}"
    data = bytearray(first.items.location.get(key) or b"")
    data[-3] ^= 0x01
    first.items.location.fs.pipe_file(key, bytes(data))  # damage the object itself
    problems = first.check()
    assert len(problems) == 1 and "SHA-256" in problems[0] and row["items_file"] in problems[0]
    # another host (empty cache) refuses to use the damaged object
    other = make_tracker(schema_url, s3_url, tmp_path / "cache-b")
    with pytest.raises(IntegrityError, match="SHA-256"):
        other.read_chunk(row["items_file"], other.chunk_index("wd"), 0)
    first.items.location.remove(key)
    assert "missing" in first.check()[0]
    first.db.close()
    other.db.close()


def test_orphans_are_staged_items_no_row_names(tracker: PgTracker) -> None:
    submit(tracker, "wo", "t-orphan")
    lone = tracker.stage_items("wx", [b'{"id": "x"}'], 10)  # staged, never inserted
    assert tracker.orphans(time.time() - 3600) == []  # too young
    found = tracker.orphans(time.time() + 60)
    assert [p.name for p in found] == [lone.name]
    tracker.discard_items(found[0].name)
    assert tracker.orphans(time.time() + 60) == []
    assert tracker.check() == []


# -- the database clock ----------------------------------------------------------------------


def test_heartbeats_and_stale_takeover_use_the_database_clock(
    tracker: PgTracker, schema_url: str
) -> None:
    submit(tracker, "wc", "t-clock")
    # a worker whose wall clock is a day behind and whose steady reading is from another boot
    wrong = clock.Stamp(clock.wall() - 86_400, "another-boot", -5.0)
    before = db_now(schema_url)
    claimed = tracker.claim(None, "owner-1", "skewed:1", wrong, types=["t-clock"])
    after = db_now(schema_url)
    assert claimed is not None and claimed["workflow_id"] == "wc"
    assert before <= claimed["heartbeat_at"] <= after  # the server's clock, not the worker's
    assert tracker.recover_stale(60, clock.now()) == []  # fresh on the server's clock
    time.sleep(1.2)
    assert tracker.recover_stale(60, clock.now()) == []
    assert tracker.heartbeat("wc", "owner-1", wrong)
    assert tracker.recover_stale(1.0, clock.now()) == []  # the beat just now counts
    time.sleep(1.2)
    assert tracker.recover_stale(1.0, clock.now()) == ["wc"]  # stale: handed back
    assert not tracker.heartbeat("wc", "owner-1", clock.now())  # no longer ours
    assert tracker.chunk_done("wc", "owner-1", 0, 2, clock.now()) is None
    taken = tracker.claim(None, "owner-2", "other:2", clock.now(), types=["t-clock"])
    assert taken is not None and taken["owner"] == "owner-2" and taken["chunks_done"] == 0


def test_a_stamp_taken_earlier_on_this_host_ages_the_heartbeat(tracker: PgTracker) -> None:
    submit(tracker, "wa", "t-age")
    now = clock.now()
    then = clock.Stamp(now.wall - 100, now.boot, now.steady - 100)  # 100 s ago here
    assert tracker.claim("wa", "dead", "gone:1", then) is not None
    assert tracker.recover_stale(1000, clock.now()) == []
    assert tracker.recover_stale(30, clock.now()) == ["wa"]
    tracker.claim("wa", "dead-again", "gone:2", clock.now())
    tracker.cancel("wa", clock.wall())  # asked to stop: a stale one ends cancelled
    assert tracker.recover_stale(0, clock.now()) == ["wa"]
    assert tracker.get("wa")["status"] == "cancelled"


# -- claims across processes -----------------------------------------------------------------

CLAIMER = """
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, os.path.join(sys.argv[5], "tests"))
from test_pg_workflows import make_tracker
from app.core import clock
url, files, cache, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
t = make_tracker(url, files, cache)
t.aggregates()  # connected before the start signal
while not go.exists():
    time.sleep(0.005)
mine = []
while True:
    row = t.claim(None, os.urandom(8).hex(), f"p{os.getpid()}", clock.now(), types=["t-race"])
    if row is None:
        break
    mine.append(row["workflow_id"])
print(json.dumps(mine))
"""


def test_claims_are_exclusive_across_processes(schema_url: str, tmp_path: Path) -> None:
    n, workers = 120, 4
    files = str(tmp_path / "files")  # a directory URL: this test is about the rows
    tracker = make_tracker(schema_url, files, tmp_path / "cache")
    for i in range(n):
        submit(tracker, f"r{i:03d}", "t-race", n=1, chunk=1)
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLAIMER,
                schema_url,
                files,
                str(tmp_path / f"c{k}"),
                str(go),
                str(ROOT),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(workers)
    ]
    time.sleep(0.5)
    go.touch()
    claimed: list[list[str]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        claimed.append(json.loads(out.strip().splitlines()[-1]))
    every = [wid for mine in claimed for wid in mine]
    assert sorted(every) == [f"r{i:03d}" for i in range(n)]  # each once, none lost
    assert sum(1 for mine in claimed if mine) >= 2  # really concurrent
    rows = tracker.list_rows(
        status="processing", workflow_type="t-race", context=None, limit=1000, offset=0
    )
    assert len(rows) == n and len({r["owner"] for r in rows}) == n
    tracker.db.close()


# -- whole stores on PostgreSQL: a chunk is one unit of work ---------------------------------


@pytest.fixture(params=BACKENDS[1:])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg_store(matrix_store_args: tuple[str, str | None]) -> Iterator[app.Store]:
    root, files = matrix_store_args
    with app.open_store(root, files=files) as store:
        assert isinstance(store.backend, PostgresBackend)
        yield store


def test_a_failing_chunk_leaves_none_of_its_writes(pg_store: app.Store) -> None:
    def twice_then_fail(c: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        c.append("notes", chunk)
        c.append("more", [{"id": f"m-{item['id']}"} for item in chunk])
        if chunk[0]["n"] == 4:
            raise RuntimeError("boom")

    pg_store.workflows.register("twice", twice_then_fail)
    data = [{"id": f"n{i}", "n": i} for i in range(8)]
    wf = pg_store.workflows.submit("twice", context="default", items=data, chunk_size=2)
    done = pg_store.workflows.process(wf.workflow_id)
    assert done.status == S.FAILED and done.chunks_done == 2 and "boom" in done.errors[0]
    ctx = pg_store.context("default")
    # chunks 0 and 1 committed; chunk 2 wrote twice, then raised: nothing of it is left
    assert sorted(r["id"] for r in ctx.query("notes")) == [f"n{i}" for i in range(4)]
    assert ctx.count("more") == 4
    notes = list(pg_store.workflows._tracker.journal(wf.workflow_id))
    assert {n.chunk_no for n in notes} == {0, 1} and all(n.committed for n in notes)
    back = pg_store.workflows.rollback(wf.workflow_id)
    assert back.status == S.ROLLED_BACK and back.errors == done.errors  # nothing left behind
    assert ctx.count("notes") == 0 and ctx.count("more") == 0


def test_a_collection_created_by_an_undone_chunk_does_not_linger(pg_store: app.Store) -> None:
    def create_then_fail(c: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        c.append("fresh", chunk)
        raise RuntimeError("after the first write")

    pg_store.workflows.register("create_then_fail", create_then_fail)
    wf = pg_store.workflows.submit("create_then_fail", context="default", items=[{"id": "a"}])
    assert pg_store.workflows.process(wf.workflow_id).status == S.FAILED  # first use of tables
    ctx = pg_store.context("default")
    assert "fresh" not in ctx.collections()
    receipt = ctx.append("fresh", [{"id": "b"}])  # the same process writes it for real
    assert receipt.count == 1 and [r["id"] for r in ctx.query("fresh")] == ["b"]


def test_a_chunk_taken_over_meanwhile_is_undone_and_redone_once(pg_store: app.Store) -> None:
    entered, release = threading.Event(), threading.Event()

    def gated(c: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        receipt = c.append("notes", chunk)
        assert receipt.count == len(chunk)  # provisional until the chunk commits
        if chunk[0]["n"] == 10 and not release.is_set():
            entered.set()
            assert release.wait(10)

    pg_store.workflows.register("gated", gated)
    data = [{"id": f"n{i}", "n": i} for i in range(40)]
    wf = pg_store.workflows.submit("gated", context="default", items=data, chunk_size=10)
    result: list[BatchWorkflow] = []
    first = threading.Thread(
        target=lambda: result.append(pg_store.workflows.process(wf.workflow_id))
    )
    first.start()
    assert entered.wait(10)
    (taken,) = pg_store.workflows.recover(stale_after=0)  # looks dead: handed back meanwhile
    assert taken.status == S.PENDING
    ctx = pg_store.context("default")
    assert ctx.count("notes") == 10  # the open chunk's write is not visible to anyone else
    release.set()
    first.join(10)
    assert result[0].status == S.PENDING and result[0].items_processed == 10
    assert ctx.count("notes") == 10  # ... and it was rolled back: the old owner lost it
    done = pg_store.workflows.process(wf.workflow_id)
    assert done.status == S.COMPLETED and done.items_processed == 40
    assert len(done.batch_ids) == 4
    history = ctx.history_many("notes", [f"n{i}" for i in range(40)])
    assert {len(h) for h in history.values()} == {1}


def test_chunks_writing_two_contexts_lock_them_in_name_order(pg_store: app.Store) -> None:
    """Two workflows, on contexts a and b, each also writing the other's context (b, a): with
    ``lock`` both take a then b, so they never wait for each other in a cycle."""
    both = threading.Barrier(2)

    def cross(c: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        c.lock(params["other"])
        c.append("notes", chunk)
        if chunk[0]["n"] == 0:
            with contextlib.suppress(threading.BrokenBarrierError):
                both.wait(2)  # the other workflow is at its first chunk too (or waits on us)
        other = pg_store.context(params["other"])
        other.append("mirror", [{"id": f"{c.name}-{i['id']}"} for i in chunk])  # same unit

    pg_store.workflows.register("cross", cross)
    wfs = [
        pg_store.workflows.submit(
            "cross",
            context=name,
            items=[{"id": f"n{i}", "n": i} for i in range(12)],
            params={"other": other},
            chunk_size=3,
        )
        for name, other in (("a", "b"), ("b", "a"))
    ]
    done: list[BatchWorkflow] = []
    threads = [
        threading.Thread(target=lambda w=w: done.append(pg_store.workflows.process(w.workflow_id)))
        for w in wfs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(w.status for w in done) == [S.COMPLETED, S.COMPLETED], done
    for name, other in (("a", "b"), ("b", "a")):
        assert pg_store.context(name).count("notes") == 12
        assert pg_store.context(other).count("mirror") == 12

    def late(c: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        c.append("x", chunk)
        c.lock("z")  # after a write: refused (the locks would not be in name order)

    pg_store.workflows.register("late", late)
    wf = pg_store.workflows.submit("late", context="a", items=[{"id": "q"}])
    failed = pg_store.workflows.process(wf.workflow_id)
    assert failed.status == S.FAILED and "ConflictError" in failed.errors[0]
    assert "x" not in pg_store.context("a").collections()  # the chunk's write went with it


def test_cancel_and_rollback_on_postgresql(pg_store: app.Store) -> None:
    ctx = pg_store.context("default")
    ctx.append("notes", [{"id": f"n{i}", "v": "original"} for i in range(0, 30, 2)])
    stop_at = threading.Event()

    def marking(c: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        c.append("notes", chunk)
        if chunk[0]["n"] == 10:
            stop_at.set()

    pg_store.workflows.register("marking", marking)
    data = [{"id": f"n{i}", "n": i, "v": "new"} for i in range(30)]
    wf = pg_store.workflows.submit("marking", context="default", items=data, chunk_size=5)
    pending = pg_store.workflows.submit("marking", context="default", items=data[:5])
    assert pg_store.workflows.cancel(pending.workflow_id).status == S.CANCELLED

    def cancel_when_asked(w: BatchWorkflow) -> None:
        if stop_at.is_set() and not w.cancel_requested:
            pg_store.workflows.cancel(wf.workflow_id)  # from the worker's own progress hook

    done = pg_store.workflows.process(wf.workflow_id, on_progress=cancel_when_asked)
    # asked after chunk 2 (read at chunk 3's commit): stops at the boundary after chunk 3
    assert done.status == S.CANCELLED and done.chunks_done == 4
    assert ctx.count("notes", {"v": "new"}) == 20
    back = pg_store.workflows.rollback(wf.workflow_id)
    assert back.status == S.ROLLED_BACK and back.errors == []
    assert ctx.count("notes") == 15 and ctx.count("notes", {"v": "original"}) == 15
    with pytest.raises(ConflictError):
        pg_store.workflows.rollback(wf.workflow_id)
    assert pg_store.workflows.verify() == []
    by_status = pg_store.stats()["workflows"]["by_status"]
    assert by_status["rolled_back"] == 1 and by_status["cancelled"] == 1
    tracker = pg_store.workflows._tracker
    assert isinstance(tracker, PgTracker)
    assert len(tracker.items.location.entries(tracker.items.folder)) == 2
    assert pg_store.workflows.purge(older_than=dt.timedelta(0)) == 2
    assert tracker.items.location.entries(tracker.items.folder) == []  # staged items gone too
    assert ctx.count("notes") == 15  # records stay


def test_an_unknown_tracker_schema_version_is_refused(tracker: PgTracker) -> None:
    submit(tracker, "wv", "t-version")
    with tracker.db.transaction() as conn:
        conn.execute("UPDATE ctxstore_meta SET schema_version = 99 WHERE part = 'tracker'")
    fresh = PgTracker(tracker.db, tracker.items)  # another process opening the store
    with pytest.raises(SchemaVersionError, match="ctxstore upgrade"):
        fresh.get("wv")
    with pytest.raises(SchemaVersionError):
        fresh.insert({"workflow_id": "wz"}, [])
    assert "schema version 99" in fresh.check()[0]


# -- several machines ------------------------------------------------------------------------

WORKER = """
import json, os, sys, time
import app
stale_after, deadline = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])

def slow_append(c, chunk, params):
    c.append("notes", chunk)
    with open("in-chunk", "a") as fh:  # in this worker's own cwd: written, not committed
        fh.write("x")
    time.sleep(params["pause"])  # between the write and the chunk's commit

with app.open_store(os.environ["CTXSTORE_ROOT"]) as store:
    wfs = store.workflows
    wfs.register("slow_append", slow_append)
    ran = []
    while time.monotonic() < deadline:
        wfs.recover(stale_after=stale_after)
        ran += [w.workflow_id for w in wfs.process_pending()]
        left = wfs.metrics()["by_status"]
        if left["pending"] == 0 and left["processing"] == 0:
            break
        time.sleep(0.2)
    print(json.dumps(ran))
"""


def several_machines(
    store: app.Store, root: str, files: str, tmp_path: Path, n_wf: int, chunks: int
) -> None:
    """``n_wf`` workflows of ``chunks`` chunks, 4 workers sharing only the database URL and
    the files URL (own working folder, own cwd); one is SIGKILLed mid-chunk."""
    per_chunk, stale_after = 2, 4.0
    store.workflows.register("slow_append", lambda c, chunk, params: None)  # never run here
    wids = [
        store.workflows.submit(
            "slow_append",
            context="default",
            items=[{"id": f"w{k}-{i}", "k": k, "i": i} for i in range(chunks * per_chunk)],
            params={"pause": 0.02},
            chunk_size=per_chunk,
            workflow_id=f"w{k:04d}",
        ).workflow_id
        for k in range(n_wf)
    ]
    procs = []
    for w in range(4):
        home = tmp_path / f"machine{w}"
        (home / "cwd").mkdir(parents=True)
        env = kind_env(root, files)
        env.update(CTXSTORE_WORK=str(home / "work"), PYTHONPATH=str(ROOT))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(stale_after), "600"],
                cwd=home / "cwd",
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    victim, marker = procs[1], tmp_path / "machine1" / "cwd" / "in-chunk"
    deadline = time.monotonic() + 120
    while store.workflows.metrics()["items_processed"] < n_wf * chunks * per_chunk // 4:
        assert time.monotonic() < deadline and victim.poll() is None, "no progress"
        time.sleep(0.05)
    seen = marker.stat().st_size if marker.exists() else 0
    while not marker.exists() or marker.stat().st_size == seen:  # its next chunk's write
        assert time.monotonic() < deadline and victim.poll() is None, "the victim is idle"
        time.sleep(0.001)
    victim.send_signal(signal.SIGKILL)  # in the pause after the write: mid-chunk
    victim.wait(30)
    name = f"{socket.gethostname()}:{victim.pid}"
    (held,) = [w for w in store.workflows.list(status="processing", limit=10) if w.worker == name]
    ran: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc is victim:
            assert proc.returncode == -signal.SIGKILL
            continue
        assert proc.returncode == 0, err
        ran += json.loads(out.strip().splitlines()[-1])
    assert set(ran) <= set(wids)
    taken_over = store.workflows.get(held.workflow_id)
    assert taken_over.status == S.COMPLETED and taken_over.worker != name  # by a survivor
    ctx = store.context("default")
    for wid in wids:
        wf = store.workflows.get(wid)
        assert wf.status == S.COMPLETED and wf.chunks_done == chunks, wf
        assert len(set(wf.batch_ids)) == chunks
    total = n_wf * chunks * per_chunk
    assert ctx.count("notes") == total
    ids = [f"w{k}-{i}" for k in range(n_wf) for i in range(chunks * per_chunk)]
    history = ctx.history_many("notes", ids)
    assert len(history) == total and {len(h) for h in history.values()} == {1}  # exactly once
    assert store.workflows.verify() == []


@pytest.mark.integration
@pytest.mark.parametrize("backend_kind", ["pg-s3"])
def test_several_machines_small(
    pg_store: app.Store, matrix_store_args: tuple[str, str | None], tmp_path: Path
) -> None:
    root, files = matrix_store_args
    assert files is not None
    several_machines(pg_store, root, files, tmp_path, n_wf=24, chunks=10)


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["pg-s3"])
def test_several_machines_200_workflows_of_10_chunks(
    pg_store: app.Store, matrix_store_args: tuple[str, str | None], tmp_path: Path
) -> None:
    root, files = matrix_store_args
    assert files is not None
    several_machines(pg_store, root, files, tmp_path, n_wf=200, chunks=10)


KILLED_WORKER = """
import os, sys, time
import app

def slow_append(c, chunk, params):
    c.append("notes", chunk)
    with open(params["marker"], "a") as fh:  # the write is made, the chunk not committed
        fh.write("x")
    time.sleep(params["pause"])

with app.open_store(os.environ["CTXSTORE_ROOT"]) as store:
    store.workflows.register("slow_append", slow_append)
    store.workflows.process(sys.argv[1])
"""


@pytest.mark.integration
@pytest.mark.parametrize("backend_kind", ["pg-files"])
def test_ten_sigkills_mid_chunk_then_every_chunk_once(
    pg_store: app.Store, matrix_store_args: tuple[str, str | None], tmp_path: Path
) -> None:
    root, files = matrix_store_args
    n_chunks, per = 40, 5
    marker = tmp_path / "in-chunk"
    pg_store.workflows.register("slow_append", lambda c, chunk, params: None)  # never run here
    wf = pg_store.workflows.submit(
        "slow_append",
        context="default",
        items=[{"id": f"n{i}"} for i in range(n_chunks * per)],
        params={"marker": str(marker), "pause": 0.05},
        chunk_size=per,
    )
    env = kind_env(root, files)
    env["PYTHONPATH"] = str(ROOT)
    kills = 0
    for _ in range(10):
        marker.write_text("")
        worker = subprocess.Popen(
            [sys.executable, "-c", KILLED_WORKER, wf.workflow_id],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while len(marker.read_text()) < 2:  # inside its second chunk, after the write
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        kills += worker.returncode == -signal.SIGKILL
        (back,) = pg_store.workflows.recover(stale_after=0)
        assert back.status == S.PENDING
    assert kills == 10
    killed = pg_store.workflows.get(wf.workflow_id)
    assert 10 <= killed.chunks_done < n_chunks
    pg_store.workflows.register("slow_append", lambda c, chunk, params: c.append("notes", chunk))
    done = pg_store.workflows.process(wf.workflow_id)
    assert done.status == S.COMPLETED and done.chunks_done == n_chunks
    assert len(done.batch_ids) == n_chunks == len(set(done.batch_ids))
    ctx = pg_store.context("default")
    assert ctx.count("notes") == n_chunks * per
    history = ctx.history_many("notes", [f"n{i}" for i in range(n_chunks * per)])
    assert {len(h) for h in history.values()} == {1}  # each chunk committed exactly once
