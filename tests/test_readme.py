"""The README's Python examples run as written (in a temporary directory, on ./storage)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(python_blocks()) >= 4


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CTXSTORE_ROOT", raising=False)
    namespace: dict[str, object] = {}
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), namespace)
    store_dir = tmp_path / "storage"
    assert (store_dir / "ctxstore.json").is_file()
    assert (store_dir / "contexts" / "physics2" / "analogies.jsonl").is_file()
    assert (tmp_path / "physics.tar.gz").is_file()
