"""Records on PostgreSQL (``PgRecords``): what holds there beyond the shared record suites.

Also ``write_log`` / ``ingest_log`` on both record backends (whole-context transfer moves
collections as batch-log streams): a log written by one backend ingests into the other, batch
for batch and byte for byte.
"""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_matrix import fresh_schema

import app
from app.core.codec import encode
from app.core.errors import ConflictError, IntegrityError, NotFoundError
from app.core.layout import WORK_ENV
from app.formats.batchlog import BatchLog, LogScan
from app.managers.store import Store

ROOT = Path(__file__).resolve().parent.parent


def _local_ctx(tmp_path: Path, name: str = "c") -> app.Context:
    store = app.open_store(tmp_path / name)
    return store.context("default")


def _log_of(ctx: app.Context, collection: str) -> bytes:
    buf = io.BytesIO()
    with ctx._records.writing():
        n = ctx._records.write_log(collection, buf)
    data = buf.getvalue()
    assert n == len(data)
    return data


def _batches(data: bytes, tmp_path: Path) -> list[tuple[str, bytes]]:
    """``(batch id, its bytes)`` of every batch of a batch-log stream."""
    path = tmp_path / "scan.jsonl"
    path.write_bytes(data)
    scan = LogScan(path, BatchLog(path).header().length)
    found = [(b.batch_id, data[b.start : b.end]) for b in scan]
    assert not scan.tail
    return found


def _fill(ctx: app.Context) -> list[dict[str, Any]]:
    ctx.append("notes", [{"id": f"n{i}", "v": i, "x": 1e20, "z": -0.0} for i in range(5)])
    ctx.append("notes", [{"id": "n1", "v": "changed", "s": "é\u2028\U0001f600"}], batch_id="b2")
    ctx.delete("notes", ["n2"], batch_id="b3")
    ctx.append("notes", [{"id": "n9", "big": 2**63 - 1, "neg": -(2**63)}])
    return ctx.query("notes")


def test_local_write_log_is_the_log_file_and_ingests_elsewhere(tmp_path: Path) -> None:
    src = _local_ctx(tmp_path, "a")
    current = _fill(src)
    data = _log_of(src, "notes")
    assert data == (Path(src.path) / "notes.jsonl").read_bytes()
    dst = _local_ctx(tmp_path, "b")
    with dst._records.writing():
        assert dst._records.ingest_log("notes", io.BytesIO(data)) == 4
    assert dst.query("notes") == current
    assert _log_of(dst, "notes") == data
    assert [v.batch_id for v in dst.history("notes", "n1")] == [
        v.batch_id for v in src.history("notes", "n1")
    ]
    # the ingested batch ids are taken: a repeat is a duplicate, not a second copy
    again = dst.append(
        "notes", [{"id": "n1", "v": "changed", "s": "é\u2028\U0001f600"}], batch_id="b2"
    )
    assert again.duplicate
    assert dst.verify().ok


def test_local_ingest_refuses_damage_a_non_empty_collection_and_taken_ids(tmp_path: Path) -> None:
    src = _local_ctx(tmp_path, "a")
    _fill(src)
    data = _log_of(src, "notes")
    dst = _local_ctx(tmp_path, "b")
    records = dst._records
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    with records.writing(), pytest.raises(IntegrityError):
        records.ingest_log("notes", io.BytesIO(bytes(flipped)))
    assert dst.count("notes") == 0 and dst.collections() == []
    with records.writing(), pytest.raises(IntegrityError):
        records.ingest_log("notes", io.BytesIO(data[:-3]))  # a torn last batch
    dst.append("other", [{"id": "x"}], batch_id="b2")
    with records.writing(), pytest.raises(ConflictError):
        records.ingest_log("notes", io.BytesIO(data))
    assert dst.count("notes") == 0
    with records.writing(), pytest.raises(ConflictError):
        records.ingest_log("other", io.BytesIO(data))
    with records.writing(), pytest.raises(NotFoundError):
        records.write_log("missing", io.BytesIO())


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_root(pg_url: str) -> Iterator[str]:
    """One store (a fresh schema of the module's database) for the module's tests, each of
    which works in contexts of its own."""
    yield from fresh_schema(pg_url)


