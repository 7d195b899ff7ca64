"""``ctxstore upgrade`` (docs/api.md, "Upgrading a store"): opening never migrates, using an
older part raises ``SchemaVersionError`` naming the command, the command migrates under the
store's lock and keeps everything; a newer, unknown format is refused.

The old store is really written in the old format: a store used by this version, then its
tracker rewritten as version 1 wrote it (no steady-clock heartbeat columns, user_version 1),
and trust marks as version 1 wrote them (empty files).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

import app
from app.core import layout
from app.core.workflow_types import WorkflowStatus as S
from app.managers.maintenance.upgrade import planned, upgrade_store

ROOT = Path(__file__).resolve().parent.parent
ENV = {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}


def cli(root: Path | str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "app", "--root", str(root), *args],
        capture_output=True,
        timeout=120,
        env={**ENV, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=False,
    )


def tracker_version(root: Path) -> int:
    db = sqlite3.connect(layout.tracker(root))
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def old_store(root: Path) -> dict[str, str]:
    """A store whose tracker is in version 1's format, holding a completed and a pending
    workflow; returns their ids by status."""
    with app.open_store(root) as store:
        ctx = store.context("c")
        ctx.append("t", [{"id": "a", "v": 1}])
        done = store.workflows.submit(
            "append",
            context="c",
            items=[{"id": f"w{i}"} for i in range(7)],
            params={"collection": "t"},
        )
        assert store.workflows.process(done.workflow_id).status == S.COMPLETED
        pending = store.workflows.submit(
            "append", context="c", items=[{"id": "p"}], params={"collection": "t"}
        )
    db = sqlite3.connect(layout.tracker(root))
    db.execute("ALTER TABLE workflows DROP COLUMN beat_boot")
    db.execute("ALTER TABLE workflows DROP COLUMN beat_steady")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    return {"completed": done.workflow_id, "pending": pending.workflow_id}


def test_opening_never_migrates_and_use_names_the_command(store_root: Path) -> None:
    old_store(store_root)
    raw = layout.tracker(store_root).read_bytes()
    with app.open_store(store_root) as store:
        assert store.context("c").get("t", "a") == {"id": "a", "v": 1}  # records unaffected
        with pytest.raises(app.SchemaVersionError, match="run `ctxstore upgrade`"):
            store.workflows.list()
        with pytest.raises(app.SchemaVersionError, match="ctxstore upgrade"):
            store.workflows.submit(
                "append", context="c", items=[{"id": "x"}], params={"collection": "t"}
            )
    assert tracker_version(store_root) == 1
    assert layout.tracker(store_root).read_bytes() == raw  # not a byte written


def test_upgrade_migrates_the_tracker_and_keeps_every_workflow(store_root: Path) -> None:
    ids = old_store(store_root)
    with app.open_store(store_root) as store:
        steps = planned(store)
        assert len(steps) == 1 and "tracker version 1 -> 2" in steps[0].what
        seen: list[str] = []
        report = upgrade_store(store, on_step=seen.append)
        assert report.applied == [steps[0].what]
        assert seen == [steps[0].what, "c"]  # the migration, then each context checked
        assert report.checked == 1 and report.notes == []
    assert tracker_version(store_root) == 2
    with app.open_store(store_root) as store:
        assert store.workflows.get(ids["completed"]).status == S.COMPLETED
        assert store.workflows.get(ids["pending"]).status == S.PENDING
        assert store.workflows.process(ids["pending"]).status == S.COMPLETED
        assert store.context("c").count("t") == 9
        assert store.verify().ok
        assert planned(store) == []
        again = upgrade_store(store)
        assert again.applied == [] and again.checked == 1


def test_upgrade_waits_for_the_store_writer_lock(store_root: Path) -> None:
    old_store(store_root)
    with app.open_store(store_root) as holder, app.open_store(store_root) as other:
        done = threading.Event()

        def upgrade() -> None:
            upgrade_store(other)
            done.set()

        with holder.writer_lock.hold():
            worker = threading.Thread(target=upgrade)
            worker.start()
            assert not done.wait(0.5)  # blocked behind the lock
            assert tracker_version(store_root) == 1
        worker.join(60)
        assert done.is_set()
    assert tracker_version(store_root) == 2


def test_cli_upgrade_dry_run_then_upgrade(store_root: Path) -> None:
    ids = old_store(store_root)
    dry = cli(store_root, "upgrade", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert b"tracker version 1 -> 2" in dry.stdout and b"1 migration(s) pending" in dry.stdout
    assert tracker_version(store_root) == 1
    listed = cli(store_root, "workflows", "list")
    assert listed.returncode == 1 and b"ctxstore upgrade" in listed.stderr
    done = cli(store_root, "upgrade")
    assert done.returncode == 0, done.stderr
    assert b"1 migration(s) applied; 1 context(s) checked" in done.stdout
    assert tracker_version(store_root) == 2
    shown = cli(store_root, "workflows", "show", ids["completed"])
    assert shown.returncode == 0, shown.stderr
    again = cli(store_root, "upgrade", "--json")
    assert orjson.loads(again.stdout)["applied"] == []


def test_cli_upgrade_takes_root_after_the_command(store_root: Path, tmp_path: Path) -> None:
    old_store(store_root)
    proc = cli(tmp_path / "elsewhere", "upgrade", "--root", str(store_root))
    assert proc.returncode == 0, proc.stderr
    assert tracker_version(store_root) == 2
    assert not (tmp_path / "elsewhere").exists()


def test_a_newer_tracker_is_refused_and_upgrade_leaves_it(store_root: Path) -> None:
    old_store(store_root)
    db = sqlite3.connect(layout.tracker(store_root))
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with app.open_store(store_root) as store:
        with pytest.raises(app.SchemaVersionError, match="unknown"):
            store.workflows.list()
        assert planned(store) == []  # nothing an upgrade knows how to do
    assert tracker_version(store_root) == 99


def test_upgrade_notes_version_1_trust_marks_and_never_signs_them(store_root: Path) -> None:
    old_store(store_root)
    trust = store_root / "trust"
    trust.mkdir(exist_ok=True)
    sha = "ab" * 32
    (trust / sha).write_bytes(b"")  # what version 1 wrote: an empty mark
    proc = cli(store_root, "upgrade")
    assert proc.returncode == 0, proc.stderr
    assert b"1 model trust mark(s) written by version 1" in proc.stderr
    assert b"ctxstore models trust --existing" in proc.stderr
    assert (trust / sha).read_bytes() == b""  # still unsigned


def test_upgrade_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    proc = cli(tmp_path / "none", "upgrade")
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"error: ")
    assert not (tmp_path / "none").exists()


def test_a_current_store_has_nothing_to_upgrade(store: app.Store, store_root: Path) -> None:
    store.context("x").append("t", [{"id": "1"}])
    report = upgrade_store(store)
    assert report.applied == [] and report.checked == 1
    assert not layout.tracker(store_root).exists()  # checking never creates the tracker
