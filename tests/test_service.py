"""The HTTP service: status codes and bodies with TestClient, and one real uvicorn server.

Every client here is a store-wide admin token minted on the store, calling from loopback
(``service_support.local_client``); who may call what is tests/test_service_access.py."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from recdata import analogy
from service_support import auth_headers, free_port, local_client

import app
from app.service import create_app


@pytest.fixture
def admin(store: app.Store) -> str:
    """A store-wide admin token."""
    token: str = store.tokens.create("test-admin", scope="admin")
    return token


@pytest.fixture
def client(store: app.Store, admin: str) -> Iterator[TestClient]:
    with local_client(create_app(store), admin, raise_server_exceptions=True) as c:
        yield c


def test_import_app_does_not_import_fastapi() -> None:
    import subprocess
    import sys

    code = "import app, sys; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60)
    assert out.stdout.strip() == b"False"


def test_health_and_contexts(client: TestClient) -> None:
    h = client.get("/health")
    assert h.status_code == 200
    assert h.json() == {
        "status": "ok",
        "version": app.__version__,
        "format_version": 1,
        "contexts": 0,
    }
    assert client.post("/contexts", json={"name": "c1"}).status_code == 201
    assert client.post("/contexts", json={"name": "c1"}).status_code == 409
    bad = client.post("/contexts", json={"name": "../x"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["name"]
    assert client.post("/contexts", json={}).status_code == 422
    assert client.get("/contexts").json() == {"contexts": ["c1"]}
    assert client.get("/contexts/c1").json() == {"name": "c1", "collections": {}}
    assert client.get("/contexts/nope").status_code == 404
    assert client.delete("/contexts/c1").status_code == 204
    assert client.delete("/contexts/c1").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "ctxstore"


def test_append_query_get_count(client: TestClient) -> None:
    client.post("/contexts", json={"name": "c"})
    url = "/contexts/c/collections/analogies"
    body = {"records": [analogy(i) for i in range(20)]}
    r = client.post(f"{url}/records", json=body, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 201 and r.json()["count"] == 20 and r.json()["batch_id"] == "k1"
    dup = client.post(f"{url}/records", json=body, headers={"Idempotency-Key": "k1"})
    assert dup.status_code == 200 and dup.json()["duplicate"] is True
    bad = client.post(f"{url}/records", json={"records": [{"id": "x", "quality_score": 2}]})
    assert bad.status_code == 422
    assert "records" in str(bad.json()["detail"][0]["loc"])
    assert client.post(f"{url}/records", json={"recs": []}).status_code == 422
    assert client.post("/contexts/nope/collections/a/records", json=body).status_code == 404
    where = orjson.dumps({"quality_score": {"$gte": 0.1}}).decode()
    params = {"where": where, "order_by": "-quality_score", "limit": 3}
    q = client.get(f"{url}/records", params=params)
    assert q.status_code == 200
    assert [rec["id"] for rec in q.json()["records"]] == ["a19", "a18", "a17"]
    p = client.post(f"{url}/query", json={"where": {"source_domain": "d1"}, "order_by": "id"})
    assert [rec["id"] for rec in p.json()["records"]] == ["a1", "a15", "a8"]
    assert client.get(f"{url}/records", params={"where": "{bad"}).json()["detail"][0]["loc"] == [
        "where"
    ]
    assert client.post(f"{url}/query", json={"where": {"a": {"$bogus": 1}}}).status_code == 422
    assert client.get(f"{url}/records", params={"limit": -1}).status_code == 422
    assert client.get(f"{url}/records/a3").json()["id"] == "a3"
    assert client.get(f"{url}/records/zzz").status_code == 404
    assert client.get(f"{url}/count", params={"where": where}).json() == {"count": 10}
    assert client.post(f"{url}/count", json={"where": {"id": "a1"}}).json() == {"count": 1}
    comp = client.post(f"{url}/compact")
    assert comp.status_code == 200 and comp.json()["records_after"] == 20
    assert client.post("/contexts/c/collections/none/compact").status_code == 404


def test_delete_by_criteria_is_a_workflow(client: TestClient) -> None:
    client.post("/contexts", json={"name": "c"})
    url = "/contexts/c/collections/analogies"
    client.post(f"{url}/records", json={"records": [analogy(i) for i in range(10)]})
    r = client.request("DELETE", f"{url}/records", json={"where": {"source_domain": "d0"}})
    assert r.status_code == 202
    wid = r.json()["workflow_id"]
    assert r.json()["workflow_type"] == "delete"
    done = client.get(f"/workflows/{wid}").json()  # processed by the background task
    assert done["status"] == "completed"
    assert client.get(f"{url}/count").json() == {"count": 8}
    assert client.request("DELETE", f"{url}/records", json={"where": {}}).status_code == 422
    listed = client.get("/workflows", params={"context": "c"}).json()
    assert [w["workflow_id"] for w in listed] == [wid]
    back = client.post(f"/workflows/{wid}/rollback")
    assert back.status_code == 200 and back.json()["status"] == "rolled_back"
    assert client.get(f"{url}/count").json() == {"count": 10}
    assert client.post(f"/workflows/{wid}/rollback").status_code == 409
    assert client.post(f"/workflows/{wid}/cancel").status_code == 409
    assert client.get("/workflows/wf-none").status_code == 404
    assert client.get("/workflows", params={"status": "bogus"}).status_code == 422


def test_submit_workflow_and_cancel(store: app.Store, admin: str) -> None:
    with local_client(create_app(store, process_workflows=False), admin) as client:
        client.post("/contexts", json={"name": "c"})
        body = {
            "workflow_type": "append",
            "context": "c",
            "items": [{"id": f"n{i}"} for i in range(5)],
            "params": {"collection": "notes"},
        }
        r = client.post("/workflows", json=body)
        assert r.status_code == 202 and r.json()["status"] == "pending"
        wid = r.json()["workflow_id"]
        c = client.post(f"/workflows/{wid}/cancel")
        assert c.status_code == 200 and c.json()["status"] == "cancelled"
        assert client.post("/workflows", json={**body, "workflow_type": "nope"}).status_code == 422
        assert client.post("/workflows", json={**body, "context": "zz"}).status_code == 404
        assert client.post("/workflows", json={**body, "chunk_size": 0}).status_code == 422


def test_embedding_search(client: TestClient, store: app.Store) -> None:
    ctx = store.context("c")
    ctx.embeddings.save("vec", ["a", "b", "c"], np.eye(3, dtype=np.float32))
    url = "/contexts/c/embeddings/vec/search"
    r = client.post(url, json={"query": [0, 1, 0], "k": 2})
    assert r.status_code == 200
    assert r.json()["hits"][0] == {"id": "b", "score": pytest.approx(1.0)}
    rows = client.post(url, json={"query": [[1, 0, 0], [0, 0, 1]], "k": 1}).json()["hits"]
    assert [row[0]["id"] for row in rows] == ["a", "c"]
    assert client.post(url, json={"query": [1, 0]}).status_code == 422  # wrong dimension
    assert client.post(url, json={"query": []}).status_code == 422
    assert client.post(url, json={"query": [1, 0, 0], "metric": "cos"}).status_code == 422
    missing = client.post("/contexts/c/embeddings/none/search", json={"query": [1, 0, 0]})
    assert missing.status_code == 404
    assert client.get("/contexts/c/embeddings").json()[0]["name"] == "vec"


def test_export_download_and_import_upload(client: TestClient, store: app.Store) -> None:
    store.context("src").append("analogies", [analogy(i) for i in range(30)])
    r = client.get("/contexts/src/export")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/gzip"
    data = r.content
    up = client.post(
        "/import", params={"name": "copy"}, files={"archive": ("a.tar.gz", io.BytesIO(data))}
    )
    assert up.status_code == 201, up.text
    assert up.json()["collections"] == {"analogies": 30}
    assert store.context("copy").count("analogies") == 30
    again = client.post(
        "/import", params={"name": "copy"}, files={"archive": ("a.tar.gz", io.BytesIO(data))}
    )
    assert again.status_code == 409
    merged = client.post(
        "/import",
        params={"name": "copy", "on_conflict": "merge"},
        files={"archive": ("a.tar.gz", io.BytesIO(data))},
    )
    assert merged.status_code == 201
    junk = client.post("/import", files={"archive": ("a.tar.gz", io.BytesIO(b"junk"))})
    assert junk.status_code == 422 and junk.json()["detail"][0]["loc"] == ["archive"]
    assert client.post("/import", params={"on_conflict": "x"}).status_code == 422
    assert client.get("/contexts/nope/export").status_code == 404


def test_real_uvicorn_server(store: app.Store, admin: str) -> None:
    import uvicorn

    port = free_port()
    config = uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10, headers=auth_headers(admin)) as http:
            assert http.get("/health").json()["status"] == "ok"
            assert http.post("/contexts", json={"name": "live"}).status_code == 201
            url = "/contexts/live/collections/notes/records"
            assert http.post(url, json={"records": [{"id": "1"}]}).status_code == 201
            assert http.get(url).json()["count"] == 1
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()


ERROR_CASES = [
    (app.InvalidInput("name: bad", argument="name"), 422, "invalid_input"),
    (app.NotFoundError("gone"), 404, "not_found"),
    (app.ConflictError("taken"), 409, "conflict"),
    (app.UntrustedArtifactError("pickle"), 403, "untrusted_artifact"),
    (app.IntegrityError("damaged"), 500, "integrity_error"),
    (app.SchemaVersionError("newer"), 500, "storage_error"),
    (app.StorageError("io"), 500, "storage_error"),
    (app.StorageError("full", errno=28), 507, "storage_error"),
]


@pytest.mark.parametrize(("exc", "status", "kind"), ERROR_CASES)
def test_the_error_table_gives_the_status(
    store: app.Store, admin: str, exc: app.StorageError, status: int, kind: str
) -> None:
    """One table (app/surfaces/errors.py) answers every error, over HTTP and in the CLI."""
    from app.surfaces.errors import kind_of

    application = create_app(store)

    def boom() -> None:
        raise exc

    application.add_api_route("/boom", boom)
    with local_client(application, admin) as c:
        answer = c.get("/boom")
    assert answer.status_code == status
    assert kind_of(exc).kind == kind
    body = answer.json()
    if status == 422:
        assert body == {"detail": [{"loc": ["name"], "msg": "name: bad", "type": kind}]}
    else:
        assert body == {"detail": str(exc), "type": kind}


def test_bad_input_names_the_argument_or_the_field(client: TestClient) -> None:
    """``detail[0].loc``: ``InvalidInput.argument``; a record's field when the error names one."""
    client.post("/contexts", json={"name": "c"})
    url = "/contexts/c/collections/analogies/records"
    reserved = client.post(
        url, json={"records": [{"id": "x"}]}, headers={"Idempotency-Key": "wf:1"}
    )
    assert reserved.status_code == 422
    assert reserved.json()["detail"][0]["loc"] == ["Idempotency-Key"]
    field = client.post(url, json={"records": [{"id": "x", "quality_score": 2}]})
    assert field.json()["detail"][0]["loc"][0].startswith("records[0]")
    bad_name = client.get("/contexts/c/collections/-a/records/r1")
    assert bad_name.status_code == 422 and bad_name.json()["detail"][0]["loc"] == ["collection"]
    too_long = client.get(f"/contexts/c/collections/a/records/{'x' * 257}")
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"] == ["record_id"]
    assert client.get("/contexts/..x/embeddings").json()["detail"][0]["loc"] == ["context"]
