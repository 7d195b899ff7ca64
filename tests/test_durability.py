"""Durability (SPEC 2, 4, 11): real SIGKILLs, torn tails, injected I/O errors, corruption.

The files touched directly are the ones SPEC's layout names: a collection's log
``contexts/<context>/<collection>.jsonl`` and the context index ``<context>.sqlite``.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from recdata import analogy

import app

sys.path.insert(0, str(Path(__file__).resolve().parent / "workers"))  # the crash harness
from zygote import Zygote, kill, wait_ready

CTX = "c"


def log_file(root: Path, collection: str, context: str = CTX) -> Path:
    return root / "contexts" / context / f"{collection}.jsonl"


def index_file(root: Path, context: str = CTX) -> Path:
    return root / "contexts" / context / f"{context}.sqlite"


# =========================================================================================
# (1) crash test: SIGKILL a child appending multi-record batches at random instants
# =========================================================================================


def _check_after_crash(root: Path, collection: str, acked: dict[str, int]) -> int:
    """Reopen; every acknowledged batch is complete, every visible batch is complete."""
    with app.open_store(root) as store:
        ctx = store.context(CTX)
        per_tag: collections.Counter[str] = collections.Counter()
        sizes: dict[str, int] = {}
        ids: set[str] = set()
        for rec in ctx.iter(collection):
            tag = rec["batch_tag"]
            per_tag[tag] += 1
            assert sizes.setdefault(tag, rec["batch_n"]) == rec["batch_n"]
            assert rec["id"] not in ids, f"duplicate record {rec['id']}"
            ids.add(rec["id"])
        for tag, n in acked.items():
            assert per_tag[tag] == n, f"acknowledged batch {tag}: {per_tag[tag]} of {n} visible"
        for tag, seen in per_tag.items():
            assert seen == sizes[tag], f"partial batch {tag}: {seen} of {sizes[tag]} visible"
        assert ctx.count(collection) == len(ids)
        report = ctx.verify()
        assert report.ok, report.problems
        return len(per_tag)


def _crash_lane(base: Path, lane: int, rounds: int, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    collection = "crash"
    acked_total = 0
    root = base
    acked: dict[str, int] = {}
    base.mkdir(parents=True, exist_ok=True)
    zygote = Zygote()
    try:
        for r in range(rounds):
            if r % 10 == 0:  # bound the data each check reads: a fresh store every 10 kills
                root = base / f"lane{lane}-{r}"
                acked = {}
            prefix = f"L{lane}R{r}"
            out = base / f"out-{r}.txt"
            pid = zygote.spawn(
                out=str(out), args=[str(root), CTX, collection, prefix, str(rng.random())]
            )
            try:
                if rng.random() < 0.1:
                    # any instant, including while the child opens and recovers the store
                    time.sleep(rng.uniform(0.0, 0.05))
                else:
                    assert wait_ready(out, pid), "appender child died before it was ready"
                    time.sleep(rng.uniform(0.0, 0.12))
            finally:
                kill(pid)  # the zygote ignores SIGCHLD: the dead child is reaped at once
            text = out.read_text() if out.exists() else ""
            assert "done" not in text
            for line in text.splitlines(keepends=True):
                if not line.endswith("\n") or line == "ready\n":
                    continue
                tag, count = line.split()
                assert tag.startswith(prefix + "-"), line
                acked[tag] = int(count)
                acked_total += 1
            _check_after_crash(root, collection, acked)
    finally:
        zygote.close()
    # after the last kill the store keeps working in this process too
    with app.open_store(root) as store:
        ctx = store.context(CTX)
        before = ctx.count(collection)
        ctx.append(collection, [{"batch_tag": "final", "batch_n": 3} for _ in range(3)])
        assert ctx.count(collection) == before + 3
        assert ctx.verify().ok
    return rounds, acked_total


def _run_crash_test(tmp_path: Path, kills: int, seed: int) -> None:
    import concurrent.futures

    lanes = 2
    per_lane = kills // lanes
    with concurrent.futures.ThreadPoolExecutor(lanes) as pool:
        futures = [
            pool.submit(_crash_lane, tmp_path / f"lane{i}", i, per_lane, seed * 100 + i)
            for i in range(lanes)
        ]
        results = [f.result() for f in futures]
    total_kills = sum(k for k, _ in results)
    total_acked = sum(a for _, a in results)
    assert total_kills >= kills
    # the kills landed while batches were being written, not only at start-up
    assert total_acked >= total_kills // 2, (total_kills, total_acked)


def test_sigkill_appender_at_random_instants(tmp_path: Path) -> None:
    _run_crash_test(tmp_path, kills=100, seed=1)


@pytest.mark.slow
def test_sigkill_appender_many_times(tmp_path: Path) -> None:
    _run_crash_test(tmp_path, kills=600, seed=2)


# =========================================================================================
# (2) self-crash: a child writes part of a batch into the log and dies
# =========================================================================================


def _batch_bytes(tmp: Path, collection: str, records: list[dict[str, Any]]) -> bytes:
    """The exact bytes one append adds to a log (made in a scratch store)."""
    scratch = tmp / f"scratch-{os.urandom(4).hex()}"
    with app.open_store(scratch) as s:
        ctx = s.context(CTX)
        ctx.define_collection(collection)
        before = log_file(scratch, collection).stat().st_size
        ctx.append(collection, records, batch_id="torn-batch")
        data = log_file(scratch, collection).read_bytes()[before:]
    shutil.rmtree(scratch)
    return data


def _cut_points(data: bytes, rng: random.Random) -> list[int]:
    ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    cuts = {1, len(data) - 1, len(data) - 2}
    prev = 0
    for end in ends:
        cuts.add(end)  # whole lines, no commit
        cuts.add(prev + 1)
        cuts.add(rng.randrange(prev + 1, end))  # mid-line
        cuts.add(end - 1)  # the line without its newline
        prev = end
    return sorted(c for c in cuts if 0 < c < len(data))


TORN_RECORDS = [{"id": f"t{i}", "v": i, "pad": "z" * (i * 7 % 90)} for i in range(12)]


def _seed_store(root: Path) -> list[dict[str, Any]]:
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        ctx.append("items", [{"id": f"s{i}", "v": i} for i in range(10)])
        ctx.append("items", [{"id": "s3", "v": 33}])
        return ctx.query("items")


def _assert_recovered(root: Path, expected: list[dict[str, Any]], size: int) -> None:
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        assert ctx.query("items") == expected
        assert ctx.count("items") == len(expected)
        for rec in TORN_RECORDS:
            with pytest.raises(app.NotFoundError):
                ctx.get("items", rec["id"])
        report = ctx.verify()
        assert report.ok, report.problems
        assert log_file(root, "items").stat().st_size == size  # the torn tail was cut
        # the next append works and lands where the torn batch was
        r = ctx.append("items", [{"id": "next", "v": -1}], batch_id="torn-batch")
        assert r.duplicate is False and r.count == 1
        assert ctx.query("items") == [*expected, {"id": "next", "v": -1}]
        assert ctx.verify().ok
    with app.open_store(root) as s:  # and it survives another reopen
        ctx = s.context(CTX)
        assert ctx.query("items") == [*expected, {"id": "next", "v": -1}]
        assert ctx.verify().ok


def test_torn_tail_is_truncated_on_reopen(tmp_path: Path) -> None:
    data = _batch_bytes(tmp_path, "items", TORN_RECORDS)
    assert data.count(b"\n") == len(TORN_RECORDS) + 1
    pristine = tmp_path / "pristine"
    expected = _seed_store(pristine)
    size = log_file(pristine, "items").stat().st_size
    cuts = _cut_points(data, random.Random(5))
    assert len(cuts) > 40
    for cut in cuts:
        root = tmp_path / f"cut{cut}"
        shutil.copytree(pristine, root)
        with open(log_file(root, "items"), "ab") as fh:
            fh.write(data[:cut])
        _assert_recovered(root, expected, size)
        shutil.rmtree(root)


def test_child_writes_half_a_batch_and_dies(tmp_path: Path) -> None:
    data = _batch_bytes(tmp_path, "items", TORN_RECORDS)
    code = (
        "import os, signal, sys\n"
        "path, data, how = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3]\n"
        "fd = os.open(path, os.O_WRONLY | os.O_APPEND)\n"
        "os.write(fd, data)\n"
        "os.fsync(fd)\n"
        "if how == 'kill':\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "os._exit(0)\n"
    )
    pristine = tmp_path / "pristine"
    expected = _seed_store(pristine)
    size = log_file(pristine, "items").stat().st_size
    half = len(data) // 2
    last_nl = data.rstrip(b"\n").rfind(b"\n") + 1  # every entry line, no commit line
    for i, (cut, how) in enumerate([(half, "exit"), (half + 1, "kill"), (last_nl, "kill")]):
        root = tmp_path / f"child{i}"
        shutil.copytree(pristine, root)
        res = subprocess.run(
            [sys.executable, "-c", code, str(log_file(root, "items")), data[:cut].hex(), how],
            capture_output=True,
            timeout=60,
        )
        assert res.returncode in (0, -signal.SIGKILL), res.stderr
        assert log_file(root, "items").stat().st_size == size + cut
        _assert_recovered(root, expected, size)


def test_torn_tail_with_appending_writer_open(tmp_path: Path) -> None:
    """A store object that was open before the crash also recovers before its next append."""
    data = _batch_bytes(tmp_path, "items", TORN_RECORDS)
    root = tmp_path / "s"
    expected = _seed_store(root)
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        assert ctx.query("items") == expected  # opened and ready before the torn write
        with open(log_file(root, "items"), "ab") as fh:
            fh.write(data[: len(data) - 5])
        ctx.append("items", [{"id": "after", "v": 0}])
        assert ctx.query("items") == [*expected, {"id": "after", "v": 0}]
        for rec in TORN_RECORDS:
            with pytest.raises(app.NotFoundError):
                ctx.get("items", rec["id"])
        assert ctx.verify().ok
    with app.open_store(root) as s:
        assert s.context(CTX).query("items") == [*expected, {"id": "after", "v": 0}]


# =========================================================================================
# (3) I/O-error injection at the N-th os call of an append / delete / compaction
# =========================================================================================

PATCHED = ("open", "write", "pwrite", "fsync", "fdatasync", "replace", "rename", "ftruncate")


class Injector:
    """Counts calls to the os functions the write path uses; fails the N-th one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.calls = 0
        self.fail_at: int | None = None
        self.sticky = False
        self.partial = False
        self.errno = errno.EIO
        self.fired = 0
        self.names: list[str] = []
        for name in PATCHED:
            real = getattr(os, name, None)
            if real is not None:
                monkeypatch.setattr(os, name, self._wrap(name, real))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not self.armed:
                return real(*args, **kwargs)
            self.calls += 1
            self.names.append(name)
            fail_at = self.fail_at
            if fail_at is not None and (
                self.calls == fail_at or (self.sticky and self.calls > fail_at)
            ):
                self.fired += 1
                if self.partial and name in ("write", "pwrite"):
                    data = bytes(args[1])
                    if len(data) > 1:  # a short write first, like a filling disk
                        real(args[0], data[: len(data) // 2], *args[2:])
                raise OSError(self.errno, os.strerror(self.errno))
            return real(*args, **kwargs)

        return wrapper

    def arm(self, fail_at: int | None, *, sticky: bool = False, partial: bool = False) -> None:
        self.calls, self.fired, self.names = 0, 0, []
        self.fail_at, self.sticky, self.partial = fail_at, sticky, partial
        self.errno = errno.EIO if (fail_at or 0) % 2 else errno.ENOSPC
        self.armed = True

    def disarm(self) -> None:
        self.armed = False


def _state(ctx: app.Context, collection: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in ctx.iter(collection)}


def _setup(root: Path) -> None:
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        ctx.append("items", [{"id": f"i{i}", "v": i, "g": i % 3} for i in range(30)])
        ctx.append("items", [{"id": f"i{i}", "v": -i, "g": i % 3} for i in range(10)])
        ctx.delete("items", ["i29", "i28"])


BIG_PAD = "B" * 1000


def _ops() -> dict[str, tuple[str, Callable[[app.Context], Any], Callable[[dict], dict]]]:
    small = [{"id": f"i{i}", "v": 100 + i, "g": 9} for i in range(5, 25)]
    big = [{"id": f"big{i}", "v": i, "pad": BIG_PAD} for i in range(4700)]  # > 4 MiB
    fresh = [{"id": f"f{i}", "v": i} for i in range(7)]

    def upd(records: list[dict[str, Any]]) -> Callable[[dict], dict]:
        return lambda old: {**old, **{r["id"]: r for r in records}}

    return {
        "append": ("items", lambda c: c.append("items", small), upd(small)),
        "append_big": ("items", lambda c: c.append("items", big), upd(big)),
        "append_new_collection": ("fresh", lambda c: c.append("fresh", fresh), upd(fresh)),
        "delete": (
            "items",
            lambda c: c.delete("items", ["i1", "i2", "i15"]),
            lambda old: {k: v for k, v in old.items() if k not in ("i1", "i2", "i15")},
        ),
        "delete_where": (
            "items",
            lambda c: c.delete("items", where={"g": 1}),
            lambda old: {k: v for k, v in old.items() if v.get("g") != 1},
        ),
        "compact": ("items", lambda c: c.compact("items"), lambda old: old),
    }


@pytest.mark.parametrize("mode", ["once", "sticky"])
@pytest.mark.parametrize(
    "op_name",
    ["append", "append_big", "append_new_collection", "delete", "delete_where", "compact"],
)
def test_io_error_at_every_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op_name: str, mode: str
) -> None:
    _, op, _ = _ops()[op_name]
    inj = Injector(monkeypatch)

    # dry run: how many patched calls does the operation make?
    dry = tmp_path / "dry"
    _setup(dry)
    with app.open_store(dry) as s:
        ctx = s.context(CTX)
        ctx.count("items")  # open and recover before counting
        inj.arm(None)
        op(ctx)
        inj.disarm()
        total, names = inj.calls, list(inj.names)
    assert total >= 2, names
    assert "fsync" in names, names

    raised = 0
    failures: list[str] = []
    for n in range(1, total + 2):
        try:
            raised += _inject_once(tmp_path / f"n{n}", inj, op_name, mode, n, names)
        except Exception as exc:  # collect every failing N, then report them all
            where = names[n - 1] if n <= len(names) else "-"
            failures.append(f"call {n} ({where}): {type(exc).__name__}: {exc}")
    assert not failures, f"{op_name}/{mode}: " + "\n".join(failures)
    assert raised >= 1, f"no injected error reached the caller of {op_name}"


def _inject_once(
    root: Path, inj: Injector, op_name: str, mode: str, n: int, names: list[str]
) -> int:
    collection, op, expect = _ops()[op_name]
    _setup(root)
    raised = 0
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        old = _state(ctx, collection)
        new = expect(old)
        inj.arm(n, sticky=mode == "sticky", partial=n % 3 == 0)
        error: BaseException | None = None
        try:
            op(ctx)
        except Exception as exc:
            error = exc
        finally:
            inj.disarm()
        if error is not None:
            raised = 1
            assert inj.fired, f"failed without an injected error: {error!r}"
            assert isinstance(error, app.StorageError), (
                f"raised an untyped {type(error).__name__}: {error}"
            )
            assert error.errno == inj.errno, f"errno {error.errno} != {inj.errno}: {error}"
        # the store holds exactly the old or the new state, in this process...
        here = _state(ctx, collection)
        assert here in (old, new), "partial state"
        if error is None:
            assert here == new, "no error but the new state is missing"
        # ... and when reopened
        with app.open_store(root) as s2:
            seen = _state(s2.context(CTX), collection)
            assert seen in (old, new), "partial state after reopen"
        # the next append succeeds, here, and everything verifies
        nxt = {"id": f"next{n}", "v": n}
        ctx.append(collection, [nxt])
        after = _state(ctx, collection)
        assert after in ({**old, nxt["id"]: nxt}, {**new, nxt["id"]: nxt}), "next append"
        report = ctx.verify()
        assert report.ok, report.problems
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        assert _state(ctx, collection) == after, "state changed on reopen"
        report = ctx.verify()
        assert report.ok, report.problems
    shutil.rmtree(root)
    return raised


# =========================================================================================
# (4) corruption: bit flips and truncations in a committed log; flips in the index
# =========================================================================================

READ_ERRORS = (app.IntegrityError, app.SchemaVersionError)
Reads = list[tuple[str, Callable[[], Any], Any]]


def _run_reads(reads: Reads) -> tuple[int, list[str]]:
    """Run every read: each must raise IntegrityError (SchemaVersionError for a damaged
    version field) or return exactly the expected value. Returns (errors, wrong answers)."""
    errors = 0
    wrong: list[str] = []
    for name, read, want in reads:
        try:
            got = read()
        except READ_ERRORS:
            errors += 1
            continue
        except Exception as exc:  # e.g. NotFoundError for a record that exists
            wrong.append(f"{name} raised {type(exc).__name__}: {str(exc)[:120]}")
            continue
        if got != want:
            wrong.append(f"{name} returned wrong data")
    return errors, wrong


def _summary(failures: list[str], cases: int) -> str:
    damaged = {f.split(":", 1)[0] for f in failures}
    return (
        f"{len(damaged)} of {cases} damage cases went wrong silently "
        f"({len(failures)} bad answers):\n" + "\n".join(failures[:12])
    )


# --- the log ------------------------------------------------------------------------------


def _build_log_store(root: Path) -> dict[str, Any]:
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        for b in range(20):
            ctx.append(
                "items",
                [{"id": f"r{b}-{j}", "b": b, "j": j, "g": j % 3, "t": "x" * j} for j in range(8)],
                batch_id=f"batch{b}",
            )
            if b % 5 == 4:
                ctx.append("items", [{"id": f"r{b - 2}-1", "b": -1, "j": 1, "g": 0}])
                ctx.delete("items", [f"r{b - 3}-2"])
        ctx.append("items", [{"id": "last", "b": 99, "j": 0, "g": 2}], batch_id="lastbatch")
        records = ctx.query("items")
        return {
            "all": records,
            "g2": ctx.query("items", {"g": 2}),
            "history": {
                rid: [(h.batch_id, h.deleted, h.data) for h in ctx.history("items", rid)]
                for rid in ("r0-0", "r2-1", "r1-2", "r19-7", "last")
            },
        }


def _log_reads(ctx: app.Context, expected: dict[str, Any]) -> Reads:
    reads: Reads = [
        ("query", lambda: ctx.query("items"), expected["all"]),
        ("count", lambda: ctx.count("items"), len(expected["all"])),
        ("query g=2", lambda: ctx.query("items", {"g": 2}), expected["g2"]),
        ("iter", lambda: list(ctx.iter("items")), expected["all"]),
    ]
    for rec in expected["all"][::6] + expected["all"][-1:]:
        reads.append((f"get {rec['id']}", lambda rid=rec["id"]: ctx.get("items", rid), rec))
    for rid, hist in expected["history"].items():
        reads.append(
            (
                f"history {rid}",
                lambda rid=rid: [
                    (h.batch_id, h.deleted, h.data) for h in ctx.history("items", rid)
                ],
                hist,
            )
        )
    return reads


def _names_file(problems: list[str], path: Path) -> bool:
    return any(path.name in p for p in problems)


def _check_damaged_log(root: Path, expected: dict[str, Any]) -> tuple[bool, list[str]]:
    """Open a store with a damaged log: reads never lie; verify detects the damage naming
    the log, or the damage is provably harmless (rebuilding the index from the damaged log
    gives exactly the right data). Returns (detected, problems with the library)."""
    bad: list[str] = []
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        bad += _run_reads(_log_reads(ctx, expected))[1]
        report = ctx.verify()
        if not report.ok:
            if not _names_file(report.problems, log_file(root, "items")):
                bad.append(f"verify does not name the log: {report.problems}")
            bad += _run_reads(_log_reads(ctx, expected))[1]
            return True, bad
        ctx.rebuild_index()  # undetected: the log itself must still hold the right data
        errors, wrong = _run_reads(_log_reads(ctx, expected))
        if errors or wrong:
            bad.append("verify said ok, but the log no longer holds the right data")
        return False, bad


@pytest.fixture(scope="module")
def pristine_log_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("pristine") / "store"
    expected = _build_log_store(root)
    return root, expected


def _flip_cases(
    tmp_path: Path, pristine: Path, expected: dict[str, Any], positions: list[int], seed: int
) -> tuple[int, list[str]]:
    data = log_file(pristine, "items").read_bytes()
    rng = random.Random(seed)
    detected = 0
    failures: list[str] = []
    for k, pos in enumerate(positions):
        root = tmp_path / f"f{k}"
        shutil.copytree(pristine, root)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        log_file(root, "items").write_bytes(bytes(flipped))
        found, bad = _check_damaged_log(root, expected)
        detected += found
        failures += [f"flip at byte {pos}/{len(data)}: {b}" for b in bad]
        shutil.rmtree(root)
    return detected, failures


def test_bit_flips_in_log_never_return_wrong_data(
    tmp_path: Path, pristine_log_store: tuple[Path, dict[str, Any]]
) -> None:
    pristine, expected = pristine_log_store
    size = log_file(pristine, "items").stat().st_size
    rng = random.Random(1234)
    positions = [rng.randrange(size) for _ in range(200)]
    detected, failures = _flip_cases(tmp_path, pristine, expected, positions, 1)
    assert not failures, _summary(failures, len(positions))
    assert detected >= 150, detected


def test_bit_flips_in_last_commit_line(
    tmp_path: Path, pristine_log_store: tuple[Path, dict[str, Any]]
) -> None:
    """The last batch's commit line: the batch was acknowledged, so damage there is not a
    torn tail; it must be detected and must never silently drop the batch from any read."""
    pristine, expected = pristine_log_store
    data = log_file(pristine, "items").read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    assert data[start:].startswith(b'{"commit"')
    positions = list(range(start, len(data), 2))
    detected, failures = _flip_cases(tmp_path, pristine, expected, positions, 2)
    assert not failures, _summary(failures, len(positions))
    assert detected == len(positions)


def test_bit_flips_in_log_then_rebuild_index(
    tmp_path: Path, pristine_log_store: tuple[Path, dict[str, Any]]
) -> None:
    """rebuild_index (the documented repair for index damage) run on a damaged log must not
    turn the damage into silently wrong or lost data."""
    pristine, expected = pristine_log_store
    data = log_file(pristine, "items").read_bytes()
    rng = random.Random(99)
    last_line = data.rstrip(b"\n").rfind(b"\n") + 1
    positions = [rng.randrange(len(data)) for _ in range(40)]
    positions += [rng.randrange(last_line, len(data)) for _ in range(10)]
    failures: list[str] = []
    for k, pos in enumerate(positions):
        root = tmp_path / f"g{k}"
        shutil.copytree(pristine, root)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        log_file(root, "items").write_bytes(bytes(flipped))
        with app.open_store(root) as s:
            ctx = s.context(CTX)
            with contextlib.suppress(READ_ERRORS):
                ctx.rebuild_index()
            errors, wrong = _run_reads(_log_reads(ctx, expected))
            report = ctx.verify()
            failures += [f"flip at byte {pos}: {w}" for w in wrong]
            if not errors and report.ok and wrong:
                failures.append(f"flip at byte {pos}: undetected")
        shutil.rmtree(root)
    assert not failures, _summary(failures, len(positions))


def test_truncated_log_never_returns_wrong_data(
    tmp_path: Path, pristine_log_store: tuple[Path, dict[str, Any]]
) -> None:
    pristine, expected = pristine_log_store
    data = log_file(pristine, "items").read_bytes()
    rng = random.Random(4321)
    line_ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    offsets = {0, 1, len(data) - 1, line_ends[0], line_ends[-2]}
    offsets.update(rng.sample(line_ends[:-1], 25))
    offsets.update(rng.randrange(len(data)) for _ in range(25))
    offsets.discard(len(data))
    failures: list[str] = []
    for off in sorted(offsets):
        root = tmp_path / f"t{off}"
        shutil.copytree(pristine, root)
        with open(log_file(root, "items"), "r+b") as fh:
            fh.truncate(off)
        with app.open_store(root) as s:
            ctx = s.context(CTX)
            errors, wrong = _run_reads(_log_reads(ctx, expected))
            failures += [f"truncated at {off}: {w}" for w in wrong]
            if not errors:
                failures.append(f"truncated at {off}: no read noticed the missing data")
            report = ctx.verify()
            if report.ok or not _names_file(report.problems, log_file(root, "items")):
                failures.append(f"truncated at {off}: verify {report}")
            # appending on top must not bury the damage either
            try:
                ctx.append("items", [{"id": "on-top"}])
            except app.StorageError:
                pass
            else:
                failures.append(f"truncated at {off}: append on top of lost batches succeeded")
        shutil.rmtree(root)
    assert not failures, _summary(failures, len(offsets))


# --- the index ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine_index_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("pristine_idx") / "store"
    with app.open_store(root) as s:
        ctx = s.context(CTX)
        ctx.append("analogies", [analogy(i) for i in range(300)])
        ctx.append("analogies", [analogy(i, quality_score=0.5) for i in range(0, 300, 4)])
        ctx.delete("analogies", [f"a{i}" for i in range(0, 300, 7)])
        expected = {
            "all": ctx.query("analogies"),
            "d3": ctx.query("analogies", {"source_domain": "d3"}),
            "top": ctx.query("analogies", order_by="-quality_score", limit=25),
            "t1": ctx.count("analogies", {"target_domain": "t1"}),
            "range": ctx.query(
                "analogies", {"target_domain": "t2", "quality_score": {"$gte": 0.3, "$lt": 0.7}}
            ),
        }
    wal = Path(str(index_file(root)) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # everything is in the main file
    return root, expected


def _index_reads(ctx: app.Context, expected: dict[str, Any]) -> Reads:
    reads: Reads = [
        ("query", lambda: ctx.query("analogies"), expected["all"]),
        ("count", lambda: ctx.count("analogies"), len(expected["all"])),
        ("query d3", lambda: ctx.query("analogies", {"source_domain": "d3"}), expected["d3"]),
        (
            "top 25",
            lambda: ctx.query("analogies", order_by="-quality_score", limit=25),
            expected["top"],
        ),
        ("count t1", lambda: ctx.count("analogies", {"target_domain": "t1"}), expected["t1"]),
        (
            "range",
            lambda: ctx.query(
                "analogies", {"target_domain": "t2", "quality_score": {"$gte": 0.3, "$lt": 0.7}}
            ),
            expected["range"],
        ),
    ]
    for rec in expected["all"]:
        reads.append((f"get {rec['id']}", lambda rid=rec["id"]: ctx.get("analogies", rid), rec))
    for i in range(0, 300, 7):
        reads.append((f"get deleted a{i}", lambda rid=f"a{i}": _missing(ctx, rid), True))
    return reads


def _missing(ctx: app.Context, rid: str) -> bool:
    try:
        ctx.get("analogies", rid)
    except app.NotFoundError:
        return True
    return False


def test_bit_flips_in_index(
    tmp_path: Path, pristine_index_store: tuple[Path, dict[str, Any]]
) -> None:
    pristine, expected = pristine_index_store
    data = index_file(pristine).read_bytes()
    rng = random.Random(2024)
    failures: list[str] = []
    cases = 100
    for k in range(cases):
        pos = rng.randrange(100, len(data)) if k % 10 else rng.randrange(0, 4096)
        root = tmp_path / f"x{k}"
        shutil.copytree(pristine, root)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        index_file(root).write_bytes(bytes(flipped))
        with app.open_store(root) as s:
            ctx = s.context(CTX)
            _, wrong = _run_reads(_index_reads(ctx, expected))
            report = ctx.verify()
            # A flip inside SQLite's own b-trees (the unique-id index, an expression index)
            # can hide rows from a lookup or a count: no per-read check can see a row that is
            # not returned. Rows that ARE returned are CRC-, id- and filter-checked. The
            # documented guarantee for the index (PERSISTENCE_LAYER_STRATEGY.md, section 4) is
            # therefore: any wrong answer is reported by verify() naming the index, and
            # rebuild_index() repairs it.
            if wrong and (report.ok or not _names_file(report.problems, index_file(root))):
                failures += [f"index flip at byte {pos}: {w}" for w in wrong[:3]]
                failures.append(f"index flip at byte {pos}: and verify does not report it")
            if not report.ok and not _names_file(report.problems, index_file(root)):
                failures.append(f"index flip at {pos}: verify does not name the index")
            ctx.rebuild_index()
            errors, wrong = _run_reads(_index_reads(ctx, expected))
            if errors or wrong or not ctx.verify().ok:
                failures.append(f"index flip at byte {pos}: rebuild_index did not repair it")
        shutil.rmtree(root)
    assert not failures, _summary(failures, cases)
