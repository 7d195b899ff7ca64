"""The batch workflow tracker in one process (SPEC section 7)."""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3
import threading
import time
from typing import Any

import pytest
from recdata import analogy

import app
from app.core import clock
from app.core.workflow_types import (
    TRANSITIONS,
    BatchWorkflow,
    WorkflowStatus,
    check_transition,
)

S = WorkflowStatus


def items(n: int, start: int = 0, **extra: object) -> list[dict[str, object]]:
    return [analogy(i, **extra) for i in range(start, start + n)]


def run(store: app.Store, wtype: str, data: Any = None, **kw: Any) -> BatchWorkflow:
    wf = store.workflows.submit(wtype, context="default", items=data, **kw)
    return store.workflows.process(wf.workflow_id)


# -- state machine ------------------------------------------------------------------------


def test_transition_table_is_exactly_the_spec() -> None:
    legal = {
        (S.PENDING, S.PROCESSING),
        (S.PENDING, S.CANCELLED),
        (S.PROCESSING, S.COMPLETED),
        (S.PROCESSING, S.FAILED),
        (S.PROCESSING, S.CANCELLED),
        (S.PROCESSING, S.PENDING),
        (S.COMPLETED, S.ROLLED_BACK),
        (S.FAILED, S.ROLLED_BACK),
        (S.CANCELLED, S.ROLLED_BACK),
    }
    for old, new in itertools.product(S, S):
        if (old, new) in legal:
            check_transition(old, new)
            assert new in TRANSITIONS[old]
        else:
            with pytest.raises(app.ConflictError, match="illegal workflow transition"):
                check_transition(old.value, new.value)
    assert isinstance(S.PENDING, str) and S("rolled_back") is S.ROLLED_BACK


def test_illegal_moves_through_the_api(store: app.Store, ctx: app.Context) -> None:
    wfs = store.workflows
    pending = wfs.submit("analogy_creation", context="default", items=items(3))
    with pytest.raises(app.ConflictError):
        wfs.rollback(pending.workflow_id)
    done = wfs.process(pending.workflow_id)
    assert done.status == S.COMPLETED
    with pytest.raises(app.ConflictError):
        wfs.process(done.workflow_id)
    with pytest.raises(app.ConflictError):
        wfs.cancel(done.workflow_id)
    assert wfs.rollback(done.workflow_id).status == S.ROLLED_BACK
    with pytest.raises(app.ConflictError):
        wfs.rollback(done.workflow_id)
    with pytest.raises(app.ConflictError):
        wfs.cancel(done.workflow_id)
    assert wfs.get(done.workflow_id).status == S.ROLLED_BACK


def test_unknown_ids_types_and_bad_input(store: app.Store) -> None:
    wfs = store.workflows
    for call in (wfs.get, wfs.process, wfs.cancel, wfs.rollback):
        with pytest.raises(app.NotFoundError):
            call("no-such-workflow")
    with pytest.raises(app.InvalidInput, match="workflow_type"):
        wfs.submit("teleport", context="default", items=[])
    with pytest.raises(app.InvalidInput, match="context"):
        wfs.submit("append", context="../evil", items=[], params={"collection": "x"})
    with pytest.raises(app.InvalidInput, match="params"):
        wfs.submit("append", context="default", items=[])  # no collection
    with pytest.raises(app.InvalidInput, match="params"):
        wfs.submit("delete", context="default", params={"collection": "x"})  # no where
    with pytest.raises(app.InvalidInput, match="unknown operator"):
        wfs.submit(
            "delete", context="default", params={"collection": "x", "where": {"a": {"$x": 1}}}
        )
    with pytest.raises(app.InvalidInput, match="chunk_size"):
        wfs.submit("analogy_creation", context="default", items=[], chunk_size=0)
    with pytest.raises(app.InvalidInput, match="workflow_id"):
        wfs.submit("analogy_creation", context="default", items=[], workflow_id="a/b")
    with pytest.raises(app.InvalidInput, match="items"):
        wfs.submit("analogy_creation", context="default", items=[{"x": float("nan")}])
    with pytest.raises(app.InvalidInput, match="status"):
        wfs.list(status="sleeping")
    with pytest.raises(app.InvalidInput, match="stale_after"):
        wfs.recover(stale_after=-1)
    with pytest.raises(app.InvalidInput, match="older_than"):
        wfs.purge(older_than=5)  # type: ignore[arg-type]
    wfs.submit("analogy_creation", context="default", items=[], workflow_id="fixed")
    with pytest.raises(app.ConflictError, match="already exists"):
        wfs.submit("analogy_creation", context="default", items=[], workflow_id="fixed")
    assert wfs.list() and all(w.status == S.PENDING for w in wfs.list())


