"""Who may call what over HTTP: a REAL ``ctxstore serve`` process (tests/service_support.py)
and httpx; config variants (CORS, other hosts, non-loopback clients without auth) in-process.

The matrix test calls every route of the scope table (app/surfaces/http/scopes.py) with no
token, a malformed token, a read, a write and an admin token, and an admin token limited to
another context, and checks each answer; ``pytest -s`` prints the matrix, which is also
written to the test's tmp dir (``access_matrix.md``).
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from service_support import Server, child_env, local_client, mint_token, serve

import app
from app.core.access_types import AuditEntry, includes
from app.service import create_app
from app.surfaces.cli.store import parse_size
from app.surfaces.http.app import app_routes
from app.surfaces.http.scopes import PUBLIC_ROUTES, ROUTE_SCOPES, is_public, need_of

TOKENS = ("none", "bad", "read", "write", "admin", "other")
"""Columns of the matrix: ``other`` is an admin token limited to context ``d``."""
BAD_TOKEN = "ctx_00000000deadbeef_" + "A" * 30
PASS = "ok"
"""The gate let it through: the handler answered (any status but 400/401/403, below 500)."""


@dataclass
class World:
    root: Path
    server: Server
    tokens: dict[str, str | None]
    workflow_id: str
    workflow_in_d: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("access") / "store"
    store = app.open_store(root)
    try:
        c = store.context("c")
        c.append("notes", [{"id": "r1", "v": 1}, {"id": "r2", "v": 2}])
        c.embeddings.save("vec", ["a", "b"], np.eye(2, dtype=np.float32))
        store.context("d").append("notes", [{"id": "d1"}])
        store.context("scratch")
        params = {"collection": "wfnotes"}
        wid = store.workflows.submit("append", context="c", items=[{"id": "w"}], params=params)
        wid_d = store.workflows.submit("append", context="d", items=[{"id": "w"}], params=params)
        tokens: dict[str, str | None] = {"none": None, "bad": BAD_TOKEN}
        for scope in ("read", "write", "admin"):
            tokens[scope] = store.tokens.create(f"{scope}-token", scope=scope)
        tokens["other"] = store.tokens.create("d-admin", scope="admin", contexts=["d"])
    finally:
        store.close()
    with serve(root) as server:
        yield World(root, server, tokens, wid.workflow_id, wid_d.workflow_id)


def call(world: World, token: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
    with world.server.client(token) as http:
        return http.request(method, path, **kw)


# -- the matrix --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One route of the table, a request to it, and what the ``other`` token gets."""

    method: str
    template: str
    path: str
    other: int | str
    kwargs: dict[str, Any] = field(default_factory=dict)


def rows(world: World) -> list[Row]:
    coll = "/contexts/c/collections/notes"
    wid = world.workflow_id
    submit = {
        "workflow_type": "append",
        "context": "c",
        "items": [{"id": "x"}],
        "params": {"collection": "wfn"},
    }
    _C = "/contexts/{context}"
    _COLL = _C + "/collections/{collection}"
    return [
        Row("GET", "/contexts", "/contexts", PASS),
        Row("POST", "/contexts", "/contexts", 404, {"json": {"name": "c"}}),
        Row("GET", _C, "/contexts/c", 404),
        Row("DELETE", _C, "/contexts/scratch", 404),
        Row("POST", _COLL + "/records", f"{coll}/records", 404, {"json": {"records": [{}]}}),
        Row("GET", _COLL + "/records", f"{coll}/records", 404),
        Row("POST", _COLL + "/query", f"{coll}/query", 404, {"json": {}}),
        Row("GET", _COLL + "/records/{record_id}", f"{coll}/records/r1", 404),
        Row("GET", _COLL + "/count", f"{coll}/count", 404),
        Row("POST", _COLL + "/count", f"{coll}/count", 404, {"json": {}}),
        Row("DELETE", _COLL + "/records", f"{coll}/records", 404, {"json": {"where": {"v": 9}}}),
        Row("POST", _COLL + "/compact", f"{coll}/compact", 404),
        Row("GET", _C + "/embeddings", "/contexts/c/embeddings", 404),
        Row(
            "POST",
            _C + "/embeddings/{name}/search",
            "/contexts/c/embeddings/vec/search",
            404,
            {"json": {"query": [1, 0], "k": 1}},
        ),
        Row("GET", _C + "/export", "/contexts/c/export", 404),
        Row("POST", "/import", "/import", 403, {"files": {"archive": ("a.tar.gz", b"junk")}}),
        Row("POST", "/workflows", "/workflows", 404, {"json": submit}),
        Row("GET", "/workflows", "/workflows", PASS),
        Row("GET", "/workflows/{workflow_id}", f"/workflows/{wid}", 404),
        Row("POST", "/workflows/{workflow_id}/cancel", f"/workflows/{wid}/cancel", 404),
        Row("POST", "/workflows/{workflow_id}/rollback", f"/workflows/{wid}/rollback", 404),
        Row("POST", "/tokens", "/tokens", 403, {"json": {"name": "via-http", "scope": "read"}}),
        Row("GET", "/tokens", "/tokens", 403),
        Row("DELETE", "/tokens/{name}", "/tokens/nobody", 403),
        Row("GET", "/audit", "/audit", 403),
    ]


