"""The README's service example runs as written: the token it creates opens the service it
starts, and each curl line succeeds (real server, real curl)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
from service_support import child_env, serve

README = Path(__file__).resolve().parents[1] / "README.md"


def service_block() -> list[str]:
    """The commands of the bash block of the README's "HTTP service" section, continuation
    lines joined, comments dropped."""
    section = README.read_text().split("## HTTP service", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None, "the HTTP service section shows no commands"
    joined = block.group(1).replace("\\\n", " ")
    return [line.split("  #", 1)[0].strip() for line in joined.splitlines() if line.strip()]


def test_readme_service_example_runs(tmp_path: Path) -> None:
    commands = service_block()
    create = [c for c in commands if c.startswith("ctxstore --root storage tokens create")]
    curls = [c for c in commands if c.startswith("curl ")]
    assert len(create) == 1 and len(curls) >= 2
    assert any(c.startswith("ctxstore --root storage serve") for c in commands)
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed to run the README's example"

    root = tmp_path / "storage"
    argv = create[0].split()[1:]
    argv[argv.index("storage")] = str(root)
    made = subprocess.run(
        [sys.executable, "-m", "ctxstore", *argv],
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    token = made.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ctx_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", token), made.stdout
    (tmp_path / "analogies.jsonl").write_bytes(
        b"".join(
            orjson.dumps({"source_domain": f"s{i}", "target_domain": f"t{i}", "quality_score": 0.5})
            + b"\n"
            for i in range(50)
        )
    )
    with serve(root) as server:
        for command in curls:
            command = command.replace("http://127.0.0.1:8000", server.base)
            done = subprocess.run(
                ["bash", "-c", command.replace("curl ", f"{curl} --fail-with-body -sS ", 1)],
                cwd=tmp_path,
                env={**os.environ, "TOKEN": token},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        with server.client(token) as client:
            got = client.get("/contexts/physics/collections/analogies/count")
            assert got.status_code == 200 and got.json()["count"] == 50
            # the token is limited to its context: another one is not even there
            assert client.post("/contexts", json={"name": "chemistry"}).status_code == 404
