"""The backend matrix: run a test module's store-level tests on every backend.

Kinds (``BACKENDS``): ``embedded`` (a directory), ``pg-files`` (PostgreSQL + a local directory
as the files URL), ``pg-s3`` (PostgreSQL + a bucket on the moto S3 server). Each PostgreSQL
store gets a FRESH schema in the module's database (``pg_url``: creating a schema costs
milliseconds, a database ~0.25 s), named through the URL's ``search_path`` option, and its own
working folder (``$CTXSTORE_WORK``) under the test's tmp folder; each S3 store a fresh bucket.

Which tests run on which kinds: the modules in ``MATRIX_MODULES`` run every test that uses
the ``store_root`` / ``store`` / ``ctx`` / ``people`` fixtures (tests/conftest.py) on all three
kinds (``pytest_generate_tests`` parametrises ``backend_kind``; test ids end in ``[embedded]``,
``[pg-files]``, ``[pg-s3]``); every other test runs once, embedded. A matrix test that reads or
damages the embedded backend's files is marked ``@pytest.mark.embedded_only("why")``: its
PostgreSQL params are not generated, and the run's summary counts those tests. A known gap of
the PostgreSQL backend is listed in ``KNOWN_PG_GAPS`` (strict xfail of the PostgreSQL params,
shown in every summary; an XPASS fails until the entry is removed), a known race in
``KNOWN_PG_RACES`` (non-strict xfail).

Use elsewhere: the ``matrix_store_args`` fixture gives ``(root, files)`` for ``open_store`` of
a fresh store of kind ``backend_kind``; ``kind_env`` the environment of a subprocess opening
it. Servers missing: in CI the test fails, elsewhere it is skipped saying how to enable it
(``tests/backend_servers.py``); ``make test`` ends by naming the matrices that did not run.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ("embedded", "pg-files", "pg-s3")

# Module -> the kinds its store-level tests run on. Records and filters never touch the files
# URL, so a second PostgreSQL kind would run the same code again: they run on ("embedded",
# "pg-files"). The parts, workflows (staged items) and whole contexts use files: all three.
# (Measured on 2 cores: the matrix modules take 3.5 min embedded only, 10.4 min all on three.)
_RECORD_MODULES = (
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
)
_FILE_MODULES = (
    "test_embeddings",
    "test_embeddings_search_filtered",
    "test_ann_index",
    "test_models",
    "test_workflows",
    "test_workflow_retries",
    "test_transfer",
)
MATRIX_MODULES: dict[str, tuple[str, ...]] = {
    **{name: BACKENDS[:2] for name in _RECORD_MODULES},
    **{name: BACKENDS for name in _FILE_MODULES},
}
_EMBEDDED_ONLY: dict[str, list[str]] = {}  # reason -> test ids (for the terminal summary)

# Known gaps of the PostgreSQL backend, each named with who closes it: the PostgreSQL params
# of these tests are expected to fail (strict: once a gap closes the test XPASSes, which fails
# the run until its line here is removed). Listed in every run's summary (-ra).
KNOWN_PG_GAPS: dict[str, str] = {}
# Races found by the matrix, not yet fixed: they fail only sometimes, so not strict.
KNOWN_PG_RACES: dict[str, str] = {}


def _known(name: str, kind: str) -> list[pytest.MarkDecorator]:
    """The xfail mark of a known gap or race of the PostgreSQL backend, if any."""
    if kind == "embedded":
        return []
    if name in KNOWN_PG_GAPS:
        return [pytest.mark.xfail(strict=True, reason=f"known gap: {KNOWN_PG_GAPS[name]}")]
    if name in KNOWN_PG_RACES:
        return [pytest.mark.xfail(strict=False, reason=f"known race: {KNOWN_PG_RACES[name]}")]
    return []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_kind" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module not in MATRIX_MODULES:
        return  # the backend_kind fixture answers "embedded"
    kinds = MATRIX_MODULES[module]
    marker = metafunc.definition.get_closest_marker("embedded_only")
    if marker is not None:
        reason = str(marker.args[0]) if marker.args else ""
        if not reason:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: embedded_only needs a reason")
        _EMBEDDED_ONLY.setdefault(reason, []).append(metafunc.definition.nodeid)
        kinds = ("embedded",)
    params = [pytest.param(k, marks=_known(metafunc.definition.originalname, k)) for k in kinds]
    metafunc.parametrize("backend_kind", params, indirect=True)


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


def schema_url(database_url: str, schema: str) -> str:
    """``database_url`` whose connections use ``schema`` first (``search_path``)."""
    parts = urllib.parse.urlsplit(database_url)
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("options", f"-c search_path={schema}"))
    return urllib.parse.urlunsplit(
        parts._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote))
    )


def fresh_schema(database_url: str) -> Iterator[str]:
    """A new schema in ``database_url``'s database, dropped afterwards; yields its URL."""
    import psycopg
    from psycopg import sql

    name = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield schema_url(database_url, name)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def matrix_store_args(
    backend_kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, str | None]]:
    """``(root, files)`` of a fresh, empty store of kind ``backend_kind``."""
    if backend_kind == "embedded":
        yield str(tmp_path / "store"), None
        return
    pg_url: str = request.getfixturevalue("pg_url")
    monkeypatch.setenv("CTXSTORE_WORK", str(tmp_path / "work"))
    if backend_kind == "pg-files":
        files = str(tmp_path / "files")
    elif backend_kind == "pg-s3":
        files = f"{request.getfixturevalue('s3_url')}/store"
    else:
        raise ValueError(f"unknown backend kind {backend_kind!r} (known: {BACKENDS})")
    yield from ((url, files) for url in fresh_schema(pg_url))


def kind_env(root: str, files: str | None) -> dict[str, str]:
    """Environment for a subprocess opening the same store (``$CTXSTORE_ROOT`` /
    ``$CTXSTORE_FILES``; the AWS variables and ``$CTXSTORE_WORK`` are inherited)."""
    env = dict(os.environ, CTXSTORE_ROOT=root)
    if files is not None:
        env["CTXSTORE_FILES"] = files
    return env
