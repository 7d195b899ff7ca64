"""``app.formats.tracker``: the workflow tracker database and its staged items files.

Round trip (a workflow's life written and read back), damage detection and limits, as in every
format test. The workflow manager's behaviour on top of it is in tests/test_workflows.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from app.core import clock
from app.core.errors import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    SchemaVersionError,
)
from app.core.workflow_types import WorkflowStatus
from app.formats import tracker
from app.formats.tracker import TrackerDB

ITEMS = [orjson.dumps({"id": f"r{i}", "v": i}) for i in range(10)]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[TrackerDB]:
    t = TrackerDB(tmp_path / "workflows")
    try:
        yield t
    finally:
        t.close()


def add(db: TrackerDB, wid: str = "wf-1", chunk_size: int = 4) -> tracker.Row:
    """Stage ``ITEMS`` and insert a pending workflow naming them (as the manager does)."""
    staged = db.stage_items(wid, ITEMS, chunk_size)
    row = {
        "workflow_id": wid,
        "workflow_type": "append",
        "context": "c",
        "status": WorkflowStatus.PENDING.value,
        "created_at": clock.wall(),
        "items_total": staged.count,
        "chunk_size": chunk_size,
        "chunks_total": len(staged.index),
        "params": "{}",
        "planned": 1,
        "items_file": staged.name,
        "items_sha256": staged.sha256,
    }
    db.insert(row, staged.index)
    return db.get(wid)


# -- round trip -------------------------------------------------------------------------------


def test_a_workflow_row_round_trips(db: TrackerDB) -> None:
    row = add(db)
    assert row["status"] == "pending" and row["items_total"] == 10 and row["chunks_total"] == 3
    index = db.chunk_index("wf-1")
    chunks = [db.read_chunk(row["items_file"], index, k) for k in range(len(index))]
    assert [line for chunk in chunks for line in chunk] == ITEMS
    assert [
        r["workflow_id"]
        for r in db.list_rows(status=None, workflow_type=None, context=None, limit=10, offset=0)
    ] == ["wf-1"]
    assert db.check() == []


def test_claim_progress_and_finish(db: TrackerDB) -> None:
    add(db)
    now = clock.now()
    claimed = db.claim(None, "owner-1", "worker", now, types=["append"])
    assert claimed is not None and claimed["status"] == "processing"
    assert db.claim(None, "owner-2", "worker", now, types=["append"]) is None  # nothing pending
    assert db.heartbeat("wf-1", "owner-1", now)
    assert not db.heartbeat("wf-1", "someone-else", now)
    db.journal_add("wf-1", 0, 0, "append", "notes", "wf-1-0-0", ["r0", "r1"], [])
    done = db.chunk_done("wf-1", "owner-1", 0, 4, now)
    assert done is not None and done["chunks_done"] == 1 and done["items_processed"] == 4
    assert [e.committed for e in db.journal("wf-1")] == [True]
    assert db.batch_ids("wf-1") == ["wf-1-0-0"]
    finished = db.move("wf-1", WorkflowStatus.COMPLETED, if_owner="owner-1", finished_at=1.0)
    assert finished is not None and finished["status"] == "completed"
    assert db.aggregates()["by_status"] == {"completed": 1}


def test_purge_removes_finished_rows_and_names_their_files(db: TrackerDB) -> None:
    row = add(db)
    db.cancel("wf-1", now=5.0)
    assert db.purge([WorkflowStatus.CANCELLED], before=10.0) == [row["items_file"]]
    assert not db.exists("wf-1")


def test_reopening_sees_the_same_rows(tmp_path: Path) -> None:
    first = TrackerDB(tmp_path / "workflows")
    add(first)
    first.close()
    again = TrackerDB(tmp_path / "workflows")
    try:
        assert again.get("wf-1")["items_total"] == 10
    finally:
        again.close()


# -- damage -----------------------------------------------------------------------------------


def test_a_damaged_items_chunk_is_detected(db: TrackerDB) -> None:
    row = add(db)
    path = db.items_dir / row["items_file"]
    data = bytearray(path.read_bytes())
    data[3] ^= 0x20
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="chunk 0"):
        db.read_chunk(row["items_file"], db.chunk_index("wf-1"), 0)
    assert any("SHA-256" in p for p in db.check())


def test_a_missing_items_file_is_detected(db: TrackerDB) -> None:
    row = add(db)
    (db.items_dir / row["items_file"]).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        db.read_chunk(row["items_file"], db.chunk_index("wf-1"), 0)
    assert any("missing" in p for p in db.check())


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "workflows"
    root.mkdir()
    conn = sqlite3.connect(root / tracker.DB_NAME)
    conn.execute(f"PRAGMA user_version={tracker.TRACKER_VERSION + 1}")
    conn.close()
    db = TrackerDB(root)
    try:
        with pytest.raises(SchemaVersionError):
            db.get("wf-1")
    finally:
        db.close()


# -- limits -----------------------------------------------------------------------------------


def test_ids_are_unique_and_unknown_ids_not_found(db: TrackerDB) -> None:
    add(db)
    with pytest.raises(ConflictError, match="already exists"):
        add(db)
    with pytest.raises(NotFoundError):
        db.get("absent")


def test_only_legal_transitions_are_written(db: TrackerDB) -> None:
    add(db)
    with pytest.raises(ConflictError, match="illegal"):
        db.move("wf-1", WorkflowStatus.COMPLETED)  # pending -> completed skips processing
    assert db.get("wf-1")["status"] == "pending"


def test_the_errors_list_is_capped_but_counted(db: TrackerDB) -> None:
    add(db)
    many = [f"e{i}" for i in range(tracker.MAX_ERRORS_KEPT + 20)]
    row = db.move("wf-1", None, errors=many, extra_errors=5)
    assert row is not None
    assert len(orjson.loads(row["errors"])) == tracker.MAX_ERRORS_KEPT
    assert row["error_count"] == len(many) + 5
