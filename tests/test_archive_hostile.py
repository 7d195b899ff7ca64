"""A corpus of hostile archives: each is refused with ``IntegrityError``, nothing is written
outside the store's staging directory, and the store is byte-for-byte unchanged."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

import app
from app.formats.archive import Limits, read_archive

BODY = b'{"log":{"format":1,"generation":"00"}}\n'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(files: dict[str, bytes], **extra: object) -> bytes:
    doc: dict[str, object] = {
        "format": "ctxstore-context",
        "format_version": 1,
        "context": "evil",
        "library_version": "0",
        "created_at": "2024-01-01T00:00:00+00:00",
        "files": [{"path": p, "size": len(d), "sha256": sha(d)} for p, d in files.items()],
        "collections": {},
    }
    doc.update(extra)
    return orjson.dumps(doc)


def add(tf: tarfile.TarFile, name: str, data: bytes = b"", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data) if info.isreg() else None)


def build(path: Path, fill: Callable[[tarfile.TarFile], None], *, level: int = 6) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=level, format=tarfile.PAX_FORMAT) as tf:
        fill(tf)
    return path


CATALOG = orjson.dumps({"format": 1, "context": "evil", "collections": {}})
GOOD = {"context.json": CATALOG}


def with_manifest(files: dict[str, bytes], *members: tuple[str, bytes, dict[str, object]]):
    def fill(tf: tarfile.TarFile) -> None:
        add(tf, "manifest.json", manifest(files))
        for name, data, attrs in members:
            add(tf, name, data, **attrs)

    return fill


def cases(outside: Path) -> dict[str, Callable[[tarfile.TarFile], None]]:
    esc = str(outside / "escaped")
    reg = {"type": tarfile.REGTYPE}
    return {
        "traversal": with_manifest(GOOD, ("context.json", CATALOG, reg), ("../escaped", b"x", reg)),
        "traversal-listed": with_manifest({**GOOD, "../escaped": b"x"}, ("../escaped", b"x", reg)),
        "absolute": with_manifest(GOOD, ("context.json", CATALOG, reg), (esc, b"x", reg)),
        "absolute-listed": with_manifest({esc: b"x"}, (esc, b"x", reg)),
        "symlink": with_manifest(
            GOOD,
            ("context.json", CATALOG, reg),
            ("link", b"", {"type": tarfile.SYMTYPE, "linkname": esc}),
        ),
        "symlink-listed": with_manifest(
            {"a.jsonl": b""}, ("a.jsonl", b"", {"type": tarfile.SYMTYPE, "linkname": esc})
        ),
        "hardlink": with_manifest(
            {"a.jsonl": b""}, ("a.jsonl", b"", {"type": tarfile.LNKTYPE, "linkname": esc})
        ),
        "chardev": with_manifest(
            {"a.jsonl": b""},
            ("a.jsonl", b"", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
        ),
        "blockdev": with_manifest({"a.jsonl": b""}, ("a.jsonl", b"", {"type": tarfile.BLKTYPE})),
        "fifo": with_manifest({"a.jsonl": b""}, ("a.jsonl", b"", {"type": tarfile.FIFOTYPE})),
        "setuid": with_manifest(GOOD, ("context.json", CATALOG, {"mode": 0o4755})),
        "sticky-dir": with_manifest(
            {"embeddings/x/a.npz": b"1"},
            ("embeddings", b"", {"type": tarfile.DIRTYPE, "mode": 0o1777}),
        ),
        "duplicate": with_manifest(
            GOOD, ("context.json", CATALOG, reg), ("context.json", CATALOG, reg)
        ),
        "unlisted": with_manifest(GOOD, ("context.json", CATALOG, reg), ("extra.jsonl", b"x", reg)),
        "unlisted-dir": with_manifest(
            GOOD, ("context.json", CATALOG, reg), ("somewhere", b"", {"type": tarfile.DIRTYPE})
        ),
        "hash-mismatch": with_manifest(GOOD, ("context.json", CATALOG[:-1] + b" ", reg)),
        "size-mismatch": with_manifest(GOOD, ("context.json", CATALOG + b" ", reg)),
        "missing-file": with_manifest({**GOOD, "a.jsonl": BODY}, ("context.json", CATALOG, reg)),
        "manifest-not-first": lambda tf: (
            add(tf, "context.json", CATALOG),
            add(tf, "manifest.json", manifest(GOOD)),
        ),
        "manifest-not-json": lambda tf: add(tf, "manifest.json", b"{not json"),
        "manifest-is-symlink": lambda tf: add(
            tf, "manifest.json", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd"
        ),
        "sqlite-smuggled": with_manifest(
            {**GOOD, "evil.sqlite": b"SQLite"},
            ("context.json", CATALOG, reg),
            ("evil.sqlite", b"SQLite", reg),
        ),
        "trust-smuggled": with_manifest(
            {**GOOD, "trust/" + "0" * 64: b""},
            ("context.json", CATALOG, reg),
            ("trust/" + "0" * 64, b"", reg),
        ),
        "dotfile": with_manifest(GOOD, ("context.json", CATALOG, reg), (".lock", b"", reg)),
        "backslash": with_manifest(GOOD, ("context.json", CATALOG, reg), ("..\\x", b"", reg)),
    }


def snapshot(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() else None
    return out


@pytest.fixture
def populated(store: app.Store) -> app.Store:
    ctx = store.context("keep")
    ctx.append("notes", [{"id": "1", "v": 1}])
    ctx.collections()
    return store


def assert_refused(store: app.Store, archive: Path, outside: Path, **kw: object) -> None:
    before = snapshot(store.root)
    with pytest.raises(app.IntegrityError):
        store.import_context(archive, **kw)  # type: ignore[arg-type]
    assert snapshot(store.root) == before
    assert not (outside / "escaped").exists()
    assert not list(outside.iterdir())


@pytest.mark.parametrize("case", sorted(cases(Path("/x"))))
def test_hostile_archive_refused(
    populated: app.Store, tmp_path: Path, case: str, on_conflict: str = "overwrite"
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = build(tmp_path / f"{case}.tar.gz", cases(outside)[case])
    assert_refused(populated, archive, outside, name="keep", on_conflict=on_conflict)
    assert_refused(populated, archive, outside, name="fresh")


def test_too_many_members(populated: app.Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    names = [f"n{i}.jsonl" for i in range(10_000)]

    def fill(tf: tarfile.TarFile) -> None:
        add(tf, "manifest.json", manifest(GOOD))
        add(tf, "context.json", CATALOG)
        for n in names:
            add(tf, n, b"")

    assert_refused(populated, build(tmp_path / "many.tar.gz", fill, level=1), outside)

    def listed(tf: tarfile.TarFile) -> None:
        add(tf, "manifest.json", manifest({n: b"" for n in names}))

    assert_refused(populated, build(tmp_path / "listed.tar.gz", listed, level=1), outside)


def test_gzip_bomb(populated: app.Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    size = 256 << 20
    digest = hashlib.sha256()
    chunk = b"\0" * (1 << 20)
    for _ in range(size >> 20):
        digest.update(chunk)
    doc = orjson.loads(manifest(GOOD))
    doc["files"].append({"path": "bomb.jsonl", "size": size, "sha256": digest.hexdigest()})
    doc["collections"] = {"bomb": 0}

    class Zeros(io.RawIOBase):
        left = size

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            n = min(len(b), self.left)
            b[:n] = b"\0" * n
            self.left -= n
            return n

    def fill(tf: tarfile.TarFile) -> None:
        add(tf, "manifest.json", orjson.dumps(doc))
        add(tf, "context.json", CATALOG)
        info = tarfile.TarInfo("bomb.jsonl")
        info.size = size
        tf.addfile(info, io.BufferedReader(Zeros()))

    archive = build(tmp_path / "bomb.tar.gz", fill, level=9)
    assert archive.stat().st_size < size // 500
    assert_refused(populated, archive, outside)
    staged = tmp_path / "staged"
    staged.mkdir()
    with pytest.raises(app.IntegrityError, match="ratio"):
        read_archive(archive, staged)


def test_size_limit_and_garbage(populated: app.Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(os.urandom(4096))
    assert_refused(populated, garbage, outside)
    notgz = tmp_path / "plain.tar.gz"
    notgz.write_bytes(b"hello")
    assert_refused(populated, notgz, outside)
    empty = tmp_path / "empty.tar.gz"
    empty.write_bytes(b"")
    assert_refused(populated, empty, outside)
    # a genuine archive, truncated
    good = tmp_path / "good.tar.gz"
    populated.export_context("keep", good)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_refused(populated, cut, outside, name="other")
    # a genuine archive above a configured size limit
    staged = tmp_path / "staged"
    staged.mkdir()
    with pytest.raises(app.IntegrityError, match="limit"):
        read_archive(good, staged, limits=Limits(max_total_bytes=10))
    assert gzip.decompress(good.read_bytes())


def test_tampered_log_with_matching_manifest(populated: app.Store, tmp_path: Path) -> None:
    """An archive whose manifest hashes a damaged log (crafted, not corrupted in transit)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    commit = b'{"commit":{"batch":"b","kind":"append","at":"t","n":1,"sha256":"00"}}\n'
    log = BODY + b'{"put":{"id":"x"}}\n' + commit
    files = {**GOOD, "notes.jsonl": log}
    doc = orjson.loads(manifest(files))
    doc["collections"] = {"notes": 1}

    def fill(tf: tarfile.TarFile) -> None:
        add(tf, "manifest.json", orjson.dumps(doc))
        for name, data in files.items():
            add(tf, name, data)

    assert_refused(populated, build(tmp_path / "t.tar.gz", fill), outside)