# -- processing ---------------------------------------------------------------------------


def test_submit_stages_and_process_commits_chunk_batches(
    store: app.Store, ctx: app.Context
) -> None:
    wfs = store.workflows
    wf = wfs.submit("analogy_creation", context="default", items=items(2500), chunk_size=1000)
    assert (wf.status, wf.items_total, wf.chunks_total, wf.items_processed) == (
        S.PENDING,
        2500,
        3,
        0,
    )
    assert ctx.count("analogies") == 0  # nothing before process
    seen: list[int] = []
    done = wfs.process(wf.workflow_id, on_progress=lambda w: seen.append(w.items_processed))
    assert done.status == S.COMPLETED and done.items_processed == 2500
    assert seen == [1000, 2000, 2500]
    assert done.batch_ids == [f"wf:{wf.workflow_id}:c{n}" for n in range(3)]
    assert done.started_at is not None and done.finished_at is not None
    assert done.error_count == 0 and done.errors == []
    assert ctx.count("analogies") == 2500
    assert ctx.get("analogies", "a2499")["quality_score"] == 0.99
    # a chunk's batch id is reserved for the workflow (SPEC 16)
    with pytest.raises(app.InvalidInput, match="reserved"):
        ctx.append("analogies", items(1000), batch_id=done.batch_ids[0])
    assert ctx.count("analogies") == 2500


def test_items_without_ids_get_stable_ids_at_submit(store: app.Store, ctx: app.Context) -> None:
    data = [{"name": f"concept {i}"} for i in range(10)]
    wf = run(store, "concept_batch", data, chunk_size=4)
    assert wf.status == S.COMPLETED and ctx.count("concepts") == 10
    assert len({r["id"] for r in ctx.query("concepts")}) == 10


def test_append_and_frame_types(store: app.Store, ctx: app.Context) -> None:
    a = run(store, "append", [{"id": "n1", "v": 1}], params={"collection": "notes"})
    f = run(store, "frame_expansion", [{"id": "f1", "name": "commerce"}])
    assert a.status == f.status == S.COMPLETED
    assert ctx.get("notes", "n1") == {"id": "n1", "v": 1}
    assert ctx.get("frames", "f1")["name"] == "commerce"


def test_stop_hands_back_and_resume_is_exactly_once(store: app.Store, ctx: app.Context) -> None:
    wfs = store.workflows
    wf = wfs.submit("analogy_creation", context="default", items=items(50), chunk_size=10)
    stop = threading.Event()

    def progress(w: BatchWorkflow) -> None:
        if w.items_processed >= 20:
            stop.set()

    half = wfs.process(wf.workflow_id, stop=stop, on_progress=progress)
    assert half.status == S.PENDING and half.items_processed == 20
    assert ctx.count("analogies") == 20
    done = wfs.process(wf.workflow_id)
    assert done.status == S.COMPLETED and done.items_processed == 50
    histories = ctx.history_many("analogies", [f"a{i}" for i in range(50)])
    assert all(len(h) == 1 for h in histories.values())


def test_process_pending_runs_oldest_first_and_respects_limit(store: app.Store) -> None:
    wfs = store.workflows
    ids = [
        wfs.submit("analogy_creation", context="default", items=items(5, 10 * i)).workflow_id
        for i in range(4)
    ]
    first = wfs.process_pending(limit=2)
    assert [w.workflow_id for w in first] == ids[:2]
    rest = wfs.process_pending()
    assert [w.workflow_id for w in rest] == ids[2:]
    assert wfs.process_pending() == []
    assert store.context("default").count("analogies") == 20


# -- failure and rollback -----------------------------------------------------------------