def open_pg(root: str, files: str, work: str) -> Store:
    """The store ``root`` as the host whose working folder is ``work`` sees it."""
    os.environ[WORK_ENV] = work
    return app.open_store(root, files=files)


@pytest.fixture
def pg_store(
    pg_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Store]]:
    """Opens the module's store as a host (one local working folder per host name)."""
    opened: list[Store] = []
    monkeypatch.setenv(WORK_ENV, str(tmp_path / "work"))  # restored afterwards

    def make(host: str) -> Store:
        opened.append(open_pg(pg_root, str(tmp_path.parent / "files"), str(tmp_path / host)))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


def _fresh(store: Store) -> app.Context:
    """A context of its own (the database is shared by the module's tests)."""
    return store.context("c" + uuid.uuid4().hex[:10])


PRELUDE = (
    "import sys\n"
    "import app\n"
    "def open_pg(root, files, work):\n"
    "    import os\n"
    f"    os.environ[{WORK_ENV!r}] = work\n"
    "    return app.open_store(root, files=files)\n"
)


def _popen(code: str, *args: str) -> subprocess.Popen[str]:
    """``code`` run by a new interpreter (``open_pg`` defined); keeps the environment
    (CTXSTORE_TRUST_KEY, XDG_CONFIG_HOME and the services)."""
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        cwd=str(ROOT),
    )


VALUES: list[dict[str, Any]] = [
    {"id": "big-float", "v": 1e20},
    {"id": "neg-zero", "v": -0.0},
    {"id": "max", "v": 2**63 - 1},
    {"id": "min", "v": -(2**63)},
    {"id": "tiny", "v": 5e-324},
    {"id": "tenth", "v": 0.1},
    {"id": "exp", "v": 1.5e300, "w": [1e16, 12345678901234567, -1e-7]},
    {"id": "uni", "s": 'é\u2028\u2029\U0001f600 ß \\ " \t\n', "k": {"ü": {"z": None, "a": True}}},
    {"id": "é-\U0001f600", "v": "an id outside ASCII"},
]


def test_pg_records_come_back_byte_equal(pg_store: Callable[[str], Store]) -> None:
    """Reads return the stored canonical bytes (never a re-serialised jsonb), on every path."""
    ctx = _fresh(pg_store("a"))
    ctx.append("vals", VALUES)
    records = ctx._records
    for rec in VALUES:
        assert records.get("vals", rec["id"]) == encode(rec).decode()
        got = ctx.get("vals", rec["id"])
        assert encode(got) == encode(rec)
    assert math.copysign(1.0, ctx.get("vals", "neg-zero")["v"]) == -1.0
    assert isinstance(ctx.get("vals", "big-float")["v"], float)
    for found in (ctx.query("vals"), list(ctx.iter("vals")), ctx.query("vals", limit=100)):
        assert [encode(r) for r in found] == [encode(r) for r in VALUES]
    assert [r["id"] for r in ctx.query("vals", {"v": 1e20})] == ["big-float"]
    assert [r["id"] for r in ctx.query("vals", {"v": {"$gt": 2**63 - 2, "$lt": 1e19}})] == ["max"]
    assert ctx.records_from_log("vals") == ctx.query("vals")
    assert ctx.verify().ok


def _receipt(r: app.BatchReceipt) -> dict[str, Any]:
    return r.model_dump(exclude={"committed_at", "sha256"})


def _version(v: app.RecordVersion) -> dict[str, Any]:
    return v.model_dump(exclude={"committed_at", "position"})


def _script(ctx: app.Context) -> list[Any]:
    """The same calls on any backend: what they answer."""
    out: list[Any] = []
    out.append(
        _receipt(ctx.append("notes", [{"id": f"n{i}", "v": i} for i in range(20)], batch_id="a1"))
    )
    out.append(_receipt(ctx.append("notes", VALUES, batch_id="vals")))
    out.append(_receipt(ctx.append("notes", VALUES, batch_id="vals")))  # a duplicate
    with pytest.raises(app.ConflictError):
        ctx.append("notes", VALUES[:2], batch_id="vals")
    out.append(ctx.delete("notes", ["n3", "n4", "absent"], batch_id="d1"))
    out.append(ctx.delete("notes", ["n3", "n4", "absent"], batch_id="d1"))
    out.append(ctx.delete("notes", where={"v": {"$gte": 15}}, batch_id="d2"))
    out.append(_receipt(ctx.append("notes", [{"id": "n1", "v": "again"}], batch_id="a3")))
    out.append(ctx.query("notes", order_by="-v", limit=7, offset=2))
    out.append(ctx.query("notes", {"v": {"$in": [1, 2, "again", 1e20]}}))
    out.append([_version(v) for v in ctx.history("notes", "n1")])
    out.append({k: v.deleted for k, v in ctx.latest_commits("notes", ["n1", "n3", "x"]).items()})
    report = ctx.compact("notes")
    out.append((report.records_before, report.records_after))
    out.append(ctx.query("notes"))
    out.append([_version(v) for v in ctx.history("notes", "n1")])
    out.append(ctx.collections())
    out.append(ctx.verify().ok)
    return out