def expected(row: Row, column: str) -> int | str:
    if column in ("none", "bad"):
        return 401
    if column == "other":
        return row.other
    held = {"read": "read", "write": "write", "admin": "admin"}[column]
    return PASS if includes(held, need_of(row.method, row.template).scope) else 403


def matches(want: int | str, got: httpx.Response) -> bool:
    if want == PASS:
        return got.status_code not in (400, 401, 403) and got.status_code < 500
    return got.status_code == want


def test_every_route_x_token_gets_the_expected_status(world: World, tmp_path: Path) -> None:
    table = rows(world)
    assert {(r.method, r.template) for r in table} == set(ROUTE_SCOPES), "matrix != table"
    lines = [
        "| route | needs | " + " | ".join(TOKENS) + " |",
        "|---|---|" + "---|" * len(TOKENS),
    ]
    wrong: list[str] = []
    for row in table:
        need = need_of(row.method, row.template)
        cells = []
        for column in TOKENS:
            got = call(world, world.tokens[column], row.method, row.path, **row.kwargs)
            want = expected(row, column)
            ok = matches(want, got)
            cells.append(f"{got.status_code}" + ("" if ok else f" (want {want})"))
            if not ok:
                wrong.append(f"{row.method} {row.path} [{column}]: {got.status_code} {got.text}")
            if got.status_code == 401:
                assert got.headers["www-authenticate"].startswith("Bearer")
        needs = need.scope + (" (all contexts)" if need.store_wide else "")
        lines.append(f"| {row.method} {row.template} | {needs} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    (tmp_path / "access_matrix.md").write_text(text + "\n")
    print("\n" + text)
    assert not wrong, "\n".join(wrong)


def test_every_route_has_a_scope_entry(store: app.Store) -> None:
    """A route missing from app/surfaces/http/scopes.py would need admin: add it to the table."""
    missing = []
    for route in app_routes(create_app(store)):
        for method in sorted(getattr(route, "methods", None) or ()):
            path = str(getattr(route, "path", ""))
            if method == "HEAD" or is_public(method, path):
                continue
            if (method, path) not in ROUTE_SCOPES:
                missing.append(f"{method} {path}")
    assert not missing, f"routes without a scope entry (they need admin): {missing}"
    stale = sorted(
        set(ROUTE_SCOPES)
        - {
            (m, str(getattr(r, "path", "")))
            for r in app_routes(create_app(store))
            for m in getattr(r, "methods", None) or ()
        }
    )
    assert not stale, f"scope entries without a route: {stale}"


def test_the_table_follows_the_documented_scopes() -> None:
    """read: get, query, count, search, list, export; write: + append, delete, compact,
    workflows; admin: + import, drop, tokens, audit."""
    by_scope: dict[str, set[tuple[str, str]]] = {"read": set(), "write": set(), "admin": set()}
    for key, need in ROUTE_SCOPES.items():
        by_scope[need.scope].add(key)
    assert all(
        m == "GET" or t.endswith(("/query", "/count", "/search")) for m, t in by_scope["read"]
    )
    assert ("GET", "/contexts/{context}/export") in by_scope["read"]
    assert ("POST", "/contexts/{context}/collections/{collection}/records") in by_scope["write"]
    assert ("POST", "/workflows/{workflow_id}/rollback") in by_scope["write"]
    for admin in (("POST", "/import"), ("DELETE", "/contexts/{context}"), ("GET", "/audit")):
        assert admin in by_scope["admin"]
    assert all(
        t.startswith(("/tokens", "/audit", "/import"))
        for _, t in by_scope["admin"]
        if ROUTE_SCOPES[(_, t)].store_wide
    )
    assert need_of("PATCH", "/not-in-the-table").scope == "admin"
    assert ("GET", "/health") in PUBLIC_ROUTES and is_public("GET", "/ui/app.js")
    assert not is_public("POST", "/health") and not is_public("GET", "/uix")


# -- context-limited tokens --------------------------------------------------------------


def test_a_limited_token_sees_only_its_contexts(world: World) -> None:
    other = world.tokens["other"]
    assert call(world, other, "GET", "/contexts").json() == {"contexts": ["d"]}
    listed = call(world, other, "GET", "/workflows").json()
    assert [w["workflow_id"] for w in listed] == [world.workflow_in_d]
    assert call(world, other, "GET", "/workflows", params={"context": "c"}).json() == []
    assert call(world, other, "GET", f"/workflows/{world.workflow_in_d}").status_code == 200
    assert call(world, other, "GET", "/contexts/d/collections/notes/count").json() == {"count": 1}
    gone = call(world, other, "GET", "/contexts/c")
    assert gone.status_code == 404 and gone.json()["type"] == "not_found"
    everything = call(world, world.tokens["read"], "GET", "/contexts").json()["contexts"]
    assert {"c", "d"} <= set(everything)


def test_a_token_for_two_contexts_lists_their_workflows_in_pages(world: World) -> None:
    store = app.open_store(world.root, create=False)
    try:
        store.context("e")
        hidden = store.workflows.submit(
            "append", context="e", items=[{"id": "h"}], params={"collection": "x"}
        )
    finally:
        store.close()
    token = mint_token(world.root, "cd-reader", "read", ["c", "d"])
    everything = call(world, world.tokens["read"], "GET", "/workflows").json()
    want = [w["workflow_id"] for w in everything if w["context"] in ("c", "d")]
    assert hidden.workflow_id in {w["workflow_id"] for w in everything}
    listed = call(world, token, "GET", "/workflows").json()
    assert [w["workflow_id"] for w in listed] == want
    page = call(world, token, "GET", "/workflows", params={"offset": 1, "limit": 2}).json()
    assert [w["workflow_id"] for w in page] == want[1:3]
    assert call(world, token, "GET", f"/workflows/{hidden.workflow_id}").status_code == 404
    assert call(world, token, "GET", "/contexts").json() == {"contexts": ["c", "d"]}


# -- host, origin, and checks before the body -----------------------------------------------


def test_host_header_must_be_allowed(world: World) -> None:
    port = world.server.port
    for good in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert call(world, None, "GET", "/health", headers={"Host": good}).status_code == 200
    for bad in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
        answer = call(world, world.tokens["admin"], "GET", "/contexts", headers={"Host": bad})
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["type"] == "bad_host"


def test_a_repeated_host_origin_or_authorization_is_refused(world: World) -> None:
    host = f"127.0.0.1:{world.server.port}"
    token = world.tokens["read"]
    for name, value in (("Host", host), ("Origin", world.server.base), ("Authorization", token)):
        head = (
            f"GET /contexts HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Origin: {world.server.base}\r\n{name}: {value}\r\n\r\n"
        )
        assert _raw_request(world, head).startswith(b"HTTP/1.1 400 "), name


def test_origin_must_be_the_server_itself(world: World) -> None:
    admin = world.tokens["admin"]
    own = world.server.base
    assert call(world, admin, "GET", "/contexts", headers={"Origin": own}).status_code == 200
    for foreign in ("http://evil.example", "null", f"https://127.0.0.1:{world.server.port}"):
        answer = call(world, admin, "GET", "/contexts", headers={"Origin": foreign})
        assert answer.status_code == 403, foreign
        assert "origin" in answer.json()["detail"]


def test_cross_site_upload_and_bodyless_posts_fail_without_a_token(world: World) -> None:
    """What a web page could make the user's browser send: a multipart form to /import, and
    POSTs without a body; none gets past the gate."""
    form = {"files": {"archive": ("a.tar.gz", io.BytesIO(b"\x1f\x8b" + b"0" * 5000))}}
    cross = {"Origin": "http://evil.example"}
    assert call(world, None, "POST", "/import", headers=cross, **form).status_code == 403
    assert call(world, None, "POST", "/import", **form).status_code == 401
    wid = world.workflow_id
    for path in (
        "/contexts/c/collections/notes/compact",
        f"/workflows/{wid}/cancel",
        f"/workflows/{wid}/rollback",
    ):
        assert call(world, None, "POST", path).status_code == 401, path
        assert call(world, None, "POST", path, headers=cross).status_code == 403, path


def _raw_request(world: World, head: str) -> bytes:
    """Send only a request's head (a body is announced, never sent) and read the answer."""
    with socket.create_connection(("127.0.0.1", world.server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_refusals_come_before_the_body(world: World) -> None:
    """A 1 GB body is announced but never sent: the gate answers from the headers alone
    (a server that read the body first would wait until the socket timeout)."""
    port = world.server.port
    template = (
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: application/json\r\n"
        "Content-Length: 1000000000\r\n\r\n"
    )
    cases = [
        ("/contexts/c/collections/notes/records", f"127.0.0.1:{port}", "", b"401"),
        ("/import", "evil.example", "", b"400"),
        ("/import", f"127.0.0.1:{port}", "Origin: http://evil.example\r\n", b"403"),
        (
            "/import",
            f"127.0.0.1:{port}",
            f"Authorization: Bearer {world.tokens['write']}\r\n",
            b"403",
        ),
        (
            "/contexts/c/collections/notes/records",
            f"127.0.0.1:{port}",
            f"Authorization: Bearer {world.tokens['other']}\r\n",
            b"404",
        ),
    ]
    for path, host, extra, status in cases:
        answer = _raw_request(world, template.format(path=path, host=host, extra=extra))
        assert answer.startswith(b"HTTP/1.1 " + status + b" "), (path, answer[:200])
        assert b"x-request-id:" in answer.lower()


# -- tokens over HTTP, the audit log --------------------------------------------------------


def test_tokens_over_http(world: World) -> None:
    admin = world.tokens["admin"]
    made = call(world, admin, "POST", "/tokens", json={"name": "t-http", "scope": "write"})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert made.json()["info"]["scope"] == "write"
    listing = call(world, admin, "GET", "/tokens")
    assert "t-http" in listing.text and token not in listing.text and "ctx_" not in listing.text
    assert call(world, token, "GET", "/contexts").status_code == 200
    assert call(world, token, "GET", "/tokens").status_code == 403
    dup = call(world, admin, "POST", "/tokens", json={"name": "t-http", "scope": "read"})
    assert dup.status_code == 409
    bad = call(world, admin, "POST", "/tokens", json={"name": "t2", "scope": "root"})
    assert bad.status_code == 422
    assert call(world, admin, "DELETE", "/tokens/t-http").status_code == 204
    assert call(world, token, "GET", "/contexts").status_code == 401
    assert call(world, admin, "DELETE", "/tokens/t-http").status_code == 404


def test_a_token_from_the_cli_works_at_once(world: World) -> None:
    """``ctxstore tokens create`` on the store of a running server: usable without restart;
    ``tokens revoke``: refused at once."""
    cli = [sys.executable, "-m", "ctxstore", "--root", str(world.root), "tokens"]
    made = subprocess.run(
        [*cli, "create", "cli-writer", "--scope", "write", "--context", "c"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    coll = "/contexts/c/collections/cli/records"
    assert call(world, token, "POST", coll, json={"records": [{"id": "1"}]}).status_code == 201
    assert call(world, token, "GET", "/contexts/d").status_code == 404
    gone = subprocess.run([*cli, "revoke", "cli-writer"], env=child_env(), timeout=120)
    assert gone.returncode == 0
    assert call(world, token, "GET", coll).status_code == 401


def _audited(root: Path, responses: list[httpx.Response]) -> list[AuditEntry]:
    """The whole audit log once it holds an entry for each response (by ``X-Request-ID``);
    entries are written after their responses were sent."""
    wanted = {r.headers["x-request-id"] for r in responses}
    deadline = time.monotonic() + 60
    while True:
        store = app.open_store(root, create=False)
        try:
            entries = store.audit.page(offset=0, limit=10_000).entries
        finally:
            store.close()
        if wanted <= {e.request_id for e in entries} or time.monotonic() > deadline:
            return entries


def test_mutating_requests_and_exports_are_audited(world: World) -> None:
    log = "/contexts/d/collections/log"
    read = call(world, world.tokens["read"], "GET", f"{log}/count")
    one = {"json": {"records": [{"id": "1"}]}}
    requests: list[tuple[str, str, str, dict[str, Any]]] = [
        ("write", "POST", f"{log}/records", one),
        ("write", "POST", f"{log}/compact", {}),
        ("read", "POST", f"{log}/records", one),
        ("read", "GET", "/contexts/d/export", {}),
        ("none", "DELETE", "/contexts/d", {}),
        ("write", "POST", "/contexts", {"json": {"name": "made-by-writer"}}),
    ]
    sent = [
        ({"none": ""}.get(who, f"{who}-token"), call(world, world.tokens[who], m, p, **kw))
        for who, m, p, kw in requests
    ]
    assert [r.status_code for _, r in sent] == [201, 200, 403, 200, 401, 201]
    entries = _audited(world.root, [r for _, r in sent])
    by_id = {e.request_id: e for e in entries}
    assert len(by_id) == len(entries), "one entry per request"
    assert read.headers["x-request-id"] not in by_id  # a read is not audited
    for name, response in sent:
        entry = by_id[response.headers["x-request-id"]]
        assert entry.token == name
        assert entry.outcome == response.status_code
    actions = [by_id[r.headers["x-request-id"]].action for _, r in sent]
    assert actions == ["append", "compact", "append", "export", "drop_context", "create_context"]
    targets = [by_id[r.headers["x-request-id"]].target for _, r in sent]
    assert targets == ["d/log", "d/log", "d/log", "d", "d", "made-by-writer"]
    page = call(world, world.tokens["admin"], "GET", "/audit", params={"offset": 1, "limit": 2})
    assert page.status_code == 200 and [e["seq"] for e in page.json()["entries"]] == [2, 3]


# -- the serve command and settings ---------------------------------------------------------


def test_serve_banner_and_openapi_security(world: World) -> None:
    out = world.server.output()
    assert "auth: on" in out and "tokens create" in out
    doc = call(world, None, "GET", "/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert doc["paths"]["/health"]["get"]["security"] == []
    append = doc["paths"]["/contexts/{context}/collections/{collection}/records"]["post"]
    assert append["security"] == [{"bearer": []}] and "`write`" in append["description"]
    assert "401" in append["responses"]
    assert call(world, None, "GET", "/docs").status_code == 200


def test_serve_without_auth_is_loopback_only(tmp_path: Path) -> None:
    root = tmp_path / "s"
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctxstore",
            "--root",
            str(root),
            "serve",
            "--no-auth",
            "--host",
            "0.0.0.0",
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2, refused.stderr
    assert "--no-auth" in refused.stderr and "0.0.0.0" in refused.stderr
    assert not root.exists()
    with serve(root, "--no-auth") as server, server.client() as http:
        assert http.post("/contexts", json={"name": "free"}).status_code == 201
        assert http.get("/contexts").json() == {"contexts": ["free"]}
        assert "auth: OFF" in server.output()
    store = app.open_store(root)
    try:
        application = create_app(store, auth=False)
        with local_client(application, client=("192.168.1.7", 40000)) as far:
            assert far.get("/contexts").status_code == 403
        with local_client(application) as near:
            assert near.get("/contexts").status_code == 200
    finally:
        store.close()


def test_allowed_hosts_and_origins_with_cors(store: app.Store) -> None:
    admin = store.tokens.create("adm", scope="admin")
    application = create_app(
        store, allowed_hosts=["my.box"], allowed_origins=["https://app.example"]
    )
    with local_client(application, admin, base_url="http://my.box:8000") as c:
        assert c.get("/contexts").status_code == 200
        assert c.get("/contexts", headers={"Host": "other.box"}).status_code == 400
        ok = c.get("/contexts", headers={"Origin": "https://app.example"})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        assert c.get("/contexts", headers={"Origin": "https://evil.example"}).status_code == 403
        preflight = c.options(
            "/contexts",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    with local_client(create_app(store, allowed_hosts=["*"]), admin, base_url="http://x.y") as c:
        assert c.get("/contexts").status_code == 200


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("123", 123),
        ("64KiB", 64 << 10),
        ("64k", 64 << 10),
        ("64MiB", 64 << 20),
        ("4GiB", 4 << 30),
        ("1GB", 10**9),
        ("2 kb", 2000),
    ],
)
def test_sizes_take_units(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_bad_size_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(app.InvalidInput):
        parse_size("12 parsecs")
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctxstore",
            "--root",
            str(tmp_path / "s"),
            "serve",
            "--max-body",
            "lots",
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "size" in bad.stderr


def test_concurrent_callers_keep_one_audit_chain(world: World) -> None:
    """16 threads append at once with two tokens: every request is answered, every one is
    recorded once, and the chain verifies."""
    import concurrent.futures

    names = {"write": "write-token", "admin": "admin-token"}

    def one(i: int) -> tuple[str, httpx.Response]:
        who = "write" if i % 2 else "admin"
        body = {"records": [{"id": f"p{i}"}]}
        path = "/contexts/c/collections/parallel/records"
        return names[who], call(world, world.tokens[who], "POST", path, json=body)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(48)))
    assert all(r.status_code == 201 for _, r in answers), [r.text for _, r in answers][:3]
    entries = _audited(world.root, [r for _, r in answers])
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    by_id = {e.request_id: e for e in entries}
    assert len(by_id) == len(entries), "one entry per request"
    assert all(by_id[r.headers["x-request-id"]].token == name for name, r in answers)
    store = app.open_store(world.root, create=False)
    try:
        assert store.audit.verify() == []
    finally:
        store.close()


OPENSSL_SELF_SIGNED = ("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1")
OPENSSL_SELF_SIGNED += ("-subj", "/CN=localhost")


def test_serve_with_tls(tmp_path: Path) -> None:
    """``--ssl-certfile/--ssl-keyfile`` go to uvicorn; the server's own origin is https."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [*OPENSSL_SELF_SIGNED, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    root = tmp_path / "s"
    token = mint_token(root, "tls-admin")
    tls = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    with serve(root, *tls, scheme="https") as server, server.client(token) as http:
        assert http.get("/contexts").status_code == 200
        own = {"Origin": server.base}
        assert http.post("/contexts", json={"name": "t"}, headers=own).status_code == 201
        plain = {"Origin": server.base.replace("https", "http")}
        assert http.get("/contexts", headers=plain).status_code == 403
        assert "https://" in server.output()
