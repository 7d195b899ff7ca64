"""Workflow priorities and retries in one process (docs/api.md, "Batch workflows"), on every
backend of the matrix: claims by priority then age; a failing chunk retried with backoff
(the workflow waits ``pending``, unclaimed), ``attempts`` counted, every attempt's error
listed, and nothing committed twice."""

from __future__ import annotations

from typing import Any

import pytest

import app
from app.core.workflow_types import WorkflowStatus as S
from app.managers.workflows.retry import RetryPolicy

QUICK = RetryPolicy(base_s=0.01, cap_s=0.05)


def submit(store: app.Store, wtype: str, n: int = 1, **kw: Any) -> app.BatchWorkflow:
    data = [{"id": f"{kw.get('workflow_id', 'x')}-{i}", "v": i} for i in range(n)]
    return store.workflows.submit(wtype, context="default", items=data, **kw)


def flaky(fail_first: int, seen: dict[str, int], write_first: bool = True) -> Any:
    """A handler that writes its chunk, then raises on the chunk's first ``fail_first``
    attempts (counted per chunk in ``seen``)."""

    def handler(ctx: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        key = str(chunk[0]["id"])
        seen[key] = seen.get(key, 0) + 1
        if write_first:
            ctx.append("out", chunk)
        if seen[key] <= fail_first:
            raise RuntimeError(f"boom {seen[key]}")
        if not write_first:
            ctx.append("out", chunk)

    return handler


def test_process_pending_claims_by_priority_then_age(store: app.Store) -> None:
    order: list[str] = []
    store.workflows.register("note", lambda c, chunk, p: order.append(p["me"]))
    expected = []
    for i in range(4):
        for prio in (0, 7, -3):
            wid = f"p{prio}-{i}"
            store.workflows.submit(
                "note",
                context="default",
                items=[{"id": "a"}],
                params={"me": wid},
                workflow_id=wid,
                priority=prio,
            )
            expected.append((-prio, i, wid))
    done = store.workflows.process_pending()
    assert [w.workflow_id for w in done] == order == [wid for _, _, wid in sorted(expected)]
    assert [w.priority for w in done] == [7] * 4 + [0] * 4 + [-3] * 4


def test_a_chunk_failing_k_times_completes_exactly_once_with_attempts(
    store: app.Store, ctx: app.Context
) -> None:
    seen: dict[str, int] = {}
    store.workflows.register("flaky", flaky(2, seen))
    store.workflows.retry_policy = QUICK
    wf = submit(store, "flaky", 9, workflow_id="f", chunk_size=3, max_retries=3)
    done = store.workflows.process(wf.workflow_id)
    assert done.status == S.COMPLETED, done.errors
    assert done.items_processed == 9 and done.chunks_done == 3
    assert done.attempts == 3 * 3  # each chunk: 2 failed attempts + the one that committed
    assert done.error_count == 6 and len(done.errors) == 6
    assert done.errors[0].startswith("chunk 0, attempt 1: RuntimeError: boom 1")
    assert done.not_before is None
    assert ctx.count("out") == 9
    for i in range(9):  # one version each: no attempt committed twice
        assert len(ctx.history("out", f"f-{i}")) == 1
    assert len(done.batch_ids) == len(set(done.batch_ids)) == 3


def test_a_chunk_that_always_fails_fails_after_max_retries_listing_every_attempt(
    store: app.Store, ctx: app.Context
) -> None:
    seen: dict[str, int] = {}
    store.workflows.register("flaky", flaky(99, seen))
    store.workflows.retry_policy = QUICK
    wf = submit(store, "flaky", 4, workflow_id="g", chunk_size=2, max_retries=2)
    done = store.workflows.process(wf.workflow_id)
    assert done.status == S.FAILED and done.finished_at is not None
    assert done.attempts == 3 and seen == {"g-0": 3}  # the first chunk, 1 + 2 retries
    assert done.errors == [f"chunk 0, attempt {n}: RuntimeError: boom {n}" for n in (1, 2, 3)]
    assert done.error_count == 3 and done.items_processed == 0
    for rid in ("g-0", "g-1"):  # at most the first attempt's write, never a second one
        assert len(ctx.history("out", rid)) <= 1
    assert ctx.count("out") in (0, 2)  # 2 on a directory store (committed call), 0 on a server
    assert store.workflows.rollback(wf.workflow_id).status == S.ROLLED_BACK
    assert ctx.count("out") == 0


def test_invalid_input_is_never_retried(store: app.Store) -> None:
    calls: list[int] = []

    def bad(ctx: Any, chunk: list[dict[str, Any]], params: dict[str, Any]) -> None:
        calls.append(1)
        raise app.InvalidInput("items: not for me")

    store.workflows.register("bad", bad)
    done = store.workflows.process(submit(store, "bad", max_retries=5).workflow_id)
    assert done.status == S.FAILED and done.attempts == 1 and calls == [1]
    assert done.errors == ["chunk 0, attempt 1: InvalidInput: items: not for me"]


def test_a_retry_waits_pending_without_a_claim_until_its_time(
    store: app.Store, ctx: app.Context
) -> None:
    seen: dict[str, int] = {}
    store.workflows.register("flaky", flaky(1, seen, write_first=False))
    store.workflows.retry_policy = RetryPolicy(base_s=600.0, cap_s=600.0)
    wf = submit(store, "flaky", 2, workflow_id="h", max_retries=1)
    (back,) = store.workflows.process_pending()
    assert back.workflow_id == wf.workflow_id
    assert back.status == S.PENDING and back.not_before is not None
    assert back.not_before > back.created_at and back.attempts == 1
    assert back.errors == ["chunk 0, attempt 1: RuntimeError: boom 1"]
    assert store.workflows.process_pending() == []  # not before its time
    metrics = store.workflows.metrics()
    assert metrics["waiting_retry"] == 1 and metrics["attempts"] == 1
    listed = store.workflows.list(status="pending")
    assert [w.workflow_id for w in listed] == ["h"] and listed[0].not_before is not None
    # an explicit process runs it now (no claim was held, so nothing is waited for)
    store.workflows.retry_policy = QUICK
    done = store.workflows.process(wf.workflow_id)
    assert done.status == S.COMPLETED and done.attempts == 2 and done.not_before is None
    assert ctx.count("out") == 2
    assert store.workflows.metrics()["waiting_retry"] == 0


def test_a_workflow_waiting_for_a_retry_can_be_cancelled(store: app.Store) -> None:
    store.workflows.register("flaky", flaky(5, {}, write_first=False))
    store.workflows.retry_policy = RetryPolicy(base_s=600.0, cap_s=600.0)
    wf = submit(store, "flaky", max_retries=3)
    assert store.workflows.process_pending()[0].status == S.PENDING
    assert store.workflows.cancel(wf.workflow_id).status == S.CANCELLED


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("priority", 10**7),
        ("priority", "1"),
        ("priority", True),
        ("max_retries", -1),
        ("max_retries", 51),
        ("max_retries", 1.5),
    ],
)
def test_bad_priority_and_retries_name_the_argument(
    store: app.Store, argument: str, value: object
) -> None:
    with pytest.raises(app.InvalidInput, match=f"^{argument}: must be an int in") as err:
        store.workflows.submit(
            "append",
            context="default",
            items=[{"id": "a"}],
            params={"collection": "t"},
            **{argument: value},
        )
    assert err.value.argument == argument
    assert store.workflows.list() == []