def test_pg_answers_equal_the_embedded_backend(
    pg_store: Callable[[str], Store], tmp_path: Path
) -> None:
    """Receipts, queries, history and compaction answer the same on both backends (batch
    times and the digests that cover them aside), and a log moves between them byte-exact."""
    local = _local_ctx(tmp_path, "local")
    pg = _fresh(pg_store("a"))
    assert _script(pg) == _script(local)
    # the embedded log ingests into PostgreSQL and comes back out byte for byte
    data = _log_of(local, "notes")
    other = _fresh(pg_store("a"))
    with other._records.writing():
        assert other._records.ingest_log("notes", io.BytesIO(data)) == len(_batches(data, tmp_path))
    assert _log_of(other, "notes") == data
    assert other.query("notes") == local.query("notes")
    assert other.verify().ok
    # and PostgreSQL's log ingests into an embedded context, receipts and all
    data = _log_of(pg, "notes")
    back = _local_ctx(tmp_path, "back")
    with back._records.writing():
        back._records.ingest_log("notes", io.BytesIO(data))
    assert _log_of(back, "notes") == data
    assert back.query("notes") == pg.query("notes")
    assert back.append("notes", VALUES, batch_id="vals").duplicate


def test_a_reader_never_sees_part_of_a_batch(pg_store: Callable[[str], Store]) -> None:
    """A reader on another host polls while batches of 5,000 records commit."""
    writer_ctx = _fresh(pg_store("a"))
    writer_ctx.append("big", [{"id": "first"}])
    reader_ctx = pg_store("b").context(writer_ctx.name)
    size, batches = 5000, 6
    done = threading.Event()
    seen: list[int] = []

    def read() -> None:
        while not done.is_set():
            seen.append(reader_ctx.count("big"))
            seen.append(len(reader_ctx.query("big", {"b": {"$gte": 0}})) + 1)
            seen.append(sum(1 for _ in reader_ctx.iter("big")))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for b in range(batches):
            writer_ctx.append("big", [{"id": f"{b}-{i}", "b": b} for i in range(size)])
    finally:
        done.set()
        reader.join()
    assert seen
    assert all((n - 1) % size == 0 for n in seen), sorted(set(seen))
    assert reader_ctx.count("big") == 1 + size * batches


APPEND_MANY = """
store = open_pg(sys.argv[1], sys.argv[2], sys.argv[3])
ctx = store.context(sys.argv[4])
tag = sys.argv[5]
for b in range(12):
    ctx.append("shared", [{"id": f"{tag}-{b}-{i}", "tag": tag, "b": b} for i in range(400)])
print("ok")
"""


