"""Read commands never create a store (docs/api.md, "Command line"): on a missing root each
one fails with one line and leaves nothing behind; write commands still create it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.surfaces.cli import cli

READS = [
    ["contexts"],
    ["query", "c", "people"],
    ["count", "c", "people"],
    ["compact", "c", "people"],
    ["verify"],
    ["stats"],
    ["export", "c", "out.tar.gz"],
    ["workflows", "list"],
    ["workflows", "show", "wf-1"],
    ["workflows", "metrics"],
    ["tokens", "list"],
    ["audit"],
    ["models", "list", "c"],
    ["worker", "--once"],
]


@pytest.mark.parametrize("argv", READS, ids=lambda a: " ".join(a))
def test_read_commands_never_create_a_store(tmp_path: Path, argv: list[str]) -> None:
    root = tmp_path / "missing"
    result = CliRunner().invoke(cli, ["--root", str(root), *argv])
    assert result.exit_code != 0, result.output
    assert not root.exists(), f"{argv} created {root}"
    assert "Traceback" not in result.output


def test_append_creates_the_store(tmp_path: Path) -> None:
    root = tmp_path / "new"
    data = tmp_path / "r.jsonl"
    data.write_text('{"name": "a"}\n')
    result = CliRunner().invoke(cli, ["--root", str(root), "append", "c", "people", str(data)])
    assert result.exit_code == 0, result.output
    assert (root / "contexts" / "c").is_dir()