def test_failing_chunk_fails_and_rollback_restores(store: app.Store, ctx: app.Context) -> None:
    ctx.append("analogies", [analogy(1, note="before"), analogy(2, note="before")])
    ctx.delete("analogies", ["a2"])  # a2 existed once, is deleted now
    data = items(30)
    data[25] = {"id": "bad", "source_domain": "x"}  # misses fields: chunk 2 fails
    wf = run(store, "analogy_creation", data, chunk_size=10)
    assert wf.status == S.FAILED
    assert wf.items_processed == 20 and wf.error_count == 1
    assert len(wf.errors) == 1 and wf.errors[0].startswith("chunk 2: InvalidInput")
    assert len(wf.errors[0]) < 400
    assert ctx.count("analogies") == 20  # chunks 0 and 1 stay until rollback
    ctx.append("analogies", [analogy(5, note="someone else")])  # changed by someone since
    back = store.workflows.rollback(wf.workflow_id)
    assert back.status == S.ROLLED_BACK
    assert back.error_count == 2 and "analogies/a5" in back.errors[-1]  # failure + left
    assert ctx.get("analogies", "a1")["note"] == "before"  # overwritten: previous version back
    assert ctx.get("analogies", "a5")["note"] == "someone else"  # left as it is
    remaining = {r["id"] for r in ctx.query("analogies")}
    assert remaining == {"a1", "a5"}  # created ones tombstoned, a2 deleted again
    assert [v.deleted for v in ctx.history("analogies", "a0")] == [False, True]
    assert len(ctx.history("analogies", "a1")) == 3  # before, workflow, restored


