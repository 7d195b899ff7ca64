"""Reader process for tests/reliability/test_rel_swap_readers.py.

``swap_reader.py ROOT CTX COLL N STOPFILE READYFILE``: until STOPFILE exists, reads COLL with
``count``, ``iter``, ``query``, ``get`` and ``history`` and checks each read sees the whole
collection (N live records, ids ``r0`` .. ``r<N-1>``, group ``g`` = i % 10). Touches READYFILE
after its first round. Prints ``reads <ok> <bad>`` and the first few wrong reads (``BAD ...``).
"""

from __future__ import annotations

import os
import random
import sys

import app


def main(root: str, context: str, coll: str, n_text: str, stopfile: str, ready: str) -> None:
    n = int(n_text)
    ok = bad = 0
    shown = 0
    rng = random.Random(os.getpid())

    def check(what: str, good: bool) -> None:
        nonlocal ok, bad, shown
        if good:
            ok += 1
            return
        bad += 1
        if shown < 10:
            shown += 1
            print(f"BAD {what}", flush=True)

    with app.open_store(root) as store:
        ctx = store.context(context)
        first = True
        while first or not os.path.exists(stopfile):
            c = ctx.count(coll)
            check(f"count {c}", c == n)
            seen = sum(1 for _ in ctx.iter(coll))
            check(f"iter {seen}", seen == n)
            g = rng.randrange(10)
            q = ctx.query(coll, {"g": g})
            check(f"query g={g} {len(q)}", len(q) == len(range(g, n, 10)))
            for _ in range(5):
                rid = f"r{rng.randrange(n)}"
                try:
                    got = ctx.get(coll, rid)["id"] == rid
                except app.NotFoundError:
                    got = False
                check(f"get {rid}", got)
            rid = f"r{rng.randrange(n)}"
            try:
                hist = ctx.history(coll, rid)
                good = bool(hist) and not hist[-1].deleted and hist[-1].id == rid
            except app.IntegrityError as exc:
                good, rid = False, f"{rid} {exc}"
            check(f"history {rid}", good)
            if first:
                open(ready, "w").close()
                first = False
    print(f"reads {ok} {bad}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
