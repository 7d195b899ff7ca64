"""Child process for the crash tests: appends multi-record batches in a loop until killed.

Usage: crash_appender.py ROOT CONTEXT COLLECTION PREFIX SEED [MAX_BATCHES]

Prints ``ready`` once the context is open, then one line ``<batch_id> <count>`` after each
``append`` returned (the acknowledgement), flushing after every line. Each record carries its
``batch_tag`` (= the batch id) and ``batch_n`` (the batch's size) so that the parent can check
that every batch is visible completely or not at all.
"""

from __future__ import annotations

import random
import sys

import app


def run(
    root: str, context: str, collection: str, prefix: str, seed: str, max_batches: int = 10**9
) -> None:
    rng = random.Random(seed)
    store = app.open_store(root)
    ctx = store.context(context)
    print("ready", flush=True)
    for k in range(max_batches):
        tag = f"{prefix}-{k}"
        n = rng.randint(50, 500)
        # every third batch is large (several MiB: written with several write calls)
        pad = "p" * (rng.randint(8000, 16000) if k % 3 == 2 else rng.randint(20, 400))
        records = [
            {"id": f"{tag}-{j}", "batch_tag": tag, "batch_n": n, "j": j, "pad": pad}
            for j in range(n)
        ]
        receipt = ctx.append(collection, records, batch_id=tag)
        sys.stdout.write(f"{receipt.batch_id} {receipt.count}\n")
        sys.stdout.flush()
    store.close()
    print("done", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    run(*args[:5], *(int(a) for a in args[5:6]))