def test_priority_and_retries_are_kept_and_listed(store: app.Store) -> None:
    wf = store.workflows.submit(
        "append",
        context="default",
        items=[{"id": "a"}],
        params={"collection": "t"},
        priority=-4,
        max_retries=2,
    )
    got = store.workflows.get(wf.workflow_id)
    assert (got.priority, got.max_retries, got.attempts, got.not_before) == (-4, 2, 0, None)
    done = store.workflows.process(wf.workflow_id)
    assert done.status == S.COMPLETED and done.attempts == 1 and done.error_count == 0


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    import random

    policy = RetryPolicy(base_s=1.0, cap_s=10.0)
    rng = random.Random(7)
    for failures, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (30, 10.0)):
        delays = [policy.delay(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered: workers failing together spread out


def test_a_failed_attempt_of_a_lost_claim_changes_nothing(store: app.Store) -> None:
    from app.core import clock

    wf = submit(store, "append", params={"collection": "t"})
    tracker = store.workflows._tracker
    assert tracker.claim(wf.workflow_id, "owner-1", "w:1", clock.now()) is not None
    assert tracker.attempt_failed(wf.workflow_id, "someone-else", "x", 1.0, clock.wall()) is None
    row = tracker.get(wf.workflow_id)
    assert (row["status"], row["attempts"], row["error_count"]) == ("processing", 0, 0)
    back = tracker.attempt_failed(
        wf.workflow_id, "owner-1", "chunk 0, attempt 1: E", 30.0, clock.wall()
    )
    assert back is not None and back["status"] == "pending" and back["owner"] is None
    assert back["not_before"] is not None and back["chunk_failures"] == 1
    # not claimable before its time, by priority order or otherwise
    assert tracker.claim(None, "owner-2", "w:2", clock.now(), types=["append"]) is None
