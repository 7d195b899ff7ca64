"""Crash children and checks for the PostgreSQL crash/fault table (test_rel_pg.py).

A child is forked by the crash zygote (tests/workers/zygote.py, command ``module="pg_ops"``)
and runs ``run_child(op, spec, start, count, arm)``; ``spec`` is JSON: ``{"url": PostgreSQL URL,
"files": files URL, "work": a private working folder (a host of its own: nothing local is
shared with the parent or another child), "ctx": the context, "retry": bool,
"crash_after_upload": bool, "env": extra environment (the S3 endpoint)}``. Steps and
acknowledgements follow ops.py: ``ack <k>`` (one ``os.write``) after step ``k`` returned.

Operations:
- ``append``: step ``k`` appends batch ``A<k>`` (``batch``, batch id = the tag) to ``items``;
  with ``retry`` a step that fails (the server was killed) is retried with the SAME batch id
  until it is acknowledged (``ack <k> dup`` when the retry found it committed already);
- ``workflow``: step ``k`` submits workflow ``wf<k>`` (30 items, chunks of 7) and processes it;
- ``emb``: step ``k`` saves embedding set ``e<k>``; ``crash_after_upload`` ends the process
  right after the first object upload of the step, before anything names it.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Any

from ops import WF_CHUNK, WF_ITEMS, Acks, emb_ids, emb_rows, wf_items

import app

RETRY_FOR = 120.0  # seconds a retrying child keeps trying one step while the server is down


def batch(tag: str, k: int) -> list[dict[str, Any]]:
    """Batch ``tag`` of step ``k``: 20-79 records; every third about 1.5 MB (a longer commit)."""
    n = 20 + (k * 37) % 60
    pad = "p" * (20_000 if k % 3 == 2 else 40 + k % 50)
    return [
        {"id": f"{tag}-{j}", "batch_tag": tag, "batch_n": n, "j": j, "pad": pad} for j in range(n)
    ]


def open_spec(spec: dict[str, Any]) -> app.Store:
    """Open the store of ``spec`` as a host of its own (its own working folder)."""
    os.environ.update(spec.get("env") or {})
    os.environ["CTXSTORE_WORK"] = spec["work"]
    os.environ["CTXSTORE_FILES"] = spec["files"]
    return app.open_store(spec["url"], files=spec["files"])


def _append(ctx: app.Context, k: int, retry: bool) -> str:
    tag = f"A{k}"
    deadline = time.monotonic() + RETRY_FOR
    while True:
        try:
            receipt = ctx.append("items", batch(tag, k), batch_id=tag)
        except (app.StorageError, OSError) as exc:
            if not retry or time.monotonic() > deadline:
                raise
            os.write(1, f"retry {k} {type(exc).__name__}\n".encode())
            time.sleep(0.2)
            continue
        return "dup" if receipt.duplicate else ""


def _crash_after_upload() -> None:
    from app.backends.objects.location import Location

    real = Location.upload

    def upload_then_die(self: Location, source: Any, path: str) -> None:
        real(self, source, path)
        os._exit(137)  # the blob is stored; nothing names it yet

    Location.upload = upload_then_die  # type: ignore[method-assign]


def step(op: str, store: app.Store, ctx: app.Context, k: int, spec: dict[str, Any]) -> str:
    if op == "append":
        return _append(ctx, k, bool(spec.get("retry")))
    if op == "workflow":
        wf = store.workflows.submit(
            "append",
            context=spec["ctx"],
            items=wf_items(k),
            params={"collection": "wf"},
            workflow_id=f"wf{k}",
            chunk_size=WF_CHUNK,
        )
        os.write(1, f"submitted {k}\n".encode())
        store.workflows.process(wf.workflow_id)
        return ""
    if op == "emb":
        if spec.get("crash_after_upload"):
            _crash_after_upload()
        ids = emb_ids(k)
        ctx.embeddings.save(f"e{k}", ids, emb_rows(ids))
        return ""
    raise ValueError(op)


def run_child(op: str, root: str, start: int, count: int, arm: Any) -> None:
    spec = json.loads(root)
    store = open_spec(spec)
    ctx = store.context(spec["ctx"])
    if op == "emb":  # open what the step uses before the first step
        ctx.embeddings.list()
    else:
        ctx.collections()
    os.write(1, b"ready\n")
    arm()
    for k in range(start, start + count):
        extra = step(op, store, ctx, k, spec)
        os.write(1, f"ack {k} {extra}\n".encode())
    os.write(1, b"done\n")


# -- checks (parent side) --------------------------------------------------------------------


def check_batches(ctx: app.Context, acked: set[int], nxt: int) -> None:
    """Every acknowledged batch complete, the in-flight one complete or absent, nothing else,
    no duplicate record."""
    per_tag: collections.Counter[str] = collections.Counter()
    ids: set[str] = set()
    for rec in ctx.iter("items"):
        per_tag[rec["batch_tag"]] += 1
        assert rec["id"] not in ids, f"duplicate record {rec['id']}"
        ids.add(rec["id"])
    for k in acked:
        want = len(batch(f"A{k}", k))
        assert per_tag[f"A{k}"] == want, f"acknowledged A{k} lost: {per_tag[f'A{k}']} of {want}"
    for tag, seen in per_tag.items():
        k = int(tag[1:])
        assert k in acked or k == nxt, f"unexpected batch {tag}"
        assert seen == len(batch(tag, k)), f"partial batch {tag}: {seen} records"
    assert ctx.count("items") == len(ids)


def retry_in_flight(ctx: app.Context, nxt: int) -> bool:
    """Send the in-flight batch again with the same batch id: it must end up exactly once.
    Returns whether it had committed without being acknowledged."""
    tag = f"A{nxt}"
    before = ctx.count("items", where={"batch_tag": tag})
    receipt = ctx.append("items", batch(tag, nxt), batch_id=tag)
    want = len(batch(tag, nxt))
    assert before in (0, want), f"partial batch {tag}: {before} of {want}"
    assert receipt.duplicate == (before == want), f"{tag}: duplicate={receipt.duplicate}"
    assert ctx.count("items", where={"batch_tag": tag}) == want, f"{tag} not exactly once"
    return receipt.duplicate


RECOVER_FOR = 30.0  # seconds the check retries recovery while the killed client's session ends


def check_workflows(store: app.Store, ctx: app.Context, acks: Acks) -> int:
    """No partial chunk visible; after recovery every submitted workflow completes with each
    chunk committed exactly once (every item has one version in the log: a chunk run twice
    would leave a second version of each of its items).

    Recovery is retried until the workflows complete (at most ``RECOVER_FOR`` s): until the
    server has noticed that the killed client is gone, that client's open chunk transaction
    still locks its workflow's row, which ``recover`` skips (``FOR UPDATE SKIP LOCKED``).
    Returns how many extra recovery rounds that took."""
    chunks: collections.Counter[tuple[int, int]] = collections.Counter()
    for rec in ctx.iter("wf"):
        chunks[(rec["wk"], rec["chunk"])] += 1
    for (wk, ch), n in chunks.items():
        size = min(WF_CHUNK, WF_ITEMS - ch * WF_CHUNK)
        assert n == size, f"partial chunk {wk}/{ch}: {n} of {size}"
    must = set(acks.steps) | acks.submitted
    deadline, rounds = time.monotonic() + RECOVER_FOR, 0
    while True:
        store.workflows.recover(stale_after=0)
        store.workflows.process_pending()
        done = app.WorkflowStatus.COMPLETED
        left = [k for k in must if store.workflows.get(f"wf{k}").status != done]
        if not left or time.monotonic() > deadline:
            break
        rounds += 1
        time.sleep(0.2)
    per_wf = collections.Counter(r["wk"] for r in ctx.iter("wf"))
    for k in must:
        status = store.workflows.get(f"wf{k}").status
        assert per_wf[k] == WF_ITEMS, f"workflow {k} ({status}): {per_wf[k]} of {WF_ITEMS}"
        assert status == app.WorkflowStatus.COMPLETED, f"workflow {k}: {status}"
    for k, n in per_wf.items():
        assert n == WF_ITEMS, f"workflow {k} committed {n} items"
    ids = [r["id"] for r in ctx.iter("wf")]
    twice = {i: len(v) for i, v in ctx.history_many("wf", ids).items() if len(v) != 1}
    assert not twice, f"items committed more than once: {sorted(twice.items())[:5]}"
    assert store.workflows.verify() == []
    return rounds
