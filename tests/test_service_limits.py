"""Body limits, streamed ndjson appends and streamed uploads against a REAL server process.

Two servers per module (``ctxstore serve`` subprocesses, tests/service_support.py): ``big``
(``--max-body 200MiB``) takes a 100 MB ndjson append generated on the fly while its resident
memory is sampled; ``small`` (``--max-body 1MiB --max-upload 2MiB``) refuses bodies over its
limits, declared (answered 413 before a byte of the body is sent) or chunked (413 while
streaming), and stays healthy with flat memory. A bad ndjson line is 422 naming the line, and
nothing is committed on any error.
"""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from service_support import (
    RssSampler,
    Server,
    hwm_kib,
    mint_token,
    rss_kib,
    serve,
    start_server,
    stop_server,
)

from app.core.errors import InvalidInput
from app.surfaces.http.streaming import lines, ndjson_records

MiB = 1 << 20
CTX = "lim"
NDJSON = {"Content-Type": "application/x-ndjson"}
BIG_BYTES = 100 * MiB
RSS_LIMIT_MB = 300
"""Peak resident memory of the server while it takes the 100 MB append (absolute, 10**6 B)."""


def _url(collection: str, what: str = "records") -> str:
    return f"/contexts/{CTX}/collections/{collection}/{what}"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    base = tmp_path_factory.mktemp("limits")
    started: dict[str, Server] = {}
    try:
        started["big"] = start_server(base / "big", "--no-auth", "--max-body", "200MiB")
        started["small"] = start_server(
            base / "small", "--no-auth", "--max-body", "1MiB", "--max-upload", "2MiB"
        )
        for server in started.values():
            with server.client() as c:
                assert c.post("/contexts", json={"name": CTX}).status_code == 201
        yield started
    finally:
        for server in started.values():
            stop_server(server)


@pytest.fixture(scope="module")
def big(servers: dict[str, Server]) -> Server:
    return servers["big"]


@pytest.fixture(scope="module")
def small(servers: dict[str, Server]) -> Server:
    return servers["small"]


def _line(i: int, pad: str) -> bytes:
    return b'{"n":%d,"group":"g%d","score":0.%d,"pad":"%s"}\n' % (i, i % 97, i % 10, pad.encode())


def ndjson_stream(
    total: int, *, record_bytes: int = 1000, chunk: int = 256 * 1024
) -> Iterator[bytes]:
    """About ``total`` bytes of ndjson records of ~``record_bytes`` each, in ``chunk``-sized
    pieces, generated on the fly (never held whole)."""
    pad = "x" * (record_bytes - 60)
    sent, i, held, size = 0, 0, [], 0
    while sent < total:
        line = _line(i, pad)
        held.append(line)
        size += len(line)
        sent += len(line)
        i += 1
        if size >= chunk:
            yield b"".join(held)
            held, size = [], 0
    if held:
        yield b"".join(held)


def _count_lines(total: int, record_bytes: int = 1000) -> int:
    return sum(chunk.count(b"\n") for chunk in ndjson_stream(total, record_bytes=record_bytes))


def _count(server: Server, collection: str) -> int:
    with server.client() as c:
        r = c.get(_url(collection, "count"))
    if r.status_code == 404:
        return 0
    assert r.status_code == 200, r.text
    count: int = r.json()["count"]
    return count


def _healthy(server: Server) -> None:
    with server.client() as c:
        assert c.get("/health").status_code == 200, server.output()


def test_ndjson_append_of_100mb_streams_with_bounded_memory(big: Server) -> None:
    expected = _count_lines(BIG_BYTES)
    with big.client(timeout=600) as c, RssSampler(big.pid) as rss:
        r = c.post(
            _url("bulk"),
            content=ndjson_stream(BIG_BYTES),
            headers=NDJSON,
            params={"batch_id": "big-1"},
        )
    assert r.status_code == 201, r.text[:500]
    assert r.json()["count"] == expected
    assert _count(big, "bulk") == expected
    peak_mb = hwm_kib(big.pid) * 1024 / 1e6  # the exact peak since the server started
    print(
        f"\n100 MiB ndjson append over HTTP: {expected:,} records, server RSS "
        f"{rss.start_kib * 1024 / 1e6:.0f} MB before, peak sampled "
        f"{rss.peak_kib * 1024 / 1e6:.0f} MB, VmHWM {peak_mb:.0f} MB"
    )
    assert peak_mb < RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB; samples {len(rss.samples)}"


