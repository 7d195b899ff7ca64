"""Priorities, retries and attempts through the surfaces: the CLI's ``workflows submit
--priority/--max-retries`` and ``list``/``show``, and the HTTP workflow routes (pydantic
models)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
from service_support import local_client

import app
from app.service import create_app

ROOT = Path(__file__).resolve().parents[1]


def cli(root: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "app", "--root", str(root), *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_cli_submit_with_priority_and_retries_then_list_and_show(tmp_path: Path) -> None:
    root = tmp_path / "store"
    items = b'{"id": "a"}\n{"id": "b"}\n'
    for prio in ("1", "9"):
        sub = cli(
            root,
            "workflows",
            "submit",
            "append",
            "c",
            "-",
            "--params",
            '{"collection": "t"}',
            "--priority",
            prio,
            "--max-retries",
            "2",
            "--id",
            f"w{prio}",
            stdin=items,
        )
        assert sub.returncode == 0, sub.stderr
    listed = orjson.loads(cli(root, "workflows", "list", "--json").stdout)
    assert {(w["workflow_id"], w["priority"], w["max_retries"], w["attempts"]) for w in listed} == {
        ("w1", 1, 2, 0),
        ("w9", 9, 2, 0),
    }
    table = cli(root, "workflows", "list").stdout.decode()
    assert "prio" in table and "attempts" in table
    work = cli(root, "worker", "--once")
    assert work.returncode == 0, work.stderr
    first, second = (line for line in work.stderr.decode().splitlines() if ": completed" in line)
    assert first.startswith("w9: completed") and second.startswith("w1: completed")
    shown = orjson.loads(cli(root, "workflows", "show", "w9", "--json").stdout)
    assert shown["attempts"] == 1 and shown["priority"] == 9 and shown["not_before"] is None
    text = cli(root, "workflows", "show", "w9").stdout.decode()
    assert "priority" in text and "attempts" in text
    metrics = orjson.loads(cli(root, "workflows", "metrics").stdout)
    assert metrics["attempts"] == 2 and metrics["waiting_retry"] == 0
    bad = cli(root, "workflows", "submit", "append", "c", "--priority", "x")
    assert bad.returncode == 2


def test_http_submit_takes_priority_and_retries_and_answers_attempts(
    store: app.Store,
) -> None:
    admin = store.tokens.create("admin", scope="admin")
    with local_client(create_app(store, process_workflows=False), admin) as client:
        client.post("/contexts", json={"name": "c"})
        body = {
            "workflow_type": "append",
            "context": "c",
            "items": [{"id": "n1"}],
            "params": {"collection": "notes"},
            "priority": 3,
            "max_retries": 4,
        }
        r = client.post("/workflows", json=body)
        assert r.status_code == 202, r.text
        got = r.json()
        assert (got["priority"], got["max_retries"], got["attempts"]) == (3, 4, 0)
        assert got["not_before"] is None
        done = store.workflows.process(got["workflow_id"])
        assert client.get(f"/workflows/{done.workflow_id}").json()["attempts"] == 1
        assert client.get("/workflows").json()[0]["priority"] == 3
        for bad in ({"priority": 10**7}, {"max_retries": -1}, {"max_retries": 51}):
            assert client.post("/workflows", json={**body, **bad}).status_code == 422
