"""Idempotency keys (SPEC 16, issue 9 items 1 and 4): the reserved ``wf:`` namespace, request
digests (same key + other payload is a conflict), ids derived from (batch id, position), and
v1 commit lines without a digest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from service_support import local_client

import app
from app.core.codec import derived_id, encode, prepare_batch
from app.formats.batchlog import BatchLog, commit_line
from app.managers.workflows.handlers import chunk_batch_id
from app.service import create_app


@pytest.fixture
def client(store: app.Store) -> Iterator[TestClient]:
    with local_client(create_app(store, auth=False), raise_server_exceptions=True) as c:
        yield c


def _log_bytes(ctx: app.Context, collection: str) -> bytes:
    return (ctx.path / f"{collection}.jsonl").read_bytes()


# -- the reserved namespace ------------------------------------------------------------------


def test_user_writes_with_wf_batch_ids_are_refused(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "a"}])
    raw = _log_bytes(ctx, "notes")
    for bid in ("wf:x", "wf:", "wf:abc:c0"):
        with pytest.raises(app.InvalidInput, match=r"batch_id.*reserved"):
            ctx.append("notes", [{"id": "b"}], batch_id=bid)
        with pytest.raises(app.InvalidInput, match=r"batch_id.*reserved"):
            ctx.delete("notes", ["a"], batch_id=bid)
    assert _log_bytes(ctx, "notes") == raw
    assert ctx.count("notes") == 1
    # other ids that merely contain "wf:" are ordinary keys
    assert not ctx.append("notes", [{"id": "c"}], batch_id="x-wf:1").duplicate


def test_http_reserved_key_422_and_reused_key_409(client: TestClient, store: app.Store) -> None:
    store.context("default", create=True)
    url = "/contexts/default/collections/notes/records"
    r = client.post(url, json={"records": [{"id": "a"}]}, headers={"Idempotency-Key": "wf:q:c0"})
    assert r.status_code == 422, r.text
    assert "Idempotency-Key" in r.text and "reserved" in r.text
    r = client.post(url, json={"records": [{"id": "a"}], "batch_id": "wf:q:c0"})
    assert r.status_code == 422, r.text
    first = client.post(url, json={"records": [{"v": 1}]}, headers={"Idempotency-Key": "k"})
    assert first.status_code == 201
    again = client.post(url, json={"records": [{"v": 1}]}, headers={"Idempotency-Key": "k"})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["sha256"] == first.json()["sha256"]
    other = client.post(url, json={"records": [{"v": 2}]}, headers={"Idempotency-Key": "k"})
    assert other.status_code == 409, other.text
    assert store.context("default").count("notes") == 1


def test_workflow_chunk_ids_cannot_be_taken_through_the_public_api(
    store: app.Store, ctx: app.Context
) -> None:
    wf = store.workflows.submit(
        "append", context="default", items=[{"id": "i1"}], params={"collection": "notes"}
    )
    with pytest.raises(app.InvalidInput):
        ctx.append("notes", [{"id": "evil"}], batch_id=chunk_batch_id(wf.workflow_id, 0, 0))
    done = store.workflows.process(wf.workflow_id)
    assert done.status == "completed" and done.items_processed == 1
    assert ctx.get("notes", "i1") == {"id": "i1"}
    assert ctx.count("notes") == 1


def test_a_foreign_chunk_batch_fails_the_workflow_instead_of_being_counted(
    store: app.Store, ctx: app.Context
) -> None:
    """A chunk batch id already committed with another payload (only possible from inside,
    or from a v1 store) is never counted as the workflow's own."""
    wf = store.workflows.submit(
        "append", context="default", items=[{"id": "i1"}], params={"collection": "notes"}
    )
    ctx._append("notes", [{"id": "foreign"}], batch_id=chunk_batch_id(wf.workflow_id, 0, 0))
    done = store.workflows.process(wf.workflow_id)
    assert done.status == "failed", done
    assert done.items_processed == 0
    assert "ConflictError" in done.errors[0] and "different payload" in done.errors[0]
    with pytest.raises(app.NotFoundError):
        ctx.get("notes", "i1")


# -- request digests -------------------------------------------------------------------------


