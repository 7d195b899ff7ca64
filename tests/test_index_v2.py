"""Index version 2 (docs/api.md, "Upgrading a store"; PERSISTENCE_LAYER_STRATEGY.md, "The SQLite
index"): the bulk build (a rebuild, a context whose index is missing or imported) leaves exactly
what applying the batches one by one leaves; a version 1 index is refused on use, never
migrated on open, and ``ctxstore upgrade`` rebuilds it from the logs.

The version 1 file is really in version 1's format: its collection tables are rewritten with
the column constraint ``id TEXT NOT NULL UNIQUE`` version 1 declared (``V1_COLUMNS``).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import app
from app.core import layout
from app.formats.sqlindex import INDEX_VERSION, SqliteIndex
from app.managers.maintenance.upgrade import planned, upgrade_store

ROOT = Path(__file__).resolve().parent.parent
V1_COLUMNS = (
    "(pos INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, data TEXT NOT NULL, crc INTEGER NOT NULL)"
)


def index_file(root: Path, context: str = "c") -> Path:
    return layout.context_dir(root, context) / layout.index_name(context)


def dump(path: Path) -> dict[str, Any]:
    """Everything the index says, independent of how it was built: each collection's rows,
    its log state, the batches and the indexes' column expressions."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'c\\_%' "
                "ESCAPE '\\' ORDER BY name"
            )
        ]
        out: dict[str, Any] = {
            "collections": db.execute("SELECT * FROM collections ORDER BY name").fetchall(),
            "batches": db.execute("SELECT * FROM batches ORDER BY batch_id").fetchall(),
            "version": db.execute("PRAGMA user_version").fetchone()[0],
        }
        for t in tables:
            out[t] = db.execute(f'SELECT pos, id, data, crc FROM "{t}" ORDER BY pos').fetchall()
            out[t + " indexes"] = sorted(
                (r[2], [c[2] for c in db.execute(f'PRAGMA index_xinfo("{r[1]}")') if c[5]])
                for r in db.execute(f'PRAGMA index_list("{t}")')
            )
        return out
    finally:
        db.close()


def fill(ctx: app.Context) -> None:
    """Versions superseded in later batches and within one, deletions, a record deleted then
    written again, an emptied collection, a custom index and an empty delete batch."""
    ctx.define_collection("people", indexes=["age", ("city", "age")])
    ctx.append("people", [{"id": f"p{i}", "age": i % 50, "city": f"c{i % 7}"} for i in range(300)])
    ctx.append("people", [{"id": f"p{i}", "age": 99, "city": "moved"} for i in range(0, 300, 3)])
    ctx.append("people", [{"id": "dup", "v": 1}, {"id": "dup", "v": 2}])
    ctx.delete("people", [f"p{i}" for i in range(0, 300, 5)])
    ctx.append("people", [{"id": "p10", "age": 1, "city": "back"}])
    ctx.delete("people", [])
    ctx.append("notes", [{"id": f"n{i}", "text": "é" * i} for i in range(40)])
    ctx.append("gone", [{"id": "g1"}, {"id": "g2"}])
    ctx.delete("gone", ["g1", "g2"])
    ctx.append("analogies", [])


