"""Writing operations run by crash children, and the checks a parent runs after a crash.

Every operation is a sequence of deterministic *steps* ``k = 0, 1, 2, ...``; a child prints
``ack <op> <k> [extra]`` (one ``os.write``) after step ``k`` returned, i.e. after it was
acknowledged as durable. ``check(op, root, acks)`` reopens the store and asserts the
guarantees: every acknowledged step is there, the in-flight step is there completely or not
at all, nothing else, and ``verify().ok``.
"""

from __future__ import annotations

import collections
import hashlib
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

import app

CTX = "c"
EMB_DIM = 8


# -- deterministic content -----------------------------------------------------------------


def batch(tag: str, k: int, big: bool = True) -> list[dict[str, Any]]:
    """A multi-record batch; every third one is > 4 MiB so it takes several writes."""
    n = 20 + (k * 37) % 60
    pad = "p" * (200_000 if big and k % 3 == 2 else 40 + k % 50)
    return [
        {"id": f"{tag}-{j}", "batch_tag": tag, "batch_n": n, "j": j, "pad": pad} for j in range(n)
    ]


def emb_ids(block: int) -> list[str]:
    return [f"e{block}-{j}" for j in range(5 + block % 4)]


def emb_rows(ids: list[str]) -> np.ndarray:
    return np.stack(
        [np.random.default_rng(zlib.crc32(i.encode())).standard_normal(EMB_DIM) for i in ids]
    ).astype(np.float32)


def emb_state(k: int) -> list[str]:
    """The ids of set ``e`` after step ``k`` (every 4th step overwrites, others append)."""
    start = k - k % 4
    return [i for b in range(start, k + 1) for i in emb_ids(b)]


def model_obj(k: int) -> Any:
    if k % 2 == 0:
        import torch

        return {"w": torch.full((4, 4), float(k)), "b": torch.arange(3) + k}
    return {"k": k, "arr": np.arange(k + 3)}


def model_matches(obj: Any, k: int) -> bool:
    if k % 2 == 0:
        return (
            set(obj) == {"w", "b"}
            and bool((obj["w"] == float(k)).all())
            and obj["w"].shape == (4, 4)
            and obj["b"].tolist() == [k, k + 1, k + 2]
        )
    return obj["k"] == k and obj["arr"].tolist() == list(range(k + 3))


WF_ITEMS, WF_CHUNK = 30, 7


