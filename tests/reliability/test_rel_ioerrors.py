"""Scenario 3: EIO / ENOSPC at the N-th call of os.open/write/pwrite/fsync/fdatasync/ftruncate/
replace/rename and of file-object ``write``, for every N, across every writing operation.

Pass: a typed ``StorageError`` keeping the errno; the state is the old or the new one (here
and after reopening); the next operation succeeds; ``verify().ok``.
"""

from __future__ import annotations

import builtins
import collections
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ops
import pytest
from relstats import scale, tally

import app

PATCHED = ("open", "write", "pwrite", "fsync", "fdatasync", "ftruncate", "replace", "rename")


class FaultyFile:
    """A writable file object whose ``write`` goes through the injector."""

    def __init__(self, inj: Injector, fh: Any) -> None:
        self._inj, self._fh = inj, fh

    def write(self, data: Any) -> int:
        self._inj.tick("file.write", lambda: self._fh.write(bytes(data)[: len(data) // 2]))
        return int(self._fh.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> FaultyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.__exit__(*exc)

    def __iter__(self) -> Any:
        return iter(self._fh)


class Injector:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.calls = 0
        self.fail_at: int | None = None
        self.errno = errno.EIO
        self.fired = 0
        self.names: list[str] = []
        for name in PATCHED:
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        real_fdopen, real_open = os.fdopen, builtins.open

        def fdopen(*a: Any, **kw: Any) -> Any:
            fh = real_fdopen(*a, **kw)
            mode = a[1] if len(a) > 1 else kw.get("mode", "r")
            return FaultyFile(self, fh) if self.armed and "w" in mode else fh

        def open_(*a: Any, **kw: Any) -> Any:
            fh = real_open(*a, **kw)
            mode = a[1] if len(a) > 1 else kw.get("mode", "r")
            return FaultyFile(self, fh) if self.armed and any(c in mode for c in "wa+") else fh

        monkeypatch.setattr(os, "fdopen", fdopen)
        monkeypatch.setattr(builtins, "open", open_)

    def tick(self, name: str, partial: Callable[[], Any] | None = None) -> None:
        if not self.armed:
            return
        self.calls += 1
        self.names.append(name)
        if self.calls == self.fail_at:
            self.fired += 1
            if partial is not None and self.calls % 3 == 0:
                partial()  # a short write first, like a filling disk
            raise OSError(self.errno, os.strerror(self.errno))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            partial = None
            if name in ("write", "pwrite") and len(bytes(args[1])) > 1:
                data = bytes(args[1])

                def partial() -> Any:
                    return real(args[0], data[: len(data) // 2], *args[2:])

            self.tick(name, partial)
            return real(*args, **kwargs)

        return wrapper

    def arm(self, fail_at: int | None) -> None:
        self.calls, self.fired, self.names = 0, 0, []
        self.fail_at = fail_at
        self.errno = errno.EIO if (fail_at or 0) % 2 else errno.ENOSPC
        self.armed = True

    def disarm(self) -> None:
        self.armed = False


# -- operations: (setup, action, state, expected new state from old) -----------------------

WF_ID = "wfx"


def _records(store: app.Store) -> Any:
    return store.context(ops.CTX).query("items")


def _emb(store: app.Store) -> Any:
    try:
        es = store.context(ops.CTX).embeddings.load("e", mmap=False)
    except app.NotFoundError:
        return None
    return list(es.ids), es.vectors.tobytes()


def _models(store: app.Store) -> Any:
    ctx = store.context(ops.CTX)
    try:
        versions = ctx.models.versions("m")
    except app.NotFoundError:
        return []
    out = []
    for v in versions:
        obj = ctx.models.load("m", version=v.version, trusted=True)
        out.append((v.version, {k: getattr(x, "tolist", lambda x=x: x)() for k, x in obj.items()}))
    return out


def _wf(store: app.Store) -> Any:
    try:
        wf = store.workflows.get(WF_ID)
    except app.NotFoundError:
        return None
    return wf.status.value, wf.items_total


def _wf_done(store: app.Store) -> Any:
    """Status and number of committed items; chunks are always all or nothing."""
    _check_chunks(store)
    return _wf(store), store.context(ops.CTX).count("wf")


def _finish_wf(store: app.Store) -> None:
    """After a failed ``process``: recover + process_pending finish it exactly once."""
    store.workflows.recover(stale_after=0)
    if store.workflows.get(WF_ID).status == app.WorkflowStatus.PENDING:
        store.workflows.process_pending()
    wf = store.workflows.get(WF_ID)
    if wf.status == app.WorkflowStatus.FAILED:  # a failed chunk: rollback undoes the rest
        store.workflows.rollback(WF_ID)
        assert store.context(ops.CTX).count("wf") == 0, "rollback left items"
    else:
        assert wf.status == app.WorkflowStatus.COMPLETED, wf.status
        assert store.context(ops.CTX).count("wf") == ops.WF_ITEMS, "not exactly once"


def _imported(store: app.Store) -> Any:
    if "imp" not in store.contexts():
        return None
    return ops.digest(store.context("imp"))


def _seed_wf(store: app.Store) -> None:
    store.workflows.submit(
        "append",
        context=ops.CTX,
        items=ops.wf_items(1),
        params={"collection": "wf"},
        workflow_id=WF_ID,
        chunk_size=ops.WF_CHUNK,
    )


OPS: dict[str, tuple[Callable[[app.Store], Any], Callable[[app.Store], Any]]] = {
    "append": (lambda s: s.context(ops.CTX).append("items", ops.batch("N", 1)), _records),
    "append_big": (lambda s: s.context(ops.CTX).append("items", ops.batch("N", 2)), _records),
    "delete": (lambda s: s.context(ops.CTX).delete("items", ["S0-1", "S2-3", "S5-0"]), _records),
    "compact": (lambda s: s.context(ops.CTX).compact("items"), _records),
    "emb_save": (
        lambda s: s.context(ops.CTX).embeddings.save(
            "e", ops.emb_ids(8), ops.emb_rows(ops.emb_ids(8))
        ),
        _emb,
    ),
    "emb_append": (
        lambda s: s.context(ops.CTX).embeddings.save(
            "e", ops.emb_ids(9), ops.emb_rows(ops.emb_ids(9)), mode="append"
        ),
        _emb,
    ),
    "model_pth": (lambda s: s.context(ops.CTX).models.save("m", ops.model_obj(4)), _models),
    "model_joblib": (lambda s: s.context(ops.CTX).models.save("m", ops.model_obj(5)), _models),
    "wf_submit": (_seed_wf, _wf),
    "wf_process": (lambda s: s.workflows.process(WF_ID), _wf_done),
    "import": (
        lambda s: s.import_context(s.root.parent / "pristine.tar.gz", name="imp"),
        _imported,
    ),
}


def _pristine(base: Path, op: str) -> Path:
    root = base / "pristine" / "store"
    ops.populate(root)
    with app.open_store(root) as s:
        s.export_context(ops.CTX, root.parent / "pristine.tar.gz")
        if op in ("wf_process",):
            _seed_wf(s)
    return root


def _check_chunks(store: app.Store) -> None:
    chunks: collections.Counter[tuple[int, int]] = collections.Counter()
    for rec in store.context(ops.CTX).iter("wf"):
        chunks[(rec["wk"], rec["chunk"])] += 1
    for (_, ch), n in chunks.items():
        assert n == min(ops.WF_CHUNK, ops.WF_ITEMS - ch * ops.WF_CHUNK), "partial chunk"


def _one(base: Path, pristine: Path, inj: Injector, op: str, n: int) -> int:
    action, state = OPS[op]
    trial = base / f"n{n}"
    shutil.copytree(pristine.parent, trial)
    root = trial / "store"
    raised = 0
    with app.open_store(root) as s:
        s.context(ops.CTX).collections()
        old = state(s)
        inj.arm(n)
        error: BaseException | None = None
        try:
            action(s)
        except Exception as exc:
            error = exc
        finally:
            inj.disarm()
        if op == "wf_process":  # a chunk's I/O error fails the workflow instead of raising
            _check_chunks(s)
            _finish_wf(s)
        now = state(s)
        if error is not None:
            raised = 1
            assert inj.fired, f"failed without an injected error: {error!r}"
            assert isinstance(error, app.StorageError), f"untyped {type(error).__name__}: {error}"
            assert error.errno == inj.errno, f"errno {error.errno} != {inj.errno}: {error}"
        new = now if error is None else None
    # old or new, after reopening too
    with app.open_store(root) as s:
        seen = state(s)
        if error is None:
            assert seen == new, "acknowledged change lost on reopen"
        else:
            assert seen == now, "state changed on reopen"
            if seen != old and op != "wf_process":  # the failed op completed: the new state
                ref = base / f"ref{n}" / "store"
                shutil.copytree(pristine.parent, ref.parent)
                with app.open_store(ref) as r:
                    action(r)
                    assert state(r) == seen, "neither the old nor the new state"
        # the next operation succeeds and everything verifies
        s.context(ops.CTX).append("items", [{"id": f"next{n}", "batch_tag": "X", "batch_n": 1}])
        if op.startswith("wf"):
            _check_chunks(s)
        if op == "import" and seen is None:
            action(s)
            assert state(s) is not None
        report = s.verify()
        assert report.ok, report.problems
    shutil.rmtree(trial)
    return raised


@pytest.mark.parametrize("op", sorted(OPS))
def test_io_error_at_every_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str) -> None:
    inj = Injector(monkeypatch)
    pristine = _pristine(tmp_path, op)
    dry = tmp_path / "dry"
    shutil.copytree(pristine.parent, dry)
    with app.open_store(dry / "store") as s:
        s.context(ops.CTX).collections()
        inj.arm(None)
        OPS[op][0](s)
        inj.disarm()
        total, names = inj.calls, list(inj.names)
    assert total >= 2, names
    step = 1 if total <= scale(120, 10**6) else total // scale(120, 10**6) + 1
    points = list(range(1, total + 2, step))
    failures: list[str] = []
    raised = 0
    for n in points:
        try:
            raised += _one(tmp_path, pristine, inj, op, n)
        except Exception as exc:
            where = names[n - 1] if n <= len(names) else "-"
            failures.append(f"{op} call {n} ({where}): {type(exc).__name__}: {exc}")
    tally(f"3 I/O error at N-th call ({op})", len(points), len(failures))
    assert not failures, "\n".join(failures[:8])
    assert raised >= 1 or op == "wf_process"