def test_handler_exception_short_error_text(store: app.Store) -> None:
    def boom(ctx: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        raise RuntimeError("x" * 10_000)

    store.workflows.register("boom", boom)
    wf = store.workflows.submit("boom", context="default", items=[{"a": 1}])
    done = store.workflows.process(wf.workflow_id)
    assert done.status == S.FAILED and done.error_count == 1
    assert done.errors[0].startswith("chunk 0: RuntimeError: xxx") and len(done.errors[0]) <= 340


def test_rollback_of_delete_workflow_by_criteria(store: app.Store, ctx: app.Context) -> None:
    ctx.append("analogies", items(40))
    where = {"quality_score": {"$lt": 0.1}}
    assert ctx.count("analogies", where) == 10
    wf = store.workflows.submit(
        "delete",
        context="default",
        params={"collection": "analogies", "where": where},
        chunk_size=3,
    )
    assert wf.items_total == 0  # targets are resolved when processing starts
    done = store.workflows.process(wf.workflow_id)
    assert done.status == S.COMPLETED
    assert (done.items_total, done.items_processed, done.chunks_total) == (10, 10, 4)
    assert ctx.count("analogies") == 30 and ctx.count("analogies", where) == 0
    back = store.workflows.rollback(wf.workflow_id)
    assert back.status == S.ROLLED_BACK and back.errors == []
    assert ctx.count("analogies") == 40
    assert ctx.get("analogies", "a3") == analogy(3)


def test_delete_workflow_with_explicit_ids(store: app.Store, ctx: app.Context) -> None:
    ctx.append("notes", [{"id": f"n{i}", "k": i % 2} for i in range(6)])
    wf = store.workflows.submit(
        "delete",
        context="default",
        items=[{"id": "n0"}, {"id": "n1"}, {"id": "n2"}],
        params={"collection": "notes", "where": {"k": 0}},
    )
    assert store.workflows.process(wf.workflow_id).status == S.COMPLETED
    assert sorted(r["id"] for r in ctx.query("notes")) == ["n1", "n3", "n4", "n5"]


def test_rollback_after_compaction_is_a_conflict(store: app.Store, ctx: app.Context) -> None:
    ctx.append("analogies", items(10, note="v1"))
    wf = run(store, "analogy_creation", items(10, note="v2"))
    assert wf.status == S.COMPLETED
    ctx.compact("analogies")
    with pytest.raises(app.ConflictError, match="compacted away"):
        store.workflows.rollback(wf.workflow_id)
    assert store.workflows.get(wf.workflow_id).status == S.COMPLETED
    assert all(r["note"] == "v2" for r in ctx.query("analogies"))  # nothing was written


def test_rollback_after_compaction_of_created_records_works(
    store: app.Store, ctx: app.Context
) -> None:
    wf = run(store, "analogy_creation", items(10))
    ctx.compact("analogies")  # the workflow's versions survive: nothing earlier was needed
    assert store.workflows.rollback(wf.workflow_id).status == S.ROLLED_BACK
    assert ctx.count("analogies") == 0


# -- cancel -------------------------------------------------------------------------------


def test_cancel_pending(store: app.Store, ctx: app.Context) -> None:
    wf = store.workflows.submit("analogy_creation", context="default", items=items(5))
    cancelled = store.workflows.cancel(wf.workflow_id)
    assert cancelled.status == S.CANCELLED and cancelled.finished_at is not None
    with pytest.raises(app.ConflictError):
        store.workflows.process(wf.workflow_id)
    assert store.workflows.process_pending() == []
    assert ctx.count("analogies") == 0
    assert store.workflows.rollback(wf.workflow_id).status == S.ROLLED_BACK


def test_cancel_processing_stops_at_next_chunk(store: app.Store, ctx: app.Context) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(c: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        c.append("notes", chunk)
        if chunk[0]["n"] == 20:  # third chunk: wait for the cancel
            entered.set()
            assert release.wait(10)

    store.workflows.register("slow", slow)
    wf = store.workflows.submit(
        "slow", context="default", items=[{"id": f"n{i}", "n": i} for i in range(50)], chunk_size=10
    )
    result: list[BatchWorkflow] = []
    worker = threading.Thread(target=lambda: result.append(store.workflows.process(wf.workflow_id)))
    worker.start()
    assert entered.wait(10)
    asked = store.workflows.cancel(wf.workflow_id)
    assert asked.status == S.PROCESSING and asked.cancel_requested
    release.set()
    worker.join(10)
    final = result[0]
    assert final.status == S.CANCELLED and final.items_processed == 30
    assert ctx.count("notes") == 30  # the chunk in flight finished, nothing after it
    assert store.workflows.rollback(wf.workflow_id).status == S.ROLLED_BACK
    assert ctx.count("notes") == 0


# -- custom handlers ----------------------------------------------------------------------


def test_custom_handler_writes_exactly_once_and_rolls_back(
    store: app.Store, ctx: app.Context
) -> None:
    calls: list[int] = []

    def fan_out(c: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        calls.append(len(chunk))
        c.append("frames", [{"id": f"f{it['k']}", "name": it["name"]} for it in chunk])
        c.append(params["log"], [{"id": f"l{it['k']}", "seen": True} for it in chunk])

    store.workflows.register("fan_out", fan_out)
    with pytest.raises(app.ConflictError):
        store.workflows.register("append", fan_out)
    with pytest.raises(app.InvalidInput):
        store.workflows.register("x", 42)  # type: ignore[arg-type]
    data = [{"k": i, "name": f"frame {i}"} for i in range(7)]
    wf = store.workflows.submit(
        "fan_out", context="default", items=data, params={"log": "seen"}, chunk_size=3
    )
    done = store.workflows.process(wf.workflow_id)
    assert done.status == S.COMPLETED and calls == [3, 3, 1]
    assert len(done.batch_ids) == 6 and done.batch_ids[1] == f"wf:{wf.workflow_id}:c0.1"
    assert ctx.count("frames") == 7 and ctx.count("seen") == 7
    assert "fan_out" in store.workflows.handlers()
    back = store.workflows.rollback(wf.workflow_id)
    assert back.status == S.ROLLED_BACK
    assert ctx.count("frames") == 0 and ctx.count("seen") == 0


def test_unregistered_type_is_not_claimed(store: app.Store, store_root: Any) -> None:
    store.workflows.register("special", lambda c, chunk, p: None)
    wf = store.workflows.submit("special", context="default", items=[{"a": 1}])
    with app.open_store(store_root) as other:  # a process that does not know "special"
        assert other.workflows.process_pending() == []
        with pytest.raises(app.InvalidInput, match="no handler"):
            other.workflows.process(wf.workflow_id)
    assert store.workflows.get(wf.workflow_id).status == S.PENDING


# -- listing, metrics, purge, recover ------------------------------------------------------


def test_list_filters_and_pagination(store: app.Store) -> None:
    wfs = store.workflows
    a = run(store, "analogy_creation", items(2))
    c = wfs.submit("concept_batch", context="other", items=[{"name": "x"}])
    wfs.cancel(c.workflow_id)
    p = wfs.submit("analogy_creation", context="default", items=items(1))
    assert [w.workflow_id for w in wfs.list()] == [p.workflow_id, c.workflow_id, a.workflow_id]
    assert [w.workflow_id for w in wfs.list(status="completed")] == [a.workflow_id]
    assert [w.workflow_id for w in wfs.list(status=S.PENDING)] == [p.workflow_id]
    assert [w.workflow_id for w in wfs.list(context="other")] == [c.workflow_id]
    assert [w.workflow_id for w in wfs.list(workflow_type="analogy_creation")] == [
        p.workflow_id,
        a.workflow_id,
    ]
    assert [w.workflow_id for w in wfs.list(limit=1, offset=1)] == [c.workflow_id]
    assert wfs.list(limit=0) == []


def test_metrics_values(store: app.Store) -> None:
    wfs = store.workflows
    run(store, "analogy_creation", items(30), chunk_size=10)
    run(store, "analogy_creation", items(20, 100))
    bad = items(5)
    bad[0] = {"id": "x"}
    run(store, "analogy_creation", bad)
    wfs.submit("concept_batch", context="default", items=[{"name": "n"}])
    m = wfs.metrics()
    assert m["by_status"] == {
        "pending": 1,
        "processing": 0,
        "completed": 2,
        "failed": 1,
        "cancelled": 0,
        "rolled_back": 0,
    }
    assert m["by_type"] == {"analogy_creation": 3, "concept_batch": 1}
    assert m["items_processed"] == 50 and m["completed_items"] == 50 and m["total"] == 4
    assert m["mean_duration_s"] is not None and m["mean_duration_s"] > 0
    assert m["items_per_s"] is not None and m["items_per_s"] > 0


@pytest.mark.embedded_only("counts the staged item files in the workflows folder")
def test_purge_keeps_unfinished_and_records(store: app.Store, ctx: app.Context) -> None:
    wfs = store.workflows
    done = run(store, "analogy_creation", items(10))
    cancelled = wfs.cancel(
        wfs.submit("analogy_creation", context="default", items=items(1)).workflow_id
    )
    pending = wfs.submit("analogy_creation", context="default", items=items(3, 50))
    items_dir = store.root / "workflows" / "items"
    assert len(list(items_dir.iterdir())) == 3
    assert wfs.purge(older_than=dt.timedelta(hours=1)) == 0  # too recent
    assert wfs.purge(older_than=dt.timedelta(0)) == 2
    for wid in (done.workflow_id, cancelled.workflow_id):
        with pytest.raises(app.NotFoundError):
            wfs.get(wid)
    assert wfs.get(pending.workflow_id).status == S.PENDING
    assert len(list(items_dir.iterdir())) == 1
    assert ctx.count("analogies") == 10  # records the workflows wrote stay
    assert wfs.process(pending.workflow_id).status == S.COMPLETED


def test_recover_only_stale_processing(store: app.Store, store_root: Any) -> None:
    wf = store.workflows.submit("analogy_creation", context="default", items=items(3))
    # claim it as a worker that then vanished (no heartbeat thread, no process)
    then = clock.now()
    then = clock.Stamp(then.wall - 100, then.boot, then.steady - 100)
    store.workflows._tracker.claim(wf.workflow_id, "dead-owner", "gone:1", then)
    assert store.workflows.get(wf.workflow_id).status == S.PROCESSING
    with pytest.raises(app.ConflictError):
        store.workflows.process(wf.workflow_id)
    assert store.workflows.recover(stale_after=1000) == []
    back = store.workflows.recover(stale_after=30)
    assert [w.workflow_id for w in back] == [wf.workflow_id] and back[0].status == S.PENDING
    assert store.workflows.process(wf.workflow_id).status == S.COMPLETED


def test_recover_honours_a_cancel_request(store: app.Store) -> None:
    wf = store.workflows.submit("analogy_creation", context="default", items=items(3))
    store.workflows._tracker.claim(wf.workflow_id, "dead-owner", "gone:1", clock.now())
    store.workflows.cancel(wf.workflow_id)
    back = store.workflows.recover(stale_after=0)
    assert back[0].status == S.CANCELLED


# -- damage -------------------------------------------------------------------------------


@pytest.mark.embedded_only("damages a staged item file in the workflows folder")
def test_damaged_staged_items_fail_the_workflow_and_verify_names_the_file(
    store: app.Store, ctx: app.Context
) -> None:
    wf = store.workflows.submit(
        "analogy_creation", context="default", items=items(20), chunk_size=10
    )
    (path,) = (store.root / "workflows" / "items").iterdir()
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    problems = store.workflows.verify()
    assert len(problems) == 1 and str(path) in problems[0]
    done = store.workflows.process(wf.workflow_id)
    assert done.status == S.FAILED and "IntegrityError" in done.errors[0]
    assert str(path.name) in done.errors[0] or "damaged" in done.errors[0]
    assert ctx.count("analogies") == 10  # the intact first chunk was committed


@pytest.mark.embedded_only("rewrites the version in tracker.sqlite")
def test_unknown_tracker_version_refused(store_root: Any) -> None:
    with app.open_store(store_root) as s:
        s.workflows.metrics()
    db = sqlite3.connect(store_root / "workflows" / "tracker.sqlite")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with app.open_store(store_root) as s, pytest.raises(app.SchemaVersionError):
        s.workflows.metrics()


def test_batch_persistence_protocol(store: app.Store) -> None:
    from app.protocols import BatchPersistenceProtocol

    assert isinstance(store.workflows, BatchPersistenceProtocol)


@pytest.mark.embedded_only("builds a WorkflowManager over the embedded workflows folder")
def test_heartbeat_keeps_a_slow_chunk_from_looking_stale(store: app.Store) -> None:
    from app.managers.workflows import WorkflowManager

    manager = WorkflowManager(store.root / "workflows", store, heartbeat_interval=0.05)
    entered, release = threading.Event(), threading.Event()

    def slow(c: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        entered.set()
        assert release.wait(10)

    manager.register("slow", slow)
    wf = manager.submit("slow", context="default", items=[{"a": 1}])
    worker = threading.Thread(target=manager.process, args=(wf.workflow_id,))
    worker.start()
    try:
        assert entered.wait(10)
        time.sleep(0.6)  # the chunk runs far longer than stale_after below
        assert manager.recover(stale_after=0.4) == []
        before = manager.get(wf.workflow_id).heartbeat_at
        time.sleep(0.2)
        after = manager.get(wf.workflow_id).heartbeat_at
        assert before is not None and after is not None and after > before
    finally:
        release.set()
        worker.join(10)
        manager.close()
    assert store.workflows.get(wf.workflow_id).status == S.COMPLETED


def test_a_worker_that_lost_its_workflow_stops_and_the_new_owner_finishes(
    store: app.Store, ctx: app.Context
) -> None:
    entered, release = threading.Event(), threading.Event()

    def gated(c: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        c.append("notes", chunk)
        if chunk[0]["n"] == 10 and not release.is_set():
            entered.set()
            assert release.wait(10)

    store.workflows.register("gated", gated)
    data = [{"id": f"n{i}", "n": i} for i in range(40)]
    wf = store.workflows.submit("gated", context="default", items=data, chunk_size=10)
    result: list[BatchWorkflow] = []
    first = threading.Thread(target=lambda: result.append(store.workflows.process(wf.workflow_id)))
    first.start()
    assert entered.wait(10)
    (taken,) = store.workflows.recover(stale_after=0)  # looks dead: handed back meanwhile
    assert taken.status == S.PENDING
    release.set()
    first.join(10)
    assert result[0].status == S.PENDING  # the old owner noticed and stopped
    assert result[0].items_processed == 10  # its last chunk was committed but not counted
    done = store.workflows.process(wf.workflow_id)  # the new owner redoes chunk 1: a duplicate
    assert done.status == S.COMPLETED and done.items_processed == 40
    assert ctx.count("notes") == 40
    assert {len(h) for h in ctx.history_many("notes", [f"n{i}" for i in range(40)]).values()} == {1}


@pytest.mark.embedded_only("counts the staged item files in the workflows folder")
def test_staged_items_keep_what_the_record_store_would_store(
    store: app.Store, ctx: app.Context
) -> None:
    import enum

    from pydantic import BaseModel

    class Colour(enum.Enum):
        RED = "red"

    class Frame(BaseModel):
        id: str
        name: str

    when = dt.datetime(2024, 5, 1, 12, 0)  # naive: stored as UTC
    data = [
        {"id": "n1", "at": when, "colour": Colour.RED, "none": None, "text": "null"},
        Frame(id="n2", name="frame"),
    ]
    wf = run(store, "append", data, params={"collection": "notes"})
    assert wf.status == S.COMPLETED
    direct = store.context("direct")
    direct.append("notes", data)
    assert ctx.query("notes") == direct.query("notes")
    assert ctx.get("notes", "n1")["at"] == "2024-05-01T12:00:00+00:00"
    for bad in ({"x": float("inf")}, {1: "non-string key"}, {"x": {1, 2}}):
        with pytest.raises(app.InvalidInput, match=r"items\[0\]"):
            store.workflows.submit(
                "append", context="default", items=[bad], params={"collection": "notes"}
            )
    assert len(list((store.root / "workflows" / "items").iterdir())) == 1  # no leftovers
