"""Single-row damage made directly in a context's SQLite index (with sqlite3 on the file), and
a count of what a collection's log holds, read from the log's bytes without the library."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

KINDS = ("delete", "insert", "alter", "alter_pos", "drop_batch")


def index_path(root: Path, context: str) -> Path:
    return root / "contexts" / context / f"{context}.sqlite"


def damage(db: Path, collection: str, kind: str, rid: str) -> None:
    """One row of ``collection`` deleted, added (``ghost-<rid>``), altered with a recomputed
    CRC, moved to another position, or one batch row deleted."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    t = f'"c_{collection}"'
    try:
        conn.execute("BEGIN IMMEDIATE")
        if kind == "delete":
            cur = conn.execute(f"DELETE FROM {t} WHERE id=?", (rid,))
        elif kind == "insert":
            data = json.dumps({"id": f"ghost-{rid}", "v": "ghost"}, separators=(",", ":"))
            top = conn.execute(f"SELECT max(pos) FROM {t}").fetchone()[0] or 0
            cur = conn.execute(
                f"INSERT INTO {t}(pos, id, data, crc) VALUES (?,?,?,?)",
                (top + 1_000_000, f"ghost-{rid}", data, zlib.crc32(data.encode())),
            )
        elif kind == "alter":
            (old,) = conn.execute(f"SELECT data FROM {t} WHERE id=?", (rid,)).fetchone()
            rec = json.loads(old)
            rec["v"] = "altered"
            data = json.dumps(rec, separators=(",", ":"), sort_keys=True)
            cur = conn.execute(
                f"UPDATE {t} SET data=?, crc=? WHERE id=?", (data, zlib.crc32(data.encode()), rid)
            )
        elif kind == "alter_pos":
            top = conn.execute(f"SELECT max(pos) FROM {t}").fetchone()[0]
            cur = conn.execute(f"UPDATE {t} SET pos=? WHERE id=?", (top + 7, rid))
        elif kind == "drop_batch":
            cur = conn.execute(
                "DELETE FROM batches WHERE rowid IN (SELECT rowid FROM batches WHERE collection=? "
                "ORDER BY start LIMIT 1)",
                (collection,),
            )
        else:
            raise ValueError(kind)
        assert cur.rowcount == 1, (kind, rid)
        conn.execute("COMMIT")
    finally:
        conn.close()


def log_current(log: Path) -> dict[str, dict[str, object]]:
    """The current version of every record in a log, replayed from its lines."""
    current: dict[str, dict[str, object]] = {}
    for raw in log.read_bytes().splitlines()[1:]:
        entry = json.loads(raw)
        if "put" in entry:
            current[entry["put"]["id"]] = entry["put"]
        elif "del" in entry:
            current.pop(entry["del"], None)
    return current
