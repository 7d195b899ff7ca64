"""Records on PostgreSQL (``PgRecords``): what holds there beyond the shared record suites.

Also ``write_log`` / ``ingest_log`` on both record backends (whole-context transfer moves
collections as batch-log streams): a log written by one backend ingests into the other, batch
for batch and byte for byte.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import app
from app.backends.local import LocalBackend
from app.backends.postgres.catalog import PgContexts
from app.backends.postgres.connect import Database
from app.backends.postgres.records import PgRecords
from app.core.errors import ConflictError, IntegrityError, NotFoundError
from app.formats.batchlog import BatchLog, LogScan


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


class _PgRecordsBackend(LocalBackend):
    """The embedded backend with the PostgreSQL catalogue and records (the parts this module
    tests; files and the tracker stay local)."""

    def __init__(self, root: Path, url: str) -> None:
        super().__init__(root)
        self.contexts = PgContexts(url, root)
        self.db = Database(url)
        self._records: dict[str, PgRecords] = {}

    def catalog(self) -> Any:
        return self.contexts

    def records(self, context: str) -> Any:
        found = self._records.get(context)
        if found is None:
            folder = self.contexts.folder(context)
            lock = self.contexts.context_lock(context)
            found = self._records[context] = PgRecords(self.db, context, folder, lock)
        return found

    def close_all(self) -> None:
        self.contexts.close()
        self.db.close()


@pytest.fixture
def pg_store(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> Iterator[Callable[[str], app.Store]]:
    """Opens stores over one PostgreSQL database (one local working folder per host name)."""
    from app.backends.registry import SCHEMES

    made: list[_PgRecordsBackend] = []
    opened: list[app.Store] = []

    def make(host: str) -> app.Store:
        monkeypatch.setitem(
            SCHEMES, "pgrec", lambda url: made.append(_PgRecordsBackend(tmp_path / host, pg_url)) or made[-1]
        )
        opened.append(app.open_store("pgrec://x"))
        return opened[-1]

    yield make
    for store in opened:
        store.close()
    for backend in made:
        backend.close_all()


def _fresh(store: app.Store) -> app.Context:
    """A context of its own (the database is shared by the module's tests)."""
    return store.context("c" + uuid.uuid4().hex[:10])


def test_pg_smoke(pg_store: Callable[[str], app.Store]) -> None:
    ctx = _fresh(pg_store("a"))
    current = _fill(ctx)
    assert [r["id"] for r in current] == ["n0", "n3", "n4", "n1", "n9"]
    assert ctx.get("notes", "n1")["v"] == "changed"
    assert ctx.count("notes", {"v": {"$gte": 3}}) == 2
    assert [r["id"] for r in ctx.iter("notes", order_by="-v")] != []
    assert [v.batch_id for v in ctx.history("notes", "n1")][1] == "b2"
    assert ctx.verify().ok, ctx.verify().problems