def test_a_rebuild_leaves_what_applying_the_batches_left(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as store:
        ctx = store.context("c")
        fill(ctx)
        before = dump(index_file(root))
        queried = ctx.query("people", {"age": {"$gte": 40}}, order_by="-age")
        ctx.rebuild_index()
        after = dump(index_file(root))
        assert after == before and after["version"] == INDEX_VERSION
        assert len(after["c_people"]) == ctx.count("people") == 242
        assert ctx.get("people", "dup") == {"id": "dup", "v": 2}
        assert ctx.get("people", "p10") == {"id": "p10", "age": 1, "city": "back"}
        assert ctx.count("gone") == 0 and ctx.existing("people", ["p5", "p6"]) == ["p6"]
        assert ctx.query("people", {"age": {"$gte": 40}}, order_by="-age") == queried
        assert ctx.verify().ok


def test_a_missing_index_is_built_in_bulk_on_first_use(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as store:
        fill(store.context("c"))
    before = dump(index_file(root))
    for suffix in ("", "-wal", "-shm"):
        Path(str(index_file(root)) + suffix).unlink(missing_ok=True)
    with app.open_store(root) as store:
        ctx = store.context("c")
        assert ctx.count("people") == 242
        assert dump(index_file(root)) == before
        ctx.append("people", [{"id": "p1", "age": 7}])  # the new file takes writes
        assert ctx.get("people", "p1") == {"id": "p1", "age": 7} and ctx.verify().ok
    leftovers = [p.name for p in index_file(root).parent.iterdir() if "rebuild" in p.name]
    assert leftovers == []


def test_an_imported_context_gets_the_same_index(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as store:
        fill(store.context("c"))
        store.export_context("c", tmp_path / "c.tar.gz")
        store.import_context(tmp_path / "c.tar.gz", name="d")
        assert store.context("d").count("people") == 242
    a, b = dump(index_file(root, "c")), dump(index_file(root, "d"))
    assert a.keys() == b.keys()
    for key in a:  # positions differ: each log's header names its context
        if key.startswith("c_") and not key.endswith("indexes"):
            assert [r[1:] for r in a[key]] == [r[1:] for r in b[key]]
        elif key != "collections":  # a new generation per imported log
            assert a[key] == b[key] or key == "batches"
    assert [(r[0], r[2], r[5]) for r in a["batches"]] == [(r[0], r[2], r[5]) for r in b["batches"]]


def test_a_torn_tail_is_not_indexed_by_a_rebuild_and_is_cut_after(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as store:
        store.context("c").append("t", [{"id": "a"}, {"id": "b"}])
    log = layout.context_dir(root, "c") / "t.jsonl"
    size = log.stat().st_size
    with open(log, "ab") as fh:
        fh.write(b'{"torn": ')
    for suffix in ("", "-wal", "-shm"):
        Path(str(index_file(root)) + suffix).unlink(missing_ok=True)
    with app.open_store(root) as store:
        ctx = store.context("c")
        assert ctx.count("t") == 2
    assert log.stat().st_size == size


def test_a_writing_connection_keeps_a_larger_page_cache_and_a_longer_wal(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "i.sqlite")
    try:
        index.initialise()
        index.close()
        with index.errors():
            reader_pages = index.conn().execute("PRAGMA cache_size").fetchone()[0]
        with index.write() as conn:
            writer_pages = conn.execute("PRAGMA cache_size").fetchone()[0]
        assert reader_pages == -2000  # SQLite's default, 2 MB
        assert writer_pages == -SqliteIndex.WRITE_CACHE_KIB
        with index.errors():
            pages = index.conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert pages == SqliteIndex.CHECKPOINT_PAGES > 1000  # SQLite's default: 1000
    finally:
        index.close()


# -- version 1 -> 2 ------------------------------------------------------------------------


def make_v1(path: Path) -> None:
    """Rewrite an index file as version 1 wrote it."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' "
                "AND name LIKE 'c\\_%' ESCAPE '\\'"
            )
        ]
        db.execute("BEGIN")
        for t in tables:
            indexes = [
                r[0]
                for r in db.execute(
                    "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name=? "
                    "AND name LIKE 'i\\_%' ESCAPE '\\'",
                    (t,),
                )
            ]
            db.execute(f'CREATE TABLE "v1_{t}"{V1_COLUMNS}')
            db.execute(f'INSERT INTO "v1_{t}" SELECT pos, id, data, crc FROM "{t}"')
            db.execute(f'DROP TABLE "{t}"')
            db.execute(f'ALTER TABLE "v1_{t}" RENAME TO "{t}"')
            for sql in indexes:
                db.execute(sql)
        db.execute("PRAGMA user_version=1")
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def version(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    root = tmp_path / "s"
    with app.open_store(root) as store:
        fill(store.context("c"))
        store.context("other").append("t", [{"id": "x"}])
    assert (layout.context_dir(root, "c") / "people.jsonl").is_file()
    make_v1(index_file(root))
    assert version(index_file(root)) == 1 and version(index_file(root, "other")) == 2
    return root


def test_a_version_1_index_is_refused_on_use_and_never_migrated_on_open(v1_store: Path) -> None:
    raw = index_file(v1_store).read_bytes()
    with app.open_store(v1_store) as store:
        assert store.context("other").get("t", "x") == {"id": "x"}  # other contexts work
        ctx = store.context("c")
        with pytest.raises(app.SchemaVersionError, match="run `ctxstore upgrade`"):
            ctx.get("people", "p1")
        with pytest.raises(app.SchemaVersionError, match="ctxstore upgrade"):
            ctx.append("people", [{"id": "new"}])
    assert version(index_file(v1_store)) == 1
    assert index_file(v1_store).read_bytes() == raw  # not a byte written
    assert (layout.context_dir(v1_store, "c") / "people.jsonl").is_file()


def test_upgrade_rebuilds_a_version_1_index_from_the_logs(v1_store: Path, tmp_path: Path) -> None:
    with app.open_store(tmp_path / "fresh") as fresh:
        fill(fresh.context("c"))
    expected = dump(index_file(tmp_path / "fresh"))
    with app.open_store(v1_store) as store:
        steps = planned(store)
        assert len(steps) == 1 and "index version 1 -> 2" in steps[0].what
        assert str(index_file(v1_store)) in steps[0].what
        report = upgrade_store(store)
        assert report.applied == [steps[0].what] and report.checked == 2
        assert version(index_file(v1_store)) == INDEX_VERSION
        ctx = store.context("c")
        assert ctx.count("people") == 242 and ctx.get("people", "dup") == {"id": "dup", "v": 2}
        assert ctx.verify().ok and store.verify().ok
        ctx.append("people", [{"id": "after", "age": 3}])
        assert {"id": "after", "age": 3} in ctx.query("people", {"age": 3}, order_by="id")
        assert planned(store) == []
    got = dump(index_file(v1_store))
    got["c_people"] = [r for r in got["c_people"] if r[1] != "after"]
    got["batches"] = expected["batches"]  # batch ids and times differ between the two stores
    for key in ("c_people", "c_notes", "c_gone", "c_analogies"):
        assert [(r[1], r[2]) for r in got[key]] == [(r[1], r[2]) for r in expected[key]]
        assert got[key + " indexes"] == expected[key + " indexes"]
    leftovers = [p.name for p in index_file(v1_store).parent.iterdir() if "rebuild" in p.name]
    assert leftovers == []


def test_cli_upgrade_rebuilds_a_version_1_index(v1_store: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "app", "--root", str(v1_store), "upgrade"]
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, env=env, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert b"index version 1 -> 2" in dry.stdout
    assert version(index_file(v1_store)) == 1
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert b"1 migration(s) applied; 2 context(s) checked" in done.stdout
    assert version(index_file(v1_store)) == INDEX_VERSION
    with app.open_store(v1_store) as store:
        assert store.context("c").count("people") == 242


def test_a_rebuild_stopped_by_a_damaged_log_leaves_the_old_index_and_no_scratch_file(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as store:
        ctx = store.context("c")
        ctx.append("t", [{"id": "a", "v": "first"}])
        ctx.append("t", [{"id": "b", "v": "second"}])
        before = dump(index_file(root))
        log = layout.context_dir(root, "c") / "t.jsonl"
        raw = log.read_bytes()
        log.write_bytes(raw.replace(b'"first"', b'"fir5t"'))  # a committed batch, damaged
        with pytest.raises(app.IntegrityError):
            ctx.rebuild_index()
        assert dump(index_file(root)) == before
        assert ctx.get("t", "b") == {"id": "b", "v": "second"}
    leftovers = [p.name for p in index_file(root).parent.iterdir() if "rebuild" in p.name]
    assert leftovers == []
