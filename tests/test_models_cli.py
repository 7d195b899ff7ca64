"""``ctxstore models list|versions|load`` in real subprocesses: they read an existing store
(never create one), ``load`` really deserialises the model and summarises it, and a pickle
without a valid trust mark is refused on one line naming the fix, without running it.
Also: ``append --batch-size`` is bounded by the batch cap of the library, not by 1,000,000."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from service_support import child_env
from sklearn.linear_model import LogisticRegression
from test_trust_marks import forged_marks, mark_of, plant

import app
from app.core.codec import MAX_BATCH_RECORDS
from app.surfaces.errors import kind_of

REFUSED = kind_of(app.UntrustedArtifactError("x")).exit_code
NOT_FOUND = kind_of(app.NotFoundError("x")).exit_code


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctxstore", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=False,
    )


def ok_json(root: Path, *args: str) -> Any:
    proc = run(root, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line a refused command prints (no traceback, nothing on stdout)."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def class_path(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def small_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def fitted_estimator() -> LogisticRegression:
    return LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], [0, 1, 1, 0])


@pytest.fixture
def saved(store: app.Store) -> app.Context:
    """Context ``c``: ``net`` (torch module: v1 Sequential, v2 Linear) and ``est`` (sklearn)."""
    ctx = store.context("c")
    ctx.models.save("net", small_net())
    ctx.models.save("net", torch.nn.Linear(2, 2))
    ctx.models.save("est", fitted_estimator())
    return ctx


# ------------------------------------------------------------------ list / versions ----


def test_list_shows_the_latest_version_of_each_model(store: app.Store, saved: app.Context) -> None:
    rows = ok_json(store.root, "models", "list", "c")
    expected = [saved.models.info("est"), saved.models.info("net", version=2)]
    assert [(r["name"], r["version"], r["format"]) for r in rows] == [
        ("est", 1, "joblib"),
        ("net", 2, "pth"),
    ]
    for row, info in zip(rows, expected, strict=True):
        assert (row["size_bytes"], row["created_at"], row["sha256"]) == (
            info.size_bytes,
            info.created_at,
            info.sha256,
        )
    table = run(store.root, "models", "list", "c")
    assert table.returncode == 0, table.stderr
    for word in ("est", "net", "joblib", "pth", "created_at", expected[0].created_at):
        assert word in table.stdout


def test_versions_lists_every_version_oldest_first(store: app.Store, saved: app.Context) -> None:
    rows = ok_json(store.root, "models", "versions", "c", "net")
    assert [r["version"] for r in rows] == [1, 2]
    assert [r["sha256"] for r in rows] == [i.sha256 for i in saved.models.versions("net")]
    line = error_line(run(store.root, "models", "versions", "c", "nope"), NOT_FOUND)
    assert "'nope'" in line


def test_reading_commands_create_no_store_and_no_context(
    store: app.Store, saved: app.Context, tmp_path: Path
) -> None:
    missing = tmp_path / "no-store"
    for args in (("list", "c"), ("versions", "c", "net"), ("load", "c", "net")):
        error_line(run(missing, "models", *args), NOT_FOUND)
        assert not missing.exists()
        error_line(run(store.root, "models", *args[:1], "other", *args[2:]), NOT_FOUND)
        assert store.contexts() == ["c"]


# ------------------------------------------------------------------ load ----


def test_load_torch_state_dict_counts_tensors_and_parameters(
    store: app.Store, saved: app.Context
) -> None:
    net = small_net()
    want_params = sum(t.numel() for t in net.state_dict().values())
    got = ok_json(store.root, "models", "load", "c", "net", "--version", "1")
    assert got["type"] == class_path(saved.models.load("net", version=1))
    assert (got["name"], got["version"], got["format"]) == ("net", 1, "pth")
    assert (got["tensors"], got["parameters"]) == (len(net.state_dict()), want_params)
    latest = run(store.root, "models", "load", "c", "net")
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout.startswith("c/net/v2 (pth, ")
    assert latest.stdout.rstrip().endswith(", 2 tensors, 6 parameters")  # Linear(2, 2)


def test_load_sklearn_estimator_really_unpickles_it(store: app.Store, saved: app.Context) -> None:
    got = ok_json(store.root, "models", "load", "c", "est")
    assert got["type"] == class_path(fitted_estimator())
    assert "tensors" not in got
    line = run(store.root, "models", "load", "c", "est")
    assert line.returncode == 0, line.stderr
    assert line.stdout.strip().endswith(f": {class_path(fitted_estimator())}")


def test_planted_pickle_with_forged_or_no_mark_never_runs(store: app.Store, tmp_path: Path) -> None:
    ctx = store.context("c")
    ctx.models.save("m", {"honest": 1})
    sentinel = tmp_path / "pwned"
    digest = plant(ctx, "m", sentinel, tmp_path)
    assert not mark_of(store, digest).exists()  # the planted file has no mark yet
    marks: dict[str, bytes | None] = {"no mark": None, **forged_marks(digest)}
    options: list[tuple[str, ...]] = [(), ("--json",), ("--version", "1")]
    for n, (label, content) in enumerate(marks.items()):
        if content is not None:
            mark_of(store, digest).write_bytes(content)
        extra = options[n % len(options)]
        line = error_line(run(store.root, "models", "load", "c", "m", *extra), REFUSED)
        print(f"{label}: {line}")  # -s shows what a user reads
        assert "ctxstore models trust" in line and not line.endswith("..."), label
        assert "trusted=True" not in line, label
        if label == "empty (v1)":
            assert "`ctxstore models trust --existing`" in line
        else:
            assert "`ctxstore models trust c m 1`" in line, label
            assert "--trusted" in line, label
        assert not sentinel.exists(), label


def test_untrusted_pickle_loads_with_trusted_then_after_trust(
    store: app.Store, tmp_path: Path
) -> None:
    """A harmless estimator that arrived by import (no mark), given a forged mark."""
    store.context("src").models.save("est", fitted_estimator())
    archive = tmp_path / "src.tar.gz"
    store.export_context("src", archive)
    other_root = tmp_path / "other"
    with app.open_store(other_root) as other:
        other.import_context(archive)
        digest = other.context("src").models.info("est").sha256
        mark_of(other, digest).parent.mkdir(exist_ok=True)
        mark_of(other, digest).write_bytes(forged_marks(digest)["garbage"])
    line = error_line(run(other_root, "models", "load", "src", "est"), REFUSED)
    assert "ctxstore models trust" in line
    trusted = ok_json(other_root, "models", "load", "src", "est", "--trusted")
    assert trusted["type"] == class_path(fitted_estimator())
    signed = run(other_root, "models", "trust", "src", "est")
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith("trusted src/est/v1 ")
    after = ok_json(other_root, "models", "load", "src", "est")
    assert after["type"] == class_path(fitted_estimator())


# ------------------------------------------------------------------ append --batch-size ----


def test_append_batch_size_is_bounded_by_the_library_cap(store: app.Store, tmp_path: Path) -> None:
    data = tmp_path / "notes.jsonl"
    data.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(5)))
    got = ok_json(store.root, "append", "c", "notes", str(data), "--batch-size", "1000001")
    assert (got["appended"], got["batches"]) == (5, 1)
    too_big = run(
        store.root, "append", "c", "notes", str(data), "--batch-size", str(MAX_BATCH_RECORDS + 1)
    )
    assert "--batch-size" in error_line(too_big, 2)
    assert store.context("c").count("notes") == 5
    # a batch is read lazily: a bad line at its end still leaves all of it out
    data.write_text(data.read_text() + "[1, 2]\n")
    bad = run(store.root, "append", "c", "notes", str(data), "--batch-size", "1000001")
    assert f"{data}:6" in error_line(bad, 2)
    assert store.context("c").count("notes") == 5
