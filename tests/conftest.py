"""Shared fixtures. Tests never write into ./storage: every store lives in a tmp directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_matrix import BACKENDS, matrix_store_args  # noqa: F401
from backend_servers import pg_server_url, pg_url, s3_endpoint, s3_url  # noqa: F401
from records_support import people_data

import app

os.environ.pop("CTXSTORE_ROOT", None)
# Never the real home: every test process (and every subprocess it starts) signs with this
# key, and a test that needs the per-user key file points XDG_CONFIG_HOME at a tmp folder.
os.environ["CTXSTORE_TRUST_KEY"] = "test-trust-key-" + "0123456789abcdef" * 2
os.environ["XDG_CONFIG_HOME"] = "/nonexistent/ctxstore-test-config"  # loud if ever used


# -- the backend matrix (tests/backend_matrix.py) -----------------------------------------
# These modules' store-level tests (those using the store_root / store / ctx / people fixtures)
# run on every backend kind: embedded, pg-files (PostgreSQL + a directory), pg-s3 (PostgreSQL +
# moto S3). Every other module runs once, on the embedded backend. A test of a matrix module
# that reads or damages the embedded backend's files is marked
# ``@pytest.mark.embedded_only("why")``: its PostgreSQL params are not generated (the run's
# summary lists how many and why).
MATRIX_MODULES = frozenset(
    {
        "test_records_append",
        "test_records_backend",
        "test_records_big_batch",
        "test_records_compaction",
        "test_records_delete",
        "test_records_errors",
        "test_records_filters",
        "test_records_history",
        "test_records_idempotency",
        "test_records_maintenance",
        "test_records_query",
        "test_records_schemas",
        "test_filters",
        "test_embeddings",
        "test_models",
        "test_workflows",
        "test_transfer",
    }
)
_EMBEDDED_ONLY: dict[str, list[str]] = {}  # reason -> test ids (for the terminal summary)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_kind" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module not in MATRIX_MODULES:
        return  # the backend_kind fixture answers "embedded"
    kinds: tuple[str, ...] = BACKENDS
    marker = metafunc.definition.get_closest_marker("embedded_only")
    if marker is not None:
        reason = str(marker.args[0]) if marker.args else ""
        if not reason:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: embedded_only needs a reason")
        _EMBEDDED_ONLY.setdefault(reason, []).append(metafunc.definition.nodeid)
        kinds = ("embedded",)
    metafunc.parametrize("backend_kind", kinds, indirect=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _EMBEDDED_ONLY:
        return
    tests = sum(len(v) for v in _EMBEDDED_ONLY.values())
    terminalreporter.write_line(
        f"backend matrix: {tests} test(s) of the matrix modules run on the embedded backend only "
        f"(marked embedded_only), for {len(_EMBEDDED_ONLY)} reason(s)"
    )


@pytest.fixture
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The backend kind of this test's store (``embedded`` outside the matrix modules)."""
    return str(getattr(request, "param", "embedded"))


@pytest.fixture
def store_root(
    backend_kind: str,
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
