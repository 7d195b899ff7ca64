"""The ``ctxstore`` command line, run as subprocesses: exit codes, output formats, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from app.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    StorageError,
    UntrustedArtifactError,
)

ENV = {k: v for k, v in os.environ.items() if k != "CTXSTORE_ROOT"}


def run(root: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "app", "--root", str(root), *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=ENV,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode()
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_demo_then_query_count_contexts(root: Path) -> None:
    proc = run(root, "demo", "--count", "1200", "--batch-size", "300")
    assert proc.returncode == 0, proc.stderr
    assert b"appended 1200 analogies" in proc.stdout
    again = run(root, "demo", "--count", "1200", "--batch-size", "300")
    assert b"appended 0 analogies" in again.stdout  # idempotent batches
    q = run(
        root,
        "query",
        "demo",
        "analogies",
        "--where",
        '{"quality_score": {"$gte": 0.99}}',
        "--order-by",
        "-quality_score",
        "--limit",
        "3",
    )
    assert q.returncode == 0
    rows = [orjson.loads(line) for line in q.stdout.splitlines()]
    assert len(rows) == 3 and rows[0]["quality_score"] >= rows[-1]["quality_score"] >= 0.99
    c = run(root, "count", "demo", "analogies")
    assert c.stdout.strip() == b"1200"
    js = run(root, "contexts", "--json")
    assert orjson.loads(js.stdout) == [
        {"name": "demo", "collections": {"analogies": 1200}, "records": 1200}
    ]


def test_append_file_and_stdin(root: Path, tmp_path: Path) -> None:
    data = tmp_path / "notes.jsonl"
    data.write_bytes(b"".join(orjson.dumps({"id": f"n{i}", "v": i}) + b"\n" for i in range(25)))
    proc = run(root, "append", "c", "notes", str(data), "--batch-size", "10", "--json")
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout)["appended"] == 25
    assert orjson.loads(proc.stdout)["batches"] == 3
    piped = run(root, "append", "c", "notes", "-", stdin=b'{"id": "s1"}\n\n{"id": "s2"}\n')
    assert piped.returncode == 0
    assert run(root, "count", "c", "notes", "--where", '{"v": {"$lt": 5}}').stdout.strip() == b"5"
    lines = run(root, "query", "c", "notes").stdout.splitlines()
    assert len(lines) == 27 and orjson.loads(lines[0]) == {"id": "n0", "v": 0}


def test_user_mistakes_are_one_line(root: Path, tmp_path: Path) -> None:
    run(root, "demo", "--count", "10")
    bad_json = run(root, "query", "demo", "analogies", "--where", "{oops")
    assert bad_json.returncode == 2
    assert "--where" in one_line_error(bad_json)
    bad_op = run(root, "query", "demo", "analogies", "--where", '{"a": {"$regex": "x"}}')
    assert bad_op.returncode == 2
    one_line_error(bad_op)
    missing_ctx = run(root, "count", "nope", "analogies")
    assert missing_ctx.returncode == 1
    assert "nope" in one_line_error(missing_ctx)
    bad_name = run(root, "count", "../etc", "analogies")
    assert bad_name.returncode == 2
    one_line_error(bad_name)
    missing_file = run(root, "append", "demo", "notes", str(tmp_path / "none.jsonl"))
    assert missing_file.returncode != 0
    one_line_error(missing_file)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"id": "1"}\n{broken\n')
    proc = run(root, "append", "demo", "notes", str(broken))
    assert proc.returncode == 2
    assert "broken.jsonl:2" in one_line_error(proc)
    schema = tmp_path / "schema.jsonl"
    schema.write_bytes(b'{"id": "x", "quality_score": 7}\n')
    proc = run(root, "append", "demo", "analogies", str(schema))
    assert proc.returncode == 2
    one_line_error(proc)
    unknown = run(root, "frobnicate")
    assert unknown.returncode == 2
    one_line_error(unknown)
    assert run(root, "count", "demo", "analogies").stdout.strip() == b"10"


def test_export_import_verify_compact(root: Path, tmp_path: Path) -> None:
    run(root, "demo", "--count", "100")
    archive = tmp_path / "demo.tar.gz"
    exp = run(root, "export", "demo", str(archive), "--json")
    assert exp.returncode == 0, exp.stderr
    assert orjson.loads(exp.stdout)["collections"] == {"analogies": 100}
    imp = run(root, "import", str(archive), "--name", "copy")
    assert imp.returncode == 0, imp.stderr
    conflict = run(root, "import", str(archive), "--name", "copy")
    assert conflict.returncode == 1
    assert "exists" in one_line_error(conflict)
    over = run(root, "import", str(archive), "--name", "copy", "--on-conflict", "overwrite")
    assert over.returncode == 0
    bad_choice = run(root, "import", str(archive), "--on-conflict", "replace")
    assert bad_choice.returncode == 2
    assert run(root, "count", "copy", "analogies").stdout.strip() == b"100"
    ok = run(root, "verify", "copy")
    assert ok.returncode == 0 and ok.stdout.startswith(b"ok")
    comp = run(root, "compact", "copy", "analogies", "--json")
    assert comp.returncode == 0
    assert orjson.loads(comp.stdout)["records_after"] == 100
    hostile = tmp_path / "hostile.tar.gz"
    hostile.write_bytes(b"\x1f\x8b garbage")
    refused = run(root, "import", str(hostile))
    assert refused.returncode == 1
    one_line_error(refused)
    # damage a committed batch in the middle of the log: verify exits 1 and names the file
    log = root / "contexts" / "copy" / "analogies.jsonl"
    raw = bytearray(log.read_bytes())
    pos = raw.index(b"demo-000042")
    raw[pos + 5] ^= 0x01
    log.write_bytes(bytes(raw))
    damaged = run(root, "verify", "copy")
    assert damaged.returncode == 1
    assert b"DAMAGED" in damaged.stdout and b"analogies.jsonl" in damaged.stdout
    js = run(root, "verify", "copy", "--json")
    assert js.returncode == 1 and orjson.loads(js.stdout)["ok"] is False


def test_stats_and_whole_store_verify(root: Path) -> None:
    run(root, "demo", "--count", "50")
    stats = run(root, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert orjson.loads(stats.stdout)["contexts"]["demo"]["records"] == 50
    table = run(root, "stats")
    assert table.returncode == 0 and b"demo" in table.stdout
    whole = run(root, "verify")
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert run(root, "--help").returncode == 0


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInput, 2),
        (NotFoundError, 1),
        (ConflictError, 1),
        (IntegrityError, 1),
        (UntrustedArtifactError, 1),
        (StorageError, 1),
    ],
)
def test_the_error_table_gives_the_exit_code(
    error: type[StorageError], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """One table (app/surfaces/errors.py) for the CLI's exit codes and the HTTP statuses."""
    from app.surfaces.cli import cli, main
    from app.surfaces.errors import kind_of

    @cli.command(name="boom-for-test")
    def boom() -> None:
        raise error("boom: it failed")

    try:
        with pytest.raises(SystemExit) as exited:
            main(["boom-for-test"])
    finally:
        cli.commands.pop("boom-for-test")
    assert exited.value.code == code == kind_of(error("x")).exit_code
    assert capsys.readouterr().err == "error: boom: it failed\n"


def test_every_command_module_registers_on_the_root_groups() -> None:
    from app.surfaces.cli import cli
    from app.surfaces.cli.root import workflows

    assert set(cli.commands) >= {
        "contexts", "append", "query", "count", "compact", "export", "import", "verify",
        "stats", "serve", "demo", "workflows", "worker",
    }  # fmt: skip
    assert set(workflows.commands) == {
        "list", "show", "submit", "process", "cancel", "rollback", "recover", "purge", "metrics",
    }  # fmt: skip
