"""Shared fixtures. Tests never write into ./storage: every store lives in a tmp directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from records_support import people_data

import app

os.environ.pop("CTXSTORE_ROOT", None)


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
