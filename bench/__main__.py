"""``python -m bench [--quick] [--only records,artifacts,...]``: one table for the library.

Every row is a ctxstore figure and, where it has one, a raw baseline measured in the same run
on the same machine, the ratio between them and the goal for that ratio. Not a test: nothing
fails when the machine is slow; the verdict column says whether a goal was met.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, format_table

SECTIONS = [
    "growth",
    "records",
    "search",
    "artifacts",
    "workflows",
    "transfer",
    "service",
    "s3_embeddings",
    "pg_query",
    "pg_append",
    "pg_workers",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--only", default="", help="comma-separated sections")
    args = parser.parse_args(argv)
    wanted = [s for s in args.only.split(",") if s] or SECTIONS
    rows: list[Row] = []
    for section in wanted:
        try:
            module = importlib.import_module(f"bench.{section}")
        except ModuleNotFoundError as exc:
            print(f"[bench] section {section!r} not available: {exc}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"ctxbench-{section}-") as tmp:
            rows += module.run(args.quick, Path(tmp))
        print(f"[bench] {section}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    print(format_table(rows))
    misses = [r for r in rows if r.verdict == "MISS"]
    print(f"\n{len(rows)} figures, {len(misses)} goals missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
