"""Issue 9 item 2 (SPEC 22, "the logs are the truth"): compaction, export, merge import and
rebuild decide from the log, never lose a committed version because the SQLite index lacks a
row or holds a wrong one, and verify reports every kind of index/log disagreement."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from index_damage import KINDS, damage, index_path, log_current

import app

ROW_KINDS = ("delete", "insert", "alter", "alter_pos")


def _setup(root: Path) -> dict[str, dict[str, object]]:
    """A context ``c`` with a collection ``t``: upserts and a tombstone, so a compaction has
    something to drop. Returns the current records by id (read from the log)."""
    with app.open_store(root) as s:
        ctx = s.context("c")
        ctx.append("t", [{"id": f"r{i}", "v": 0} for i in range(20)], batch_id="b0")
        ctx.append("t", [{"id": f"r{i}", "v": 1} for i in range(0, 20, 2)], batch_id="b1")
        ctx.delete("t", ["r19"], batch_id="b2")
    current = log_current(root / "contexts" / "c" / "t.jsonl")
    assert len(current) == 19
    return current


def _assert_whole(ctx: app.Context, current: dict[str, dict[str, object]]) -> None:
    assert ctx.count("t") == len(current)
    assert {r["id"]: r for r in ctx.iter("t")} == current
    for rid, rec in current.items():
        assert ctx.get("t", rid) == rec


EXPECTED_PROBLEM = {
    "delete": "are missing",
    "insert": "are not current",
    "alter": "differ from",
    "alter_pos": "differ from",
    "drop_batch": "batches",
}


@pytest.mark.parametrize("kind", KINDS)
def test_verify_reports_index_disagreement(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "s"
    _setup(root)
    damage(index_path(root, "c"), "t", kind, "r4")
    with app.open_store(root) as s:
        report = s.context("c").verify()
    assert not report.ok
    assert any(EXPECTED_PROBLEM[kind] in p and "c.sqlite" in p for p in report.problems), report


@pytest.mark.parametrize("kind", ROW_KINDS)
def test_compact_repairs_from_the_log(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "s"
    current = _setup(root)
    damage(index_path(root, "c"), "t", kind, "r4")
    with app.open_store(root) as s:
        ctx = s.context("c")
        assert not ctx.verify().ok
        report = ctx.compact("t")
        assert report.records_after == len(current)
        assert log_current(root / "contexts" / "c" / "t.jsonl") == current
        _assert_whole(ctx, current)
        assert ctx.verify().ok
        # compacting a log with nothing left to drop also rebuilds the table from the log
        damage(index_path(root, "c"), "t", kind, "r6")
        ctx.compact("t")
        _assert_whole(ctx, current)
        assert ctx.verify().ok


@pytest.mark.parametrize("kind", ROW_KINDS)
def test_export_reads_the_log(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "s"
    current = _setup(root)
    damage(index_path(root, "c"), "t", kind, "r4")
    archive = tmp_path / "c.tar.gz"
    with app.open_store(root) as s:
        manifest = s.export_context("c", archive)
        assert manifest.collections == {"t": len(current)}
        s.import_context(archive, name="copy")
        _assert_whole(s.context("copy"), current)


@pytest.mark.parametrize("kind", ROW_KINDS)
def test_rebuild_recovers_everything_in_the_log(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "s"
    current = _setup(root)
    damage(index_path(root, "c"), "t", kind, "r4")
    with app.open_store(root) as s:
        ctx = s.context("c")
        ctx.rebuild_index()
        _assert_whole(ctx, current)
        assert ctx.verify().ok


@pytest.mark.parametrize("mode", ["merge", "skip"])
def test_merge_import_reads_the_target_log(tmp_path: Path, mode: str) -> None:
    """The target's newer version of a record its index lost is kept (not overwritten by an
    older imported one), and the merged context's index holds it again."""
    root = tmp_path / "s"
    archive = tmp_path / "src.tar.gz"
    with app.open_store(root) as s:
        src = s.context("src")
        src.append("t", [{"id": "x", "v": "archived"}, {"id": "new", "v": "archived"}])
        s.export_context("src", archive)
        s.context("c").append("t", [{"id": "x", "v": "target"}, {"id": "y", "v": "target"}])
    damage(index_path(root, "c"), "t", "delete", "x")
    with app.open_store(root) as s:
        s.import_context(archive, name="c", on_conflict=mode)
        ctx = s.context("c")
        assert ctx.get("t", "x") == {"id": "x", "v": "target"}
        assert ctx.get("t", "new") == {"id": "new", "v": "archived"}
        assert ctx.count("t") == 3
        assert ctx.verify().ok


def test_compaction_keeps_every_commit_field(tmp_path: Path) -> None:
    """A rewritten commit line carries every field of the original (batch id, kind, time,
    receipt and any field a later format adds); only n and sha256 are recomputed."""
    root = tmp_path / "s"
    _setup(root)
    log = root / "contexts" / "c" / "t.jsonl"

    def commits() -> dict[str, dict[str, object]]:
        out = {}
        for raw in log.read_bytes().splitlines()[1:]:
            entry = json.loads(raw)
            if "commit" in entry:
                out[entry["commit"]["batch"]] = entry["commit"]
        return out

    before = commits()
    with app.open_store(root) as s:
        s.context("c").compact("t")
    after = commits()
    assert set(after) == set(before)
    for bid, meta in before.items():
        kept = {k: v for k, v in after[bid].items() if k not in ("n", "sha256", "rc", "rs")}
        assert kept == {k: v for k, v in meta.items() if k not in ("n", "sha256", "rc", "rs")}
        assert (after[bid].get("rc", meta["n"]), after[bid].get("rs", meta["sha256"])) == (
            meta.get("rc", meta["n"]),
            meta.get("rs", meta["sha256"]),
        )


def test_verify_reports_a_collection_only_the_index_has(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _setup(root)
    conn = sqlite3.connect(index_path(root, "c"), isolation_level=None)
    conn.execute('CREATE TABLE "c_ghost"(pos INTEGER PRIMARY KEY, id TEXT, data TEXT, crc INT)')
    conn.execute("INSERT INTO collections VALUES ('ghost', 'abc', 10)")
    conn.close()
    with app.open_store(root) as s:
        ctx = s.context("c")
        report = ctx.verify()
        assert any("'ghost', which has no log" in p for p in report.problems), report
        ctx.rebuild_index()
        assert ctx.verify().ok


@pytest.mark.parametrize("kind", ROW_KINDS)
def test_load_context_reads_the_log(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "s"
    current = _setup(root)
    damage(index_path(root, "c"), "t", kind, "r4")
    with app.open_store(root) as s:
        state = s.load_context("c")
    assert len(state.collections["t"]) == len(current)
    assert {r["id"]: r for r in state.collections["t"]} == current
    with app.open_store(root) as s:  # in commit order, as iter gives them from a sound index
        s.context("c").rebuild_index()
        assert state.collections["t"] == list(s.context("c").iter("t"))
