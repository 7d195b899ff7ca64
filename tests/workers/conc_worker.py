"""Worker processes for tests/test_concurrency.py.

``writer ROOT CTX WID BATCHES SIZE PAD``: appends BATCHES batches of SIZE records, alternating
between the collection ``shared`` and ``own<WID>``; prints one ``<collection> <batch_id> <n>``
line per acknowledged batch.

``reader ROOT CTX STOPFILE``: until STOPFILE exists, reads ``shared`` and checks that every
visible batch is complete and that the count never goes down; prints ``checks <n>`` or
``VIOLATION ...`` lines.

``append1 ROOT CTX``: appends one record to ``locked`` and prints ``appended``.
"""

from __future__ import annotations

import collections
import os
import sys
import time

import app


def writer(root: str, context: str, wid: str, batches: str, size: str, pad: str) -> None:
    store = app.open_store(root)
    ctx = store.context(context)
    filler = "w" * int(pad)
    for k in range(int(batches)):
        coll = "shared" if k % 2 == 0 else f"own{wid}"
        tag = f"w{wid}-b{k}"
        n = int(size) + (k % 7)
        recs = [
            {"id": f"{tag}-{j}", "batch_tag": tag, "batch_n": n, "w": wid, "pad": filler}
            for j in range(n)
        ]
        r = ctx.append(coll, recs, batch_id=tag)
        print(coll, r.batch_id, r.count, flush=True)
    store.close()


def reader(root: str, context: str, stopfile: str) -> None:
    checks = 0
    last = 0
    while not os.path.exists(stopfile):
        with app.open_store(root) as store:
            ctx = store.context(context)
            for _ in range(5):
                per_tag: collections.Counter[str] = collections.Counter()
                sizes: dict[str, int] = {}
                for rec in ctx.iter("shared"):
                    per_tag[rec["batch_tag"]] += 1
                    sizes[rec["batch_tag"]] = rec["batch_n"]
                for tag, seen in per_tag.items():
                    if seen != sizes[tag]:
                        print(f"VIOLATION partial batch {tag}: {seen}/{sizes[tag]}", flush=True)
                total = ctx.count("shared")
                if total < last:
                    print(f"VIOLATION count went down {last} -> {total}", flush=True)
                last = total
                checks += 1
                time.sleep(0.005)
    print(f"checks {checks}", flush=True)


def append1(root: str, context: str) -> None:
    with app.open_store(root) as store:
        store.context(context).append("locked", [{"id": "from-child"}])
    print("appended", flush=True)


if __name__ == "__main__":
    {"writer": writer, "reader": reader, "append1": append1}[sys.argv[1]](*sys.argv[2:])