def test_same_key_other_payload_conflicts_and_writes_nothing(ctx: app.Context) -> None:
    first = ctx.append("notes", [{"id": "a", "v": 1}], batch_id="k1")
    raw = _log_bytes(ctx, "notes")
    for other in (
        [{"id": "a", "v": 2}],
        [{"id": "b", "v": 1}],
        [{"id": "a", "v": 1}, {"id": "a2"}],
        [{"v": 1}],  # the id is generated: another request
        [],
    ):
        with pytest.raises(app.ConflictError, match="k1"):
            ctx.append("notes", other, batch_id="k1")
    with pytest.raises(app.ConflictError):
        ctx.append("other", [{"id": "a", "v": 1}], batch_id="k1")
    with pytest.raises(app.ConflictError):
        ctx.delete("notes", ["a"], batch_id="k1")
    assert _log_bytes(ctx, "notes") == raw
    again = ctx.append("notes", ({"v": v, "id": "a"} for v in [1]), batch_id="k1")
    assert again.duplicate and again.sha256 == first.sha256
    assert again.committed_at == first.committed_at


def test_retry_without_ids_is_a_duplicate_with_the_same_ids(ctx: app.Context) -> None:
    records = [{"n": i, "at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)} for i in range(50)]
    first = ctx.append("notes", records, batch_id="readme-example")
    ids = [r["id"] for r in ctx.query("notes")]
    assert ids == [derived_id("readme-example", i) for i in range(50)]
    assert len(set(ids)) == 50 and all(len(i) == 32 for i in ids)
    raw = _log_bytes(ctx, "notes")
    again = ctx.append("notes", [dict(r) for r in records], batch_id="readme-example")
    assert again.duplicate and again.sha256 == first.sha256
    assert _log_bytes(ctx, "notes") == raw
    assert [r["id"] for r in ctx.query("notes")] == ids
    # the records were not modified and ids differ per batch id; none without a batch id
    assert "id" not in records[0]
    assert ctx.append("notes", records[:1], batch_id="other").count == 1
    assert ctx.count("notes") == 51
    a = prepare_batch([{"n": 1}], None).ids
    b = prepare_batch([{"n": 1}], None).ids
    assert a != b


def test_given_and_generated_ids_are_different_requests(ctx: app.Context) -> None:
    ctx.append("notes", [{"v": 1}], batch_id="g")
    with pytest.raises(app.ConflictError):
        ctx.append("notes", [{"v": 1, "id": derived_id("g", 0)}], batch_id="g")


def test_delete_digest_is_the_request_as_given(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": str(i), "k": i % 2} for i in range(6)])
    assert ctx.delete("notes", where={"k": 1}, batch_id="d1") == 3
    assert ctx.delete("notes", where={"k": 1}, batch_id="d1") == 3  # same request
    with pytest.raises(app.ConflictError):
        ctx.delete("notes", where={"k": 0}, batch_id="d1")
    with pytest.raises(app.ConflictError):
        ctx.delete("notes", ["0"], where={"k": 1}, batch_id="d1")
    assert ctx.delete("notes", ["0", "2"], batch_id="d2") == 2
    assert ctx.delete("notes", ("0", "2"), batch_id="d2") == 2  # same ids, any iterable
    with pytest.raises(app.ConflictError):
        ctx.delete("notes", ["2", "0"], batch_id="d2")
    assert ctx.count("notes") == 1


def test_digest_survives_reopen_and_compaction(store_root: Path) -> None:
    with app.open_store(store_root) as s:
        c = s.context("c")
        c.append("notes", [{"n": 1}, {"n": 2}], batch_id="once")
        c.append("notes", [{"id": derived_id("once", 0), "n": 9}])
        c.compact("notes")
    with app.open_store(store_root) as s:
        c = s.context("c")
        with pytest.raises(app.ConflictError):
            c.append("notes", [{"n": 1}], batch_id="once")
        assert c.append("notes", [{"n": 1}, {"n": 2}], batch_id="once").duplicate
        c.rebuild_index()
        assert c.append("notes", [{"n": 1}, {"n": 2}], batch_id="once").duplicate
        assert c.get("notes", derived_id("once", 0))["n"] == 9
        assert c.verify().ok


# -- v1 logs and pinned bytes ----------------------------------------------------------------


def test_v1_commit_lines_are_unchanged_and_still_read(ctx: app.Context) -> None:
    """A commit line without a digest is byte-identical to v0.1's; a v1 batch still reads,
    verifies and dedups (a missing digest counts as the same payload: legacy)."""
    line = b'{"put":{"id":"a","v":1}}\n'
    commit, digest = commit_line([line], "old-1", "append", "2026-01-01T00:00:00+00:00")
    assert commit == (
        b'{"commit":{"batch":"old-1","kind":"append","at":"2026-01-01T00:00:00+00:00","n":1,'
        b'"sha256":"d2d55e13e4be482de109cab5ee0c536c372b864e4f654d536bb340cd9d64a603"}}\n'
    )
    ctx.define_collection("notes")
    path = ctx.path / "notes.jsonl"
    with open(path, "ab") as fh:  # a batch exactly as v0.1 wrote it
        fh.write(line + commit)
    ctx.rebuild_index()
    assert ctx.get("notes", "a") == {"id": "a", "v": 1}
    assert ctx.verify().ok
    dup = ctx.append("notes", [{"id": "zzz"}], batch_id="old-1")  # legacy: a duplicate
    assert dup.duplicate and dup.sha256 == digest and dup.count == 1
    assert ctx.count("notes") == 1
    new = ctx.append("notes", [{"id": "b"}], batch_id="new-1")
    (batch,) = [b for b in BatchLog(path).scan(BatchLog(path).header()[1]) if b.batch_id == "new-1"]
    assert batch.req is not None and len(batch.req) == 64
    tail = path.read_bytes().splitlines()[-1]
    assert orjson.loads(tail[len(b'{"commit":') : -1])["req"] == batch.req
    assert new.sha256 == batch.sha256


def test_a_flipped_request_digest_is_damage(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "a"}], batch_id="k")
    path = ctx.path / "notes.jsonl"
    data = path.read_bytes()
    at = data.index(b'"req":"') + len(b'"req":"')
    flipped = b"0" if data[at : at + 1] != b"0" else b"1"
    path.write_bytes(data[:at] + flipped + data[at + 1 :])
    assert not ctx.verify().ok


def test_encodings_of_records_with_ids_are_pinned() -> None:
    """Content hashes depend on these bytes: they are exactly v0.1's."""
    cases: list[tuple[dict[str, Any], bytes]] = [
        (
            {"id": "r1", "b": [1, 2.5, None, True], "a": {"z": "é\u2028", "y": -(2**63)}},
            b'{"a":{"y":-9223372036854775808,"z":"\xc3\xa9\xe2\x80\xa8"},'
            b'"b":[1,2.5,null,true],"id":"r1"}',
        ),
        (
            {"id": "r2", "t": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "n": 2**63 - 1},
            b'{"id":"r2","n":9223372036854775807,"t":"2026-01-02T03:04:05+00:00"}',
        ),
        ({"id": "x", "s": 'tab\tq"\\', "e": {}}, b'{"e":{},"id":"x","s":"tab\\tq\\"\\\\"}'),
        ({"id": "y", "f": 1e-7}, b'{"f":1e-7,"id":"y"}'),
    ]
    for record, expected in cases:
        assert encode(record) == expected
        assert prepare_batch([record], None, batch_id="any").encoded == [expected]


def test_cli_batch_prefix_rerun_is_duplicate_and_wf_prefix_refused(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}
    env["PYTHONPATH"] = str(Path(app.__file__).parent.parent)
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"".join(orjson.dumps({"n": i}) + b"\n" for i in range(5)))
    root = tmp_path / "store"

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        cmd = [sys.executable, "-m", "app", "--root", str(root), *args]
        return subprocess.run(cmd, capture_output=True, timeout=120, env=env, check=False)

    base = ("append", "c", "notes", str(data), "--json")
    first = cli(*base, "--batch-prefix", "load")
    assert first.returncode == 0, first.stderr
    again = cli(*base, "--batch-prefix", "load")
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["appended"] == 0
    bad = cli(*base, "--batch-prefix", "wf:x")
    assert bad.returncode != 0 and b"--batch-prefix" in bad.stderr and b"reserved" in bad.stderr
    with app.open_store(root) as s:
        assert s.context("c").count("notes") == 5