def test_a_slow_ndjson_client_blocks_neither_the_server_nor_other_writers(small: Server) -> None:
    paused, resume = threading.Event(), threading.Event()
    result: dict[str, httpx.Response] = {}

    def slow_body() -> Iterator[bytes]:
        yield b"".join(_line(i, "s") for i in range(100))
        paused.set()
        resume.wait(60)
        yield b"".join(_line(i, "s") for i in range(100, 200))

    def post() -> None:
        with small.client() as c:
            result["r"] = c.post(_url("slow"), content=slow_body(), headers=NDJSON)

    sender = threading.Thread(target=post)
    sender.start()
    try:
        assert paused.wait(60)
        with small.client(timeout=30) as c:  # meanwhile: the same collection takes a batch
            assert c.get("/health").status_code == 200
            other = c.post(_url("slow"), json={"records": [{"id": "fast"}]})
            assert other.status_code == 201, other.text
        assert _count(small, "slow") == 1  # the slow batch is not visible halfway
    finally:
        resume.set()
        sender.join(60)
    assert result["r"].status_code == 201, result["r"].text
    assert _count(small, "slow") == 201


def _raw_request(server: Server, head: str, body: bytes = b"") -> bytes:
    """Send a request head (and ``body``) on a raw socket; the response (first 64 KiB)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head.encode("latin-1") + body)
        data = b""
        while b"\r\n\r\n" not in data:
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
        return data


def test_declared_length_over_limit_is_413_before_the_body_is_sent(small: Server) -> None:
    before = rss_kib(small.pid)
    for path, ctype in ((_url("refused"), "application/x-ndjson"), ("/import", "application/gzip")):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{small.port}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {10 << 30}\r\n\r\n"
        )
        answer = _raw_request(small, head)  # not one byte of the 10 GiB body is sent
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    _healthy(small)
    assert _count(small, "refused") == 0
    assert rss_kib(small.pid) - before < 20 * 1024


def test_json_body_over_limit_is_413(small: Server) -> None:
    records = [{"n": i, "pad": "y" * 1000} for i in range(2000)]  # ~2 MB with a length
    with small.client() as c:
        r = c.post(_url("refused"), json={"records": records})
    assert r.status_code == 413, r.text[:300]
    assert "1,048,576" in r.json()["detail"]
    body = orjson.dumps({"workflow_type": "append", "context": CTX, "items": records})
    with small.client() as c:  # chunked, into a body FastAPI parses itself
        wf = c.post("/workflows", content=iter([body[:1000], body[1000:]]))
        assert wf.status_code == 413, wf.text[:300]
        assert c.get("/workflows").json() == []
    _healthy(small)
    assert _count(small, "refused") == 0


def test_chunked_body_over_limit_is_413_midway_and_nothing_is_committed(small: Server) -> None:
    with small.client() as c:
        assert c.post(_url("kept"), json={"records": [{"id": "k0"}]}).status_code == 201
    before = rss_kib(small.pid)
    with small.client() as c, RssSampler(small.pid) as rss:
        # 20 MiB of valid records, chunked (no Content-Length): refused once 1 MiB has passed
        r = c.post(_url("kept"), content=ndjson_stream(20 * MiB), headers=NDJSON)
    assert r.status_code == 413, r.text[:300]
    assert _count(small, "kept") == 1
    _healthy(small)
    grew_mib = (rss.peak_kib - before) / 1024
    print(f"\nchunked 20 MiB over a 1 MiB limit: server RSS grew {grew_mib:.1f} MiB at peak")
    assert grew_mib < 20


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"n": 1, "broken": }', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"   ", "empty"),
        (b'{"n": NaN}', "not valid JSON"),
    ],
)
def test_bad_line_is_422_naming_it_and_nothing_is_committed(
    small: Server, line: bytes, problem: str
) -> None:
    good = [_line(i, "z") for i in range(3000)]  # spans several chunks before the bad line
    body = b"".join(good[:2500]) + line + b"\n" + b"".join(good[2500:])
    chunks = [body[i : i + 7777] for i in range(0, len(body), 7777)]
    with small.client() as c:
        r = c.post(_url("lines"), content=iter(chunks), headers=NDJSON)
    assert r.status_code == 422, r.text[:300]
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["line 2501"], detail
    assert problem in detail["msg"]
    assert _count(small, "lines") == 0


def test_a_client_gone_midway_commits_nothing(small: Server) -> None:
    head = (
        f"POST {_url('gone')} HTTP/1.1\r\nHost: 127.0.0.1:{small.port}\r\n"
        "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"".join(_line(i, "g") for i in range(200))
    with socket.create_connection(("127.0.0.1", small.port), timeout=30) as s:
        s.sendall(head.encode() + b"%x\r\n%s\r\n" % (len(piece), piece))
        # closed before the final chunk: the batch must not be committed
    _healthy(small)
    with small.client() as c:  # the same collection takes a batch afterwards
        assert c.post(_url("gone"), json={"records": [{"id": "after"}]}).status_code == 201
    assert _count(small, "gone") == 1
    assert "Traceback" not in small.output()


def test_a_record_the_schema_refuses_is_named_by_its_line(small: Server) -> None:
    ok = b'{"source_domain": "a", "target_domain": "b", "quality_score": 0.5}\n'
    bad = b'{"source_domain": "a", "target_domain": "b", "quality_score": 2}\n'
    with small.client() as c:
        r = c.post(_url("analogies"), content=ok * 40 + bad + ok, headers=NDJSON)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["line 41.quality_score"], detail
    assert detail["msg"].startswith("line 41.quality_score: ")
    assert _count(small, "analogies") == 0


def test_ndjson_batch_ids_duplicates_and_conflicts(small: Server) -> None:
    body = b"".join(_line(i, "q") for i in range(50))
    with small.client() as c:
        first = c.post(_url("ids"), content=body, headers=NDJSON, params={"batch_id": "b-1"})
        assert first.status_code == 201, first.text
        again = c.post(_url("ids"), content=body, headers={**NDJSON, "Idempotency-Key": "b-1"})
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert again.json()["sha256"] == first.json()["sha256"]
        other = c.post(_url("ids"), content=body[:-1] + b" \n", headers=NDJSON)
        assert other.status_code == 201  # no batch id: a new batch
        changed = body.replace(b'"n":0,', b'"n":-1,')
        clash = c.post(_url("ids"), content=changed, headers=NDJSON, params={"batch_id": "b-1"})
        assert clash.status_code == 409
        both = c.post(
            _url("ids"),
            content=body,
            headers={**NDJSON, "Idempotency-Key": "b-2"},
            params={"batch_id": "b-3"},
        )
        assert both.status_code == 422
        reserved = c.post(_url("ids"), content=body, headers=NDJSON, params={"batch_id": "wf:x"})
        assert reserved.status_code == 422
        unknown = c.post(_url("ids"), content=b"x", headers={"Content-Type": "text/csv"})
        assert unknown.status_code == 415
        assert (
            c.post("/contexts/nope/collections/a/records", content=body, headers=NDJSON).status_code
            == 404
        )
    assert _count(small, "ids") == 100


def test_import_streams_raw_gzip_and_multipart_and_refuses_over_limit(small: Server) -> None:
    with small.client() as c:
        assert (
            c.post(_url("exp"), json={"records": [{"id": f"e{i}"} for i in range(10)]}).status_code
            == 201
        )
        archive = c.get(f"/contexts/{CTX}/export").content
        raw = c.post(
            "/import",
            params={"name": "raw_copy"},
            content=archive,
            headers={"Content-Type": "application/gzip"},
        )
        assert raw.status_code == 201, raw.text
        form = c.post(
            "/import", params={"name": "form_copy"}, files={"archive": ("a.tar.gz", archive)}
        )
        assert form.status_code == 201, form.text
        for name in ("raw_copy", "form_copy"):
            assert c.get(f"/contexts/{name}/collections/exp/count").json()["count"] == 10
        audit = c.get("/audit", params={"limit": 10000}).json()["entries"]
        imports = [e["target"] for e in audit if e["action"] == "import_archive"]
        assert imports[-2:] == ["raw_copy", "form_copy"]
        missing = c.post("/import", files={"other": ("a.tar.gz", archive)})
        assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["archive"]
        junk = c.post("/import", content=b"junk", headers={"Content-Type": "application/gzip"})
        assert junk.status_code == 422
        bad_type = c.post("/import", content=archive, headers={"Content-Type": "text/plain"})
        assert bad_type.status_code == 415
        big = gzip.compress(b"0" * (1 << 10)) + b"z" * (3 * MiB)  # 3 MiB over a 2 MiB limit
        chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
        over = c.post("/import", content=chunks, headers={"Content-Type": "application/gzip"})
        assert over.status_code == 413
    _healthy(small)


def test_streamed_bodies_behind_the_token_gate(tmp_path: Path) -> None:
    root = tmp_path / "store"
    writer = mint_token(root, "writer", scope="write")
    admin = mint_token(root, "admin", scope="admin")
    with serve(root, "--max-body", "1MiB") as server:
        with server.client(admin) as c:
            assert c.post("/contexts", json={"name": CTX}).status_code == 201
        body = ndjson_stream(200_000, record_bytes=200)
        with server.client(writer) as c:
            r = c.post(_url("gated"), content=body, headers=NDJSON)
            assert r.status_code == 201, r.text
            too_big = c.post(_url("gated"), content=ndjson_stream(2 * MiB), headers=NDJSON)
            assert too_big.status_code == 413
            archive = c.get(f"/contexts/{CTX}/export").content
            refused = c.post(
                "/import", content=archive, headers={"Content-Type": "application/gzip"}
            )
            assert refused.status_code == 403  # import needs admin
        with server.client(admin) as c:
            done = c.post(
                "/import",
                params={"name": "gated_copy"},
                content=archive,
                headers={"Content-Type": "application/gzip"},
            )
            assert done.status_code == 201, done.text
            audit = c.get("/audit", params={"limit": 10000}).json()["entries"]
    outcomes = [(e["token"], e["action"], e["outcome"]) for e in audit]
    assert ("writer", "append", 201) in outcomes
    assert ("writer", "append", 413) in outcomes
    assert ("admin", "import_archive", 201) in outcomes


def test_openapi_documents_both_append_bodies(small: Server) -> None:
    with small.client() as c:
        spec = c.get("/openapi.json").json()
    append = spec["paths"]["/contexts/{context}/collections/{collection}/records"]["post"]
    assert set(append["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert "413" in append["responses"]
    upload = spec["paths"]["/import"]["post"]["requestBody"]["content"]
    assert set(upload) == {"multipart/form-data", "application/gzip"}


@given(st.lists(st.binary(max_size=40), max_size=8), st.data())
def test_lines_do_not_depend_on_how_the_stream_is_cut(
    parts: list[bytes], data: st.DataObject
) -> None:
    whole = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=6)))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    expected = whole.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    assert list(lines(pieces)) == expected


def test_ndjson_records_name_the_line() -> None:
    assert [r["a"] for r in ndjson_records([b'{"a": 1}\n{"a"', b": 2}\r\n"])] == [1, 2]
    huge = ndjson_records([b'{"a": 123456789012345678901234}'])
    assert next(huge)["a"] == 123456789012345678901234  # exact, so the int64 rule sees it
    with pytest.raises(InvalidInput) as err:
        list(ndjson_records([b'{"a": 1}\n\n{"a": 2}\n']))
    assert err.value.argument == "line 2"


def test_body_limit_module_answers_as_json(small: Server) -> None:
    head = (
        f"POST /contexts HTTP/1.1\r\nHost: 127.0.0.1:{small.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {2 * MiB}\r\n\r\n"
    )
    answer = _raw_request(small, head)
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 413")
    assert b"content-type: application/json" in rest.lower()
