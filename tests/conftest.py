"""Shared fixtures. Tests never write into ./storage: every store lives in a tmp directory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_matrix import (  # noqa: F401
    backend_kind,
    matrix_store_args,
    pytest_generate_tests,
    pytest_terminal_summary,
)
from backend_servers import pg_server_url, pg_url, s3_endpoint, s3_url  # noqa: F401
from records_support import people_data

import app

os.environ.pop("CTXSTORE_ROOT", None)
# Never the real home: every test process (and every subprocess it starts) signs with this
# key, and a test that needs the per-user key file points XDG_CONFIG_HOME at a tmp folder.
os.environ["CTXSTORE_TRUST_KEY"] = "test-trust-key-" + "0123456789abcdef" * 2
os.environ["XDG_CONFIG_HOME"] = "/nonexistent/ctxstore-test-config"  # loud if ever used
# A postgresql:// store opened without $CTXSTORE_WORK keeps its working folder under the cache
# home: a private tmp folder for this test session (and its subprocesses), never ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ctxstore-test-cache-")


# The backend matrix (which modules, which tests embedded-only, known gaps):
# tests/backend_matrix.py; its hooks and fixtures are imported above.


@pytest.fixture
def store_root(
    backend_kind: str,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Path | str:
    """The root of this test's (fresh) store: a directory, or a PostgreSQL URL whose files URL
    is ``$CTXSTORE_FILES`` (set for the test), so ``app.open_store(store_root)`` reopens it."""
    if backend_kind == "embedded":
        return tmp_path / "store"
    root, files = request.getfixturevalue("matrix_store_args")
    assert files is not None
    monkeypatch.setenv("CTXSTORE_FILES", files)
    return str(root)


@pytest.fixture
def store(store_root: Path | str) -> Iterator[app.Store]:
    s = app.open_store(store_root)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ctx(store: app.Store) -> app.Context:
    return store.context("default")


@pytest.fixture
def people(ctx: app.Context) -> list[dict[str, Any]]:
    """60 varied person records appended to collection ``people`` in two batches."""
    data = people_data()
    ctx.append("people", data[:30])
    ctx.append("people", data[30:])
    return data
