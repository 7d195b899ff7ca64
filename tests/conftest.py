"""Shared fixtures. Tests never write into ./storage: every store lives in a tmp directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_matrix import matrix_store_args  # noqa: F401
from backend_servers import pg_server_url, pg_url, s3_endpoint, s3_url  # noqa: F401
from records_support import people_data

import app

os.environ.pop("CTXSTORE_ROOT", None)
# Never the real home: every test process (and every subprocess it starts) signs with this
# key, and a test that needs the per-user key file points XDG_CONFIG_HOME at a tmp folder.
os.environ["CTXSTORE_TRUST_KEY"] = "test-trust-key-" + "0123456789abcdef" * 2
os.environ["XDG_CONFIG_HOME"] = "/nonexistent/ctxstore-test-config"  # loud if ever used


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_root: Path) -> Iterator[app.Store]:
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
