"""The ``Records`` contract (``app.backends.protocols.Records``), run against every backend in
``FACTORIES``: add a factory for a new backend (PostgreSQL) and every test runs for it.

A factory returns the records of a new, empty context. The calls are the ones
``app.managers.context.Context`` makes, with the same preconditions (``ready()`` before reads,
``writing()`` around writes, encoded canonical JSON records)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import app
from app.backends.protocols import Records
from app.core.codec import decode, encode
from app.core.indexes import normalise_indexes
from app.managers.store import open_store

CONTEXT = "c1"


def _local(tmp: Path) -> Iterator[Records]:
    with open_store(tmp / "store") as store:
        store.context(CONTEXT)  # creates the context's folder and catalogue
        records = store.backend.records(CONTEXT)
        try:
            yield records
        finally:
            records.close()


FACTORIES: dict[str, Callable[[Path], Iterator[Records]]] = {"local": _local}


@pytest.fixture(params=sorted(FACTORIES))
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Records]:
    yield from FACTORIES[request.param](tmp_path)


def put(records: Records, coll: str, batch_id: str, *docs: dict[str, object]) -> None:
    with records.writing():
        ids = [str(d["id"]) for d in docs]
        records.append(coll, batch_id, ids, [encode(dict(d)) for d in docs], f"req-{batch_id}")


def test_append_is_visible_to_every_read(records: Records) -> None:
    records.ready()
    assert records.is_ready and records.collections() == []
    put(records, "t", "b1", {"id": "a", "n": 1}, {"id": "b", "n": 2})
    assert records.collections() == ["t"] and records.has("t")
    assert decode(records.get("t", "a") or "") == {"id": "a", "n": 1}
    assert records.get("t", "zz") is None and records.get("nope", "a") is None
    assert records.existing("t", ["b", "x", "a"]) == ["b", "a"]
    everything = records.compile(None, None)
    assert records.query("t", everything, None, 0) == [{"id": "a", "n": 1}, {"id": "b", "n": 2}]
    assert list(records.stream("t", everything)) == records.query("t", everything, None, 0)
    assert records.count("t", everything) == 2
    big = records.compile({"n": {"$gte": 2}}, "-n")
    assert records.query("t", big, 10, 0) == [{"id": "b", "n": 2}]
    assert big.check is not None and big.check({"n": 2}) and not big.check({"n": 1})
    assert records.select_ids("t", big) == ["b"]
    assert records.query("t", records.compile(None, "-n"), 1, 1) == [{"id": "a", "n": 1}]


def test_a_batch_is_found_by_id_with_its_request_digest(records: Records) -> None:
    records.ready()
    put(records, "t", "b1", {"id": "a"})
    row = records.batch("b1")
    assert row is not None
    assert (row.batch_id, row.collection, row.kind, row.count) == ("b1", "t", "append", 1)
    assert len(row.sha256) == 64 and row.committed_at
    assert records.request_digest(row) == "req-b1"
    assert records.batch("b2") is None


def test_delete_history_and_the_log_reads(records: Records) -> None:
    records.ready()
    put(records, "t", "b1", {"id": "a", "v": 1}, {"id": "b", "v": 1})
    put(records, "t", "b2", {"id": "a", "v": 2})
    with records.writing():
        row = records.delete("t", "b3", ["b"], None)
    assert (row.kind, row.count) == ("delete", 1)
    assert records.existing("t", ["a", "b"]) == ["a"]
    history = records.history("t", ["a", "b"])
    assert [v.data for v in history["a"]] == [{"id": "a", "v": 1}, {"id": "a", "v": 2}]
    assert [v.deleted for v in history["b"]] == [False, True]
    latest = records.latest_commits("t", ["a", "b", "x"])
    assert set(latest) == {"a", "b"} and latest["b"][1] is True and latest["a"][1] is False
    assert records.current_records("t") == [{"id": "a", "v": 2}]


def test_compaction_and_a_compacted_copy_keep_the_current_records(records: Records) -> None:
    records.ready()
    put(records, "t", "b1", {"id": "a", "v": 1})
    put(records, "t", "b2", {"id": "a", "v": 2}, {"id": "b", "v": 1})
    with records.writing():
        copy = io.BytesIO()
        assert records.write_compacted("t", copy) == 2 and copy.getvalue()
        with pytest.raises(app.NotFoundError):
            records.write_compacted("missing", io.BytesIO())
        report = records.compact("t")
    assert report.records_after == 2
    assert records.current_records("t") == [{"id": "a", "v": 2}, {"id": "b", "v": 1}]


def test_define_schema_and_indexes(records: Records) -> None:
    records.ready()
    with records.writing():
        records.define("t", None, normalise_indexes(["n", ("a", "b")]))
    assert records.collections() == ["t"] and records.schema("t") is None
    put(records, "t", "b1", {"id": "x", "n": 3})
    assert records.query("t", records.compile({"n": 3}, None), None, 0) == [{"id": "x", "n": 3}]


def test_verify_runs_the_other_checks_and_rebuild_repairs(records: Records) -> None:
    records.ready()
    put(records, "t", "b1", {"id": "a"})
    called: list[bool] = []

    def others() -> tuple[list[str], list[str]]:
        called.append(True)
        return ["other: problem"], ["other"]

    problems, checked = records.verify(others)
    assert called == [True] and problems == ["other: problem"] and "other" in checked
    assert records.missing_logs() == []
    records.rebuild()
    assert records.is_ready and records.existing("t", ["a"]) == ["a"]
    assert isinstance(records.release(), bool)
    records.close()
    assert not records.is_ready
    assert records.ready_if_idle() and records.is_ready


def test_a_damaged_index_error_names_the_collection(records: Records) -> None:
    error = records.damaged("t")
    assert isinstance(error, app.IntegrityError) and "'t'" in str(error)
