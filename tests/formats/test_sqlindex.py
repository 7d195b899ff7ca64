"""Unit tests of the SQLite query index (``app.formats.sqlindex``), straight on its module.

A template for a new format's tests: the schema it creates, writing rows (put/delete inside
one transaction) and reading them back (get/query/stream/count), the batch rows, the CRC that
catches changed row content, and building aside then swapping in. No store, no log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import pytest

from app.core.errors import IntegrityError, SchemaVersionError
from app.formats.sqlindex import (
    INDEX_VERSION,
    BatchRow,
    CollectionState,
    PutRow,
    SqliteIndex,
    check_index_version,
)

AT = "2026-01-01T00:00:00+00:00"


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SqliteIndex]:
    idx = SqliteIndex(tmp_path / "c.sqlite")
    idx.initialise()
    try:
        yield idx
    finally:
        idx.close()


def _puts(start: int, *records: dict[str, object]) -> list[PutRow]:
    """``(pos, id, canonical JSON)`` rows, positions 100 bytes apart."""
    return [
        (start + 100 * i, str(r["id"]), orjson.dumps(r, option=orjson.OPT_SORT_KEYS))
        for i, r in enumerate(records)
    ]


def _row(batch_id: str, start: int, end: int, count: int, kind: str = "append") -> BatchRow:
    return BatchRow(batch_id, "notes", kind, start, end, count, "s" * 64, AT)


def _apply(
    index: SqliteIndex,
    row: BatchRow,
    puts: list[PutRow],
    deletes: Sequence[str] = (),
) -> None:
    with index.write() as conn:
        index.apply(conn, "notes", row, puts, deletes)
        index.set_log_end(conn, "notes", row.end)


@pytest.fixture
def notes(index: SqliteIndex) -> SqliteIndex:
    """An index whose collection ``notes`` holds a, b, c (one batch) then deletes b."""
    index.reset_collection("notes", "gen1", 50, [("n",)])
    _apply(
        index,
        _row("b1", 50, 350, 3),
        _puts(50, {"id": "a", "n": 1}, {"id": "b", "n": 2}, {"id": "c", "n": 3}),
    )
    _apply(index, _row("b2", 350, 400, 1, "delete"), [], ["b"])
    return index


# -- schema ------------------------------------------------------------------------------------


def test_initialise_creates_the_schema(index: SqliteIndex) -> None:
    assert index.is_initialised()
    conn = sqlite3.connect(index.path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    assert {"collections", "batches"} <= tables
    assert version == INDEX_VERSION
    assert index.integrity_check() == []
    assert index.collection_names() == []


def test_an_index_of_an_unknown_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={INDEX_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError):
        check_index_version(path)
    check_index_version(tmp_path / "missing.sqlite")  # a missing file is dealt with on use


def test_a_collection_has_a_named_state(notes: SqliteIndex) -> None:
    state = notes.collection_state("notes")
    assert state == CollectionState(generation="gen1", log_end=400)
    assert (state.generation, state.log_end) == ("gen1", 400)
    assert notes.collection_state("other") is None
    assert notes.collection_names() == ["notes"]


# -- records -----------------------------------------------------------------------------------


def test_put_get_and_delete(notes: SqliteIndex) -> None:
    assert orjson.loads(notes.get("notes", "a") or "") == {"id": "a", "n": 1}
    assert notes.get("notes", "b") is None  # deleted
    assert notes.get("other", "a") is None  # no such table
    assert notes.existing("notes", ["c", "b", "a"]) == ["c", "a"]
    assert [(pos, rid) for pos, rid, _, _ in notes.rows("notes")] == [(50, "a"), (250, "c")]


def test_a_later_version_replaces_the_row(notes: SqliteIndex) -> None:
    _apply(notes, _row("b3", 400, 500, 1), _puts(400, {"id": "a", "n": 9}))
    assert orjson.loads(notes.get("notes", "a") or "") == {"id": "a", "n": 9}
    assert notes.select_ids("notes", "(1)", []) == ["c", "a"]  # commit order: pos


def test_query_count_and_stream(notes: SqliteIndex) -> None:
    where = "json_extract(data, '$.n') >= ?"
    assert notes.select("notes", where, [1]) == [{"id": "a", "n": 1}, {"id": "c", "n": 3}]
    assert notes.select("notes", where, [1], "pos DESC", limit=1) == [{"id": "c", "n": 3}]
    assert notes.select("notes", where, [1], offset=1) == [{"id": "c", "n": 3}]
    assert notes.count("notes") == 2 and notes.count("notes", where, [2]) == 1
    assert list(notes.stream("notes", where, [0])) == notes.select("notes", where, [0])
    assert notes.select("missing", "(1)", []) == [] and notes.count("missing") == 0


# -- batches -----------------------------------------------------------------------------------


def test_batch_rows_read_back_with_field_names(notes: SqliteIndex) -> None:
    row = notes.batch("b1")
    assert row == _row("b1", 50, 350, 3)
    assert row is not None and (row.collection, row.start, row.end, row.count) == (
        "notes",
        50,
        350,
        3,
    )
    assert notes.batch("missing") is None
    assert [b.batch_id for b in notes.batches("notes")] == ["b1", "b2"]
    assert all(isinstance(b, BatchRow) for b in notes.batches("notes"))


def test_batch_at_finds_the_batch_holding_an_offset(notes: SqliteIndex) -> None:
    at = notes.batch_at("notes", 120)
    assert at is not None and at.batch_id == "b1"
    b2 = notes.batch_at("notes", 350)
    assert b2 is not None and b2.batch_id == "b2"
    assert notes.batch_at("notes", 400) is None  # past the last committed batch
    assert notes.batch_at("notes", 10) is None  # inside the header


# -- the CRC check -----------------------------------------------------------------------------


def test_a_changed_row_is_caught_by_its_crc(notes: SqliteIndex) -> None:
    """SQLite does not notice changed row content; the CRC kept beside each row does."""
    conn = sqlite3.connect(notes.path)
    with conn:
        conn.execute('UPDATE "c_notes" SET data=? WHERE id=?', ('{"id":"a","n":7}', "a"))
    conn.close()
    notes.invalidate()
    with pytest.raises(IntegrityError, match="damaged row"):
        notes.get("notes", "a")
    with pytest.raises(IntegrityError):
        notes.select("notes", "(1)", [])
    with pytest.raises(IntegrityError):
        list(notes.stream("notes", "(1)", []))
    assert notes.get("notes", "c") is not None  # other rows still read


# -- building aside, then swapping in ----------------------------------------------------------


def test_side_tables_replace_a_collection_in_one_step(notes: SqliteIndex) -> None:
    notes.start_side("notes")
    with notes.write() as conn:
        notes.apply_side(conn, "notes", _row("b9", 60, 160, 1), _puts(60, {"id": "z"}), [])
    assert notes.existing("notes", ["a", "z"]) == ["a"]  # readers still see the live table
    notes.swap_side("notes", "gen2", 160, [("n",)])
    assert notes.existing("notes", ["a", "z"]) == ["z"]
    assert [b.batch_id for b in notes.batches("notes")] == ["b9"]
    assert notes.collection_state("notes") == CollectionState("gen2", 160)


def test_reset_a_collection(notes: SqliteIndex) -> None:
    notes.reset_collection("notes", "gen3", 10, [])
    assert notes.count("notes") == 0 and list(notes.batches("notes")) == []
    assert notes.collection_state("notes") == CollectionState("gen3", 10)
