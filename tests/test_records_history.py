"""Records, upserts and ``history``: versions, content hashes, commit order.

Through the public API (docs/api.md, "Records"); helpers in ``records_support``.
"""

from __future__ import annotations

import hashlib

from records_support import canonical

import app


def test_upsert_and_history(ctx: app.Context) -> None:
    v1 = {"id": "r", "text": "one", "n": 1}
    v2 = {"id": "r", "text": "two", "n": 2}
    v3 = {"id": "r", "text": "three", "extra": [1]}
    receipts = [
        ctx.append("notes", [v1, {"id": "other", "n": 0}]),
        ctx.append("notes", [v2]),
        ctx.append("notes", [v3]),
    ]
    assert ctx.get("notes", "r") == v3
    assert ctx.count("notes") == 2
    assert [r["id"] for r in ctx.query("notes")].count("r") == 1
    assert ctx.query("notes", {"id": "r"}) == [v3]
    hist = ctx.history("notes", "r")
    assert len(hist) == 3
    for version, data, receipt in zip(hist, [v1, v2, v3], receipts, strict=True):
        assert isinstance(version, app.RecordVersion)
        assert version.id == "r"
        assert version.data == data
        assert version.deleted is False
        assert version.batch_id == receipt.batch_id
        assert version.committed_at == receipt.committed_at
        assert version.sha256 == hashlib.sha256(canonical(data)).hexdigest()
    assert len({v.sha256 for v in hist}) == 3


def test_history_content_hash_depends_on_content_only(ctx: app.Context) -> None:
    rec = {"id": "same", "b": 2, "a": [1, {"z": None, "y": "x"}]}
    ctx.append("notes", [rec])
    ctx.append("notes", [{"a": [1, {"y": "x", "z": None}], "b": 2, "id": "same"}])  # key order
    h = ctx.history("notes", "same")
    assert len(h) == 2
    assert h[0].sha256 == h[1].sha256 == hashlib.sha256(canonical(rec)).hexdigest()
    assert h[0].batch_id != h[1].batch_id


def test_upsert_within_one_batch_last_wins(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "d", "v": 1}, {"id": "d", "v": 2}])
    assert ctx.get("notes", "d") == {"id": "d", "v": 2}
    assert ctx.count("notes") == 1
    assert [v.data for v in ctx.history("notes", "d")] == [{"id": "d", "v": 1}, {"id": "d", "v": 2}]


def test_history_of_unknown_record_is_empty(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "a"}])
    assert ctx.history("notes", "zzz") == []
    assert ctx.history("never_created", "a") == []


def test_upsert_changes_commit_order_position(ctx: app.Context) -> None:
    ctx.append("notes", [{"id": "a"}, {"id": "b"}, {"id": "c"}])
    ctx.append("notes", [{"id": "a", "v": 2}])
    # "commit order" of the latest versions: a's latest version was committed last
    assert [r["id"] for r in ctx.query("notes")] == ["b", "c", "a"]
