"""A process keeps a context open while another process replaces what lies under it
(``rebuild_index``, an ``overwrite`` import): the first one must follow, never keep reading or
writing the replaced files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import app


def _in_other_process(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout.strip()


def test_open_context_follows_a_rebuild_elsewhere(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with app.open_store(root) as store:
        ctx = store.context("x")
        ctx.append("t", [{"id": f"r{i}"} for i in range(10)])
        assert ctx.count("t") == 10
        printed = _in_other_process(
            "import app\n"
            f"s = app.open_store({str(root)!r}); c = s.context('x')\n"
            "c.rebuild_index(); c.append('t', [{'id': 'fromB'}]); print(c.count('t'))\n"
        )
        assert printed == "11"
        assert ctx.count("t") == 11 and ctx.get("t", "fromB") == {"id": "fromB"}
        ctx.append("t", [{"id": "fromA"}])
    printed = _in_other_process(
        "import app\n"
        f"s = app.open_store({str(root)!r}); c = s.context('x')\n"
        "print(c.count('t'), c.get('t', 'fromA')['id'], c.verify().ok)\n"
    )
    assert printed == "12 fromA True"


def test_open_context_follows_an_overwrite_import_elsewhere(tmp_path: Path) -> None:
    root = tmp_path / "s"
    archive = tmp_path / "x.tar.gz"
    with app.open_store(root) as store:
        ctx = store.context("x")
        ctx.append("t", [{"id": f"r{i}"} for i in range(5)])
        store.export_context("x", archive)
        ctx.append("t", [{"id": "later"}])
        assert ctx.count("t") == 6
        _in_other_process(
            "import app\n"
            f"s = app.open_store({str(root)!r})\n"
            f"s.import_context({str(archive)!r}, name='x', on_conflict='overwrite')\n"
        )
        assert ctx.count("t") == 5
        with pytest.raises(app.NotFoundError):
            ctx.get("t", "later")
        ctx.append("t", [{"id": "after"}])
        assert ctx.count("t") == 6
        assert ctx.verify().ok
