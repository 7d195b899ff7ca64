"""``ctxstore serve`` on a PostgreSQL store: tokens live in the database (minted on one host,
accepted by a server on another), records written over HTTP are read by a third host, and
the URL's password never appears in the banner or the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_matrix import kind_env
from service_support import child_env, start_server, stop_server

import app


@pytest.fixture
def backend_kind() -> str:
    return "pg-s3"


@pytest.fixture
def secret_root(matrix_store_args: tuple[str, str | None]) -> Iterator[tuple[str, str]]:
    """The store's URL with a password in it (the test server trusts loopback: the
    password is not checked, only carried), and its files URL."""
    root, files = matrix_store_args
    assert files is not None
    yield root.replace("postgresql://postgres@", "postgresql://postgres:pw-s3cret@"), files


def host(tmp_path: Path, name: str, root: str, files: str) -> dict[str, str]:
    """The environment of one "host": its own working folder, the shared URLs."""
    return child_env(**{**kind_env(root, files), "CTXSTORE_WORK": str(tmp_path / name / "work")})


def test_a_server_on_one_host_serves_what_another_host_reads(
    secret_root: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, files = secret_root
    monkeypatch.setenv("CTXSTORE_WORK", str(tmp_path / "admin" / "work"))
    with app.open_store(root, files=files) as store:
        token = store.tokens.create("svc", scope="write")
        store.context("c1")
    env = host(tmp_path, "server", root, files)
    server = start_server(root, env=env, log=tmp_path / "serve.log")  # type: ignore[arg-type]
    try:
        with server.client(token) as client:
            reply = client.post(
                "/contexts/c1/collections/items/records",
                json={"records": [{"id": "a", "v": 1}, {"id": "b", "v": 2}]},
            )
            assert reply.status_code == 201, reply.text
            assert client.get("/contexts").json()
        with server.client() as anonymous:
            assert anonymous.get("/contexts").status_code == 401
    finally:
        stop_server(server)
    output = server.output()
    assert "pw-s3cret" not in output and "postgres:***@" in output, output
    monkeypatch.setenv("CTXSTORE_WORK", str(tmp_path / "reader" / "work"))
    with app.open_store(root, files=files, create=False) as reader:
        assert reader.context("c1").get("items", "b") == {"id": "b", "v": 2}
        assert [t.name for t in reader.tokens.list()] == ["svc"]
        assert "pw-s3cret" not in reader.backend.url
