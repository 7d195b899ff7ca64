"""Helpers shared by the tests/test_records_*.py files (the ``people`` fixture is in conftest).

The only file internals used are those of the documented layout: a collection's log is
``contexts/<context>/<collection>.jsonl`` and the index ``contexts/<context>/<context>.sqlite``
(used to check that a failed call wrote nothing, and that ``define_collection`` indexes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import app


def log_path(ctx: app.Context, collection: str) -> Path:
    return Path(ctx.path) / f"{collection}.jsonl"


def log_bytes(ctx: app.Context, collection: str) -> bytes:
    p = log_path(ctx, collection)
    return p.read_bytes() if p.exists() else b""


def canonical(record: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, compact, UTF-8) computed independently of the library."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def run_py(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(Path(__file__).resolve().parent.parent),
    )


def assert_nothing_written(ctx: app.Context, collection: str, count: int, raw: bytes) -> None:
    assert ctx.count(collection) == count
    assert log_bytes(ctx, collection) == raw


class Paper(BaseModel):
    """A user schema for ``define_collection`` (module level: importable by id)."""

    title: str
    year: int


class Note(BaseModel):
    id: str
    text: str
    tags: list[str] = []


def record_ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records]


def people_data() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cities = ["Paris", "Oslo", "Lima", None]
    for i in range(60):
        rec: dict[str, Any] = {
            "id": f"p{i:02d}",
            "age": i % 23,
            "score": (i * 37 % 100) / 10,
            "name": f"name{i % 13}",
            "active": i % 3 == 0,
            "meta": {"source": f"src{i % 4}", "rank": i % 5},
        }
        if cities[i % 4] is not None:
            rec["city"] = cities[i % 4]
        if i % 7 == 0:
            rec["nullable"] = None
        elif i % 7 == 1:
            rec["nullable"] = i
        out.append(rec)
    return out


def numbered_records(ctx: app.Context) -> list[dict[str, Any]]:
    # unique (a, b) pairs and unique n, inserted in scrambled order over several batches
    recs = [
        {"id": f"r{i}", "n": (i * 17) % 50, "a": i % 5, "b": f"s{(i * 7) % 10}", "w": i * 0.5}
        for i in range(50)
    ]
    for k in range(0, 50, 10):
        ctx.append("nums", recs[k : k + 10])
    return recs
