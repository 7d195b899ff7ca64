"""Issue 9 item 13 (SPEC 22): one damaged context never stops ``open_store``; that context
raises ``IntegrityError`` naming the file when used and ``verify`` lists it. A context whose
``context.json`` is missing stays listed (never hidden, never silently re-created empty)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import app


def _store(root: Path) -> None:
    with app.open_store(root) as store:
        for name in ("bad", "good"):
            ctx = store.context(name)
            ctx.append("t", [{"id": f"r{i}"} for i in range(5)])
            ctx.append("u", [{"id": "u0"}])


def _dir_for_log(c: Path) -> Path:
    (c / "t.jsonl").unlink()
    (c / "t.jsonl").mkdir()
    return c / "t.jsonl"


def _dir_for_index(c: Path) -> Path:
    for f in c.glob("bad.sqlite*"):
        f.unlink()
    (c / "bad.sqlite").mkdir()
    return c / "bad.sqlite"


def _link_for_log(c: Path) -> Path:
    os.replace(c / "t.jsonl", c.parent / "elsewhere.jsonl")
    (c / "t.jsonl").symlink_to(c.parent / "elsewhere.jsonl")
    return c / "t.jsonl"


def _no_catalog(c: Path) -> Path:
    (c / "context.json").unlink()
    return c / "context.json"


def _garbage_catalog(c: Path) -> Path:
    (c / "context.json").write_bytes(b"\x00{not json")
    return c / "context.json"


def _dir_for_catalog(c: Path) -> Path:
    (c / "context.json").unlink()
    (c / "context.json").mkdir()
    return c / "context.json"


DAMAGE: dict[str, Callable[[Path], Path]] = {
    "log-is-folder": _dir_for_log,
    "index-is-folder": _dir_for_index,
    "log-is-link": _link_for_log,
    "context-json-missing": _no_catalog,
    "context-json-garbage": _garbage_catalog,
    "context-json-is-folder": _dir_for_catalog,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_one_damaged_context_never_stops_the_store(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "s"
    _store(root)
    bad = DAMAGE[damage](root / "contexts" / "bad")
    with app.open_store(root) as store:
        assert store.contexts() == ["bad", "good"]
        assert store.context("good").count("t") == 5
        store.context("good").append("t", [{"id": "more"}])
        for use in (
            lambda c: c.count("t"),
            lambda c: c.get("t", "r0"),
            lambda c: c.query("u"),
            lambda c: c.append("t", [{"id": "x"}]),
            lambda c: c.collections(),
        ):
            with pytest.raises(app.IntegrityError, match=re.escape(str(bad))):
                use(store.context("bad", create=False))
        report = store.verify()
        assert not report.ok
        assert any(str(bad) in p for p in report.problems)
        assert not any("good" in p for p in report.problems)
        # a store-wide read names the damaged context: a link is reported in its problems
        # (stats never reads through a link), other damage raises when the context is read
        try:
            problems = store.stats()["problems"]
        except app.IntegrityError as exc:
            problems = [str(exc)]
        assert any(str(bad) in p for p in problems)
    if damage == "context-json-missing":
        assert not bad.exists()  # nothing re-created it
    with app.open_store(root) as store:
        store.drop_context("bad")  # a damaged context can still be dropped
        assert store.contexts() == ["good"] and store.verify().ok


def test_missing_context_json_is_not_recreated_by_context_create(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _store(root)
    _no_catalog(root / "contexts" / "bad")
    with app.open_store(root) as store:
        ctx = store.context("bad")  # create=True must not paper over the damage
        with pytest.raises(app.IntegrityError, match=r"context\.json"):
            ctx.count("t")
        assert not (root / "contexts" / "bad" / "context.json").exists()


def test_unfinished_context_creation_is_not_listed_and_completes(tmp_path: Path) -> None:
    """A folder holding nothing but dot files is a creation that never finished: not a
    damaged context (no false alarm), and creating it completes it."""
    root = tmp_path / "s"
    _store(root)
    (root / "contexts" / "half").mkdir()
    (root / "contexts" / "half" / ".lock").touch()
    with app.open_store(root) as store:
        assert store.contexts() == ["bad", "good"]
        assert store.verify().ok
        store.context("half").append("t", [{"id": "a"}])
        assert store.contexts() == ["bad", "good", "half"]
    shutil.rmtree(root)
