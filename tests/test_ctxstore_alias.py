"""``import ctxstore`` gives the same objects as ``import app``; ``python -m ctxstore`` runs
the CLI (SPEC: distribution and import name)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import app
import app.protocols
import app.service
import ctxstore
import ctxstore.protocols
import ctxstore.service


def test_same_objects() -> None:
    assert ctxstore.open_store is app.open_store
    assert ctxstore.__version__ == app.__version__
    assert set(ctxstore.__all__) == set(app.__all__)
    for name in app.__all__:
        assert getattr(ctxstore, name) is getattr(app, name), name
    assert ctxstore.service.create_app is app.service.create_app
    assert ctxstore.protocols.RecordStoreProtocol is app.protocols.RecordStoreProtocol


def test_python_m_ctxstore_runs_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ctxstore.open_store(root) as store:
        store.context("c").append("t", [{"id": "a"}])
    done = subprocess.run(
        [sys.executable, "-m", "ctxstore", "--root", str(root), "contexts"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "c" in done.stdout.split()