def wf_items(k: int) -> list[dict[str, Any]]:
    return [{"id": f"w{k}-{j}", "wk": k, "chunk": j // WF_CHUNK} for j in range(WF_ITEMS)]


# -- setup (run in the parent before a child starts) -----------------------------------------


def seed_records(ctx: app.Context) -> None:
    """Seed batches for compaction: versions to drop, tombstones, complete live groups."""
    for b in range(8):
        ctx.append("items", batch(f"S{b}", b, big=False), batch_id=f"S{b}")
    for b in (1, 4, 6):  # a second version of every record of these batches
        ctx.append("items", [{**r, "v": 2} for r in batch(f"S{b}", b, big=False)])
    ctx.delete("items", [r["id"] for r in batch("S3", 3, big=False)])


def populate(root: Path) -> None:
    """A context with everything in it (for export / import)."""
    with app.open_store(root) as store:
        ctx = store.context(CTX)
        seed_records(ctx)
        ctx.embeddings.save("e", emb_ids(0), emb_rows(emb_ids(0)))
        ctx.models.save("m", model_obj(0))
        ctx.models.save("m", model_obj(1))


def setup(op: str, root: Path, steps: int = 0) -> None:
    """Prepare ``root`` for ``op``; with ``steps`` run the first steps as committed state."""
    if op in ("export", "import"):
        populate(root)
        return
    with app.open_store(root) as store:
        ctx = store.context(CTX)
        if op == "compact":
            seed_records(ctx)
        else:
            ctx.define_collection("items")
        for k in range(steps):
            step(op, store, ctx, k, root)


# -- steps -----------------------------------------------------------------------------------


def step(op: str, store: app.Store, ctx: app.Context, k: int, root: Path) -> str:
    """Run step ``k`` of ``op``; returns extra text for the ack line."""
    if op == "append":
        tag = f"A{k}"
        ctx.append("items", batch(tag, k), batch_id=tag)
    elif op == "delete":
        ctx.delete("items", [r["id"] for r in batch(f"S{k % 8}", k % 8, big=False)])
    elif op == "compact":
        if k % 2:
            tag = f"A{k}"
            ctx.append("items", batch(tag, k, big=False), batch_id=tag)
        else:
            ctx.compact("items")
    elif op == "emb":
        ids = emb_ids(k)
        ctx.embeddings.save("e", ids, emb_rows(ids), mode="overwrite" if k % 4 == 0 else "append")
    elif op == "model":
        return str(ctx.models.save("m", model_obj(k)).version)
    elif op == "workflow":
        wf = store.workflows.submit(
            "append",
            context=CTX,
            items=wf_items(k),
            params={"collection": "wf"},
            workflow_id=f"wf{k}",
            chunk_size=WF_CHUNK,
        )
        os.write(1, f"submitted {k}\n".encode())
        store.workflows.process(wf.workflow_id)
    elif op == "export":
        store.export_context(CTX, root.parent / f"x{k}.tar.gz")
    elif op == "import":
        store.import_context(root.parent / "pristine.tar.gz", name=f"imp{k}")
    else:
        raise ValueError(op)
    return ""


def run_child(op: str, root: str, start: int, count: int, arm: Any) -> None:
    """Body of a crash child: open, run steps ``start..start+count-1`` with acks."""
    store = app.open_store(root)
    ctx = store.context(CTX)
    if op == "import":
        store.contexts()
    ctx.collections()  # open and recover before the first step
    os.write(1, b"ready\n")
    arm()
    for k in range(start, start + count):
        extra = step(op, store, ctx, k, Path(root))
        os.write(1, f"ack {k} {extra}\n".encode())
    os.write(1, b"done\n")


# -- checks ----------------------------------------------------------------------------------


class Acks:
    def __init__(self, text: str) -> None:
        self.steps: dict[int, str] = {}
        self.submitted: set[int] = set()
        self.done = False
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            parts = line.split() or [""]
            if parts[0] == "ack" and len(parts) >= 2 and parts[1].isdigit():
                self.steps[int(parts[1])] = parts[2] if len(parts) > 2 else ""
            elif parts[0] == "submitted":
                self.submitted.add(int(parts[1]))
            elif parts[0] == "done":
                self.done = True

    def last(self, start: int) -> int:
        """The last acknowledged step (``start - 1`` when none)."""
        return max(self.steps, default=start - 1)


def _check_batches(ctx: app.Context, must: set[str], may: set[str]) -> None:
    per_tag: collections.Counter[str] = collections.Counter()
    sizes: dict[str, int] = {}
    ids: set[str] = set()
    for rec in ctx.iter("items"):
        tag = rec["batch_tag"]
        per_tag[tag] += 1
        assert sizes.setdefault(tag, rec["batch_n"]) == rec["batch_n"]
        assert rec["id"] not in ids, f"duplicate record {rec['id']}"
        ids.add(rec["id"])
        if tag in ("S1", "S4", "S6"):
            assert rec.get("v") == 2, f"old version of {rec['id']} visible"
    for tag in must:
        assert per_tag[tag] == len(batch(tag, int(tag[1:]))), f"acknowledged {tag} lost"
    for tag, seen in per_tag.items():
        assert tag in must or tag in may, f"unexpected batch {tag}"
        assert seen == sizes[tag], f"partial batch {tag}: {seen} of {sizes[tag]}"
    assert ctx.count("items") == len(ids)


def check(op: str, root: Path, acks: Acks, start: int, setup_steps: int = 0) -> None:
    """Reopen ``root`` after a crash of a child that ran ``op`` from step ``start``."""
    last = acks.last(start)
    nxt = last + 1
    with app.open_store(root) as store:
        ctx = store.context(CTX)
        if op in ("append", "compact"):
            seed = {f"S{b}" for b in range(8) if b != 3} if op == "compact" else set()
            acked = {f"A{k}" for k in range(setup_steps) if op == "append" or k % 2}
            acked |= {f"A{k}" for k in acks.steps if op == "append" or k % 2}
            _check_batches(ctx, seed | acked, {f"A{nxt}"})
        elif op == "emb":
            try:
                got = ctx.embeddings.load("e", mmap=False)
            except app.NotFoundError:
                assert last < 0, "acknowledged embedding set lost"
            else:
                options = [emb_state(s) for s in (last, nxt) if s >= 0]
                ids = list(got.ids)
                assert ids in options, f"embedding ids {ids[:3]}... neither old nor new"
                assert np.array_equal(got.vectors, emb_rows(ids)), "wrong vectors"
        elif op == "model":
            try:
                versions = [i.version for i in ctx.models.versions("m")]
            except app.NotFoundError:
                versions = []
            acked_v = {int(v): k for k, v in acks.steps.items()}
            committed = set(range(1, setup_steps + 1)) | set(acked_v)
            assert committed <= set(versions), f"acknowledged model lost: {versions}"
            base = max(committed, default=0)
            extra = [v for v in versions if v not in committed]
            assert len(extra) <= 1 and all(v > base for v in extra), f"versions: {versions}"
            for v in versions:
                k = acked_v.get(v, v - 1 if v <= setup_steps else nxt)
                obj = ctx.models.load("m", version=v, trusted=True)
                assert model_matches(obj, k), f"model version {v} holds the wrong content"
        elif op == "workflow":
            chunks: collections.Counter[tuple[int, int]] = collections.Counter()
            for rec in ctx.iter("wf"):
                chunks[(rec["wk"], rec["chunk"])] += 1
            for (wk, ch), n in chunks.items():
                size = min(WF_CHUNK, WF_ITEMS - ch * WF_CHUNK)
                assert n == size, f"partial chunk {wk}/{ch}: {n} of {size}"
            store.workflows.recover(stale_after=0)
            store.workflows.process_pending()
            per_wf = collections.Counter(r["wk"] for r in ctx.iter("wf"))
            for k in set(acks.steps) | acks.submitted:
                assert per_wf[k] == WF_ITEMS, f"workflow {k}: {per_wf[k]} of {WF_ITEMS}"
                assert store.workflows.get(f"wf{k}").status == app.WorkflowStatus.COMPLETED
            for k, n in per_wf.items():
                assert n == WF_ITEMS, f"workflow {k} committed {n} items"
            assert store.workflows.verify() == []
        elif op == "export":
            want = digest(ctx)
            for k in (last, nxt):
                dest = root.parent / f"x{k}.tar.gz"
                if k < 0 or (k == nxt and not dest.exists()):
                    continue
                assert dest.exists(), f"acknowledged export {dest.name} missing"
                with app.open_store(root.parent / f"imp-check-{k}") as other:
                    other.import_context(dest, name="back")
                    assert digest(other.context("back")) == want, "export holds wrong data"
        elif op == "import":
            names = set(store.contexts())
            want = _pristine_digest(root)
            for k in range(start, nxt + 1):
                name = f"imp{k}"
                if k == nxt and name not in names:
                    continue
                assert name in names, f"acknowledged import {name} missing"
                assert digest(store.context(name)) == want, f"imported {name} differs"
                assert store.context(name).verify().ok
            if f"imp{nxt}" not in names:  # the interrupted import can be done again
                store.import_context(root.parent / "pristine.tar.gz", name=f"imp{nxt}")
        report = store.verify()
        assert report.ok, report.problems
        # the store keeps working after recovery
        if op in ("append", "compact", "delete"):
            ctx.append("items", batch("Z0", 0), batch_id=f"Z-after-{os.getpid()}-{nxt}")
            assert ctx.verify().ok


_PRISTINE: dict[str, Any] = {}


def _pristine_digest(root: Path) -> Any:
    data = (root.parent / "pristine.tar.gz").read_bytes()
    key = hashlib.sha256(data).hexdigest()
    if key not in _PRISTINE:
        with app.open_store(root.parent / "pristine-read") as s:
            s.import_context(root.parent / "pristine.tar.gz", name="p", on_conflict="overwrite")
            _PRISTINE[key] = digest(s.context("p"))
    return _PRISTINE[key]


def digest(ctx: app.Context) -> Any:
    """A comparable summary of a context's whole content."""
    cols = {c: ctx.query(c) for c in ctx.collections()}
    embs = {}
    for info in ctx.embeddings.list():
        es = ctx.embeddings.load(info.name, mmap=False)
        embs[info.name] = (list(es.ids), es.vectors.tobytes())
    models = {
        i.name: [(v.version, v.sha256) for v in ctx.models.versions(i.name)]
        for i in ctx.models.list()
    }
    return cols, embs, models