def test_two_processes_appending_to_one_context_serialise(
    pg_root: str, pg_store: Callable[[str], Store], tmp_path: Path
) -> None:
    ctx = _fresh(pg_store("a"))
    ctx.append("shared", [])
    files = str(tmp_path.parent / "files")
    procs = [
        _popen(APPEND_MANY, pg_root, files, str(tmp_path / f"host-{tag}"), ctx.name, tag)
        for tag in ("p", "q")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    assert ctx.count("shared") == 2 * 12 * 400
    # commit order: every batch's records form one run, and each writer's batches keep order
    runs: list[tuple[str, int]] = []
    for rec in ctx.iter("shared"):
        key = (rec["tag"], rec["b"])
        if not runs or runs[-1] != key:
            runs.append(key)
    assert len(runs) == 24 and len(set(runs)) == 24
    for tag in ("p", "q"):
        assert [b for t, b in runs if t == tag] == list(range(12))
    assert ctx.verify().ok


LOST_ACK = """
import os, signal
store = open_pg(sys.argv[1], sys.argv[2], sys.argv[3])
ctx = store.context(sys.argv[4])
ctx.append("notes", [{"id": f"r{i}", "v": i} for i in range(1000)], batch_id="lost-ack")
os.kill(os.getpid(), signal.SIGKILL)  # committed, but the caller never hears of it
"""


def test_a_batch_whose_ack_was_lost_commits_exactly_once(
    pg_root: str, pg_store: Callable[[str], Store], tmp_path: Path
) -> None:
    ctx = _fresh(pg_store("a"))
    files = str(tmp_path.parent / "files")
    proc = _popen(LOST_ACK, pg_root, files, str(tmp_path / "child"), ctx.name)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    again = ctx.append("notes", [{"id": f"r{i}", "v": i} for i in range(1000)], batch_id="lost-ack")
    assert again.duplicate and again.count == 1000
    assert ctx.count("notes") == 1000
    assert [v.batch_id for v in ctx.history("notes", "r7")] == ["lost-ack"]
    with pytest.raises(app.ConflictError):  # the same id with another payload is refused
        ctx.append("notes", [{"id": "other"}], batch_id="lost-ack")


KILLED_MID_BATCH = """
store = open_pg(sys.argv[1], sys.argv[2], sys.argv[3])
ctx = store.context(sys.argv[4])
print("go", flush=True)
ctx.append("notes", ({"id": f"r{i}", "pad": "x" * 200} for i in range(200_000)), batch_id="big")
print("committed", flush=True)
"""


def test_a_writer_killed_mid_batch_leaves_nothing_and_the_retry_commits_once(
    pg_root: str, pg_store: Callable[[str], Store], tmp_path: Path
) -> None:
    ctx = _fresh(pg_store("a"))
    files = str(tmp_path.parent / "files")
    proc = _popen(KILLED_MID_BATCH, pg_root, files, str(tmp_path / "child"), ctx.name)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "go"
    time.sleep(1.5)  # somewhere in encoding, spooling or the COPY: any point must be safe
    proc.kill()
    out, _ = proc.communicate(timeout=60)
    committed = "committed" in out
    assert ctx.count("notes") in ((200_000,) if committed else (0,))
    receipt = ctx.append(
        "notes", ({"id": f"r{i}", "pad": "x" * 200} for i in range(200_000)), batch_id="big"
    )
    assert receipt.duplicate == committed and receipt.count == 200_000
    assert ctx.count("notes") == 200_000
    assert ctx.verify().ok


def _sql(store: Store, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Runs ``statement`` on the store's database (the test plays a store writer)."""
    with store.backend.db.transaction() as conn:  # type: ignore[attr-defined]
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def test_verify_reports_damage_and_rebuild_repairs_the_index(
    pg_store: Callable[[str], Store],
) -> None:
    store = pg_store("a")
    ctx = _fresh(store)
    ctx.append("notes", [{"id": f"n{i}", "v": i} for i in range(50)], batch_id="one")
    ctx.append("notes", [{"id": "n1", "v": "new"}], batch_id="two")
    ctx.delete("notes", ["n2"], batch_id="three")
    assert ctx.verify().ok
    before = ctx.query("notes")
    # the index (current-version table) altered, extended and shortened behind our back
    where = "context = %s AND collection = 'notes' AND id = %s"
    _sql(
        store,
        f"UPDATE ctxstore_records SET raw = %s WHERE {where}",
        b'{"id":"n3","v":-1}',
        ctx.name,
        "n3",
    )
    _sql(store, f"DELETE FROM ctxstore_records WHERE {where}", ctx.name, "n4")
    _sql(
        store,
        "INSERT INTO ctxstore_records SELECT context, collection, 'ghost', seq, pos, doc, raw"
        f" FROM ctxstore_records WHERE {where}",
        ctx.name,
        "n5",
    )
    report = ctx.verify()
    assert not report.ok
    text = "\n".join(report.problems)
    assert "'n3'" in text and "'n4'" in text and "'ghost'" in text and "rebuild_index" in text
    ctx.rebuild_index()
    assert ctx.verify().ok
    assert ctx.query("notes") == before
    # a flipped byte in a batch body is damage to the log: reported, never raised
    _sql(
        store,
        "UPDATE ctxstore_batch_bodies SET data = overlay(data placing '9' from 12 for 1)"
        " WHERE seq = (SELECT seq FROM ctxstore_batches WHERE context = %s AND batch_id = 'one')",
        ctx.name,
    )
    report = ctx.verify()
    assert not report.ok and any(
        "damaged" in p and "log of 'notes'" in p for p in report.problems
    ), report.problems
    with pytest.raises(app.IntegrityError):
        ctx.rebuild_index()  # never re-derives the index from a damaged log
    assert ctx.query("notes") == before  # the index is untouched


def test_compaction_keeps_receipts_and_idempotency(pg_store: Callable[[str], Store]) -> None:
    ctx = _fresh(pg_store("a"))
    first = ctx.append("notes", [{"id": f"n{i}", "v": i} for i in range(10)], batch_id="one")
    ctx.append("notes", [{"id": f"n{i}", "v": -i} for i in range(5)], batch_id="two")
    ctx.delete("notes", ["n9"], batch_id="three")
    current = ctx.query("notes")
    report = ctx.compact("notes")
    assert (report.records_before, report.records_after) == (16, 9)
    assert ctx.query("notes") == current
    again = ctx.append("notes", [{"id": f"n{i}", "v": i} for i in range(10)], batch_id="one")
    assert again.duplicate and (again.sha256, again.count) == (first.sha256, 10)
    assert [v.batch_id for v in ctx.history("notes", "n1")] == ["two"]
    assert ctx.verify().ok
    ctx.rebuild_index()
    assert ctx.query("notes") == current


def test_a_dropped_context_leaves_no_records_behind(pg_store: Callable[[str], Store]) -> None:
    store = pg_store("a")
    ctx = _fresh(store)
    name = ctx.name
    ctx.append("notes", [{"id": "x"}], batch_id="b")
    store.drop_context(name)
    for table in ("ctxstore_batches", "ctxstore_records", "ctxstore_collections"):
        assert _sql(store, f"SELECT count(*) FROM {table} WHERE context = %s", name) == [(0,)]
    again = store.context(name)
    assert again.count("notes") == 0 and again.collections() == []
    assert not again.append("notes", [{"id": "x"}], batch_id="b").duplicate


def test_a_server_killed_mid_batch_keeps_all_or_nothing(pg_store: Callable[[str], Store]) -> None:
    """``kill -9`` of the server while a large batch is on its way: after the restart the
    batch is there whole or not at all, the same store goes on, and a retry with the same
    batch id leaves exactly one copy."""
    from backend_servers import pg_restartable, postgres_pid, restart_postgres

    if not pg_restartable():
        pytest.skip("the PostgreSQL server was not started by .ci/services.py (cannot restart it)")
    ctx = _fresh(pg_store("a"))
    ctx.append("notes", [{"id": "before"}], batch_id="before")
    n = 150_000

    def batch() -> Iterator[dict[str, Any]]:
        return ({"id": f"r{i}", "pad": "y" * 100} for i in range(n))

    failed: list[BaseException] = []

    def write() -> None:
        try:
            ctx.append("notes", batch(), batch_id="crash")
        except BaseException as exc:
            failed.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(1.0)  # encoding or COPY under way: any moment must be safe
    old = postgres_pid()
    os.kill(old, signal.SIGKILL)
    writer.join(timeout=120)
    assert not writer.is_alive()
    assert all(isinstance(e, app.StorageError) for e in failed), failed
    while True:  # the postmaster is gone before it is started again
        try:
            os.kill(old, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    restart_postgres()
    found = ctx.count("notes")
    assert found in (1, 1 + n)
    receipt = ctx.append("notes", batch(), batch_id="crash")
    assert receipt.duplicate == (found == 1 + n)
    assert ctx.count("notes") == 1 + n
    assert ctx.get("notes", "before") == {"id": "before"}
    assert ctx.verify().ok


def test_the_history_of_a_few_ids_is_found_by_searching_a_large_log(
    pg_store: Callable[[str], Store],
) -> None:
    """A few ids in a large log: the server searches the bodies (also across the seam of two
    4 MiB body parts) and the answer equals reading the whole log back."""
    from app.backends.postgres.records import logread
    from app.backends.postgres.records.tables import BODY_PART

    ctx = _fresh(pg_store("a"))

    def line(i: int, pad: int) -> bytes:
        return b'{"put":' + encode({"id": f"r{i:07d}", "pad": "x" * pad}) + b"}\n"

    needle = len(b'"id":"r0000000"')
    # a pad that puts the "id" of one line across the end of the first body part
    pad = next(p for p in range(100, 3000) if 9 <= BODY_PART % len(line(0, p)) < 8 + needle)
    per_line = len(line(0, pad))
    cut = BODY_PART // per_line  # the line whose id the part boundary cuts
    ctx.append(
        "t", [{"id": f"r{i:07d}", "pad": "x" * pad} for i in range(cut + 50)], batch_id="big"
    )
    ctx.append("t", [{"id": "r0000001", "pad": "second"}], batch_id="b2")
    ctx.delete("t", ["r0000002"], batch_id="b3")
    ids = [f"r{cut:07d}", "r0000001", "r0000002", "absent"]
    found = ctx.history_many("t", ids)
    with ctx._records.log_file("t") as path:
        assert path is not None
        assert path.stat().st_size > BODY_PART
        whole = logread.versions(path, "t", ids)
        latest = logread.latest_commits(path, ids)
    assert found == whole
    assert ctx.latest_commits("t", ids) == latest
    assert latest[ids[2]].deleted and not latest[ids[1]].deleted and "absent" not in latest
    assert [v.batch_id for v in found[f"r{cut:07d}"]] == ["big"]
    assert [v.batch_id for v in found["r0000001"]] == ["big", "b2"]
    assert [(v.batch_id, v.deleted) for v in found["r0000002"]] == [("big", False), ("b3", True)]
    assert found["absent"] == []
    # damage in a batch the search reads is named, never skipped
    _sql(
        pg_store("a"),
        "UPDATE ctxstore_batch_bodies SET data = overlay(data placing 'Q' from 30 for 1)"
        " WHERE seq = (SELECT seq FROM ctxstore_batches WHERE context = %s AND batch_id = 'b2')",
        ctx.name,
    )
    with pytest.raises(app.IntegrityError, match="the log of 't'"):
        ctx.history("t", "r0000001")


def test_pg_ingest_refuses_damage_a_non_empty_collection_and_taken_ids(
    pg_store: Callable[[str], Store], tmp_path: Path
) -> None:
    src = _local_ctx(tmp_path, "src")
    current = _fill(src)
    data = _log_of(src, "notes")
    dst = _fresh(pg_store("a"))
    records = dst._records
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    for bad in (bytes(flipped), data[:-3], b"", b"not a log\n"):
        with records.writing(), pytest.raises(IntegrityError):
            records.ingest_log("notes", io.BytesIO(bad))
    assert dst.count("notes") == 0 and dst.collections() == []
    dst.append("other", [{"id": "x"}], batch_id="b2")  # a batch id the log holds
    with records.writing(), pytest.raises(ConflictError):
        records.ingest_log("notes", io.BytesIO(data))
    assert dst.count("notes") == 0 and dst.collections() == ["other"]  # rolled back whole
    with records.writing(), pytest.raises(ConflictError):
        records.ingest_log("other", io.BytesIO(data))  # not empty
    with records.writing(), pytest.raises(NotFoundError):
        records.write_log("missing", io.BytesIO())
    fresh = _fresh(pg_store("a"))
    with fresh._records.writing():
        assert fresh._records.ingest_log("notes", io.BytesIO(data)) == 4
    assert fresh.query("notes") == current
    assert fresh.verify().ok


def test_a_collection_whose_log_row_is_gone_is_reported(pg_store: Callable[[str], Store]) -> None:
    store = pg_store("a")
    ctx = _fresh(store)
    ctx.append("notes", [{"id": "x"}])
    _sql(
        store,
        "DELETE FROM ctxstore_collections WHERE context = %s AND collection = 'notes'",
        ctx.name,
    )
    problems = ctx.missing_logs()
    assert len(problems) == 2 and all("'notes', which has no log" in p for p in problems)
    report = ctx.verify()
    assert not report.ok and set(problems) <= set(report.problems)
