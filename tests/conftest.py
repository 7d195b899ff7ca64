"""Shared fixtures. Tests never write into ./storage: every store lives in a tmp directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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
