"""``app.formats.archive``: a ``.tar.gz`` whose first member ``manifest.json`` lists every file.

Round trip, standard readers, damage detection and limits, as in every format test. Hostile
archives member by member (links, devices, odd paths...) are in tests/test_archive_hostile.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.core.errors import IntegrityError, StorageError
from app.formats import archive

FILES = {"a.json": b'{"k": 1}\n', "sub/b.bin": bytes(range(256)) * 50, "sub/deep/c.txt": b"c"}


def manifest(files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "format": "test",
        "files": [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for p, d in files.items()
        ],
    }


def build(tmp_path: Path, files: dict[str, bytes] = FILES) -> Path:
    src = tmp_path / "src"
    pairs = []
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
        pairs.append((name, src / name))
    dest = tmp_path / "out.tar.gz"
    size = archive.write_archive(dest, orjson.dumps(manifest(files)), pairs)
    assert size == dest.stat().st_size
    return dest


def extract(src: Path, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    dest = tmp_path / "dest"
    dest.mkdir()
    return archive.read_archive(src, dest, **kw)


def tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    """A tar.gz built by the standard library (to hand-craft damaged archives)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# -- round trip -------------------------------------------------------------------------------


def test_write_then_read_gives_the_files_back(tmp_path: Path) -> None:
    got = extract(build(tmp_path), tmp_path)
    assert got == manifest(FILES)
    for name, data in FILES.items():
        assert (tmp_path / "dest" / name).read_bytes() == data


def test_standard_tar_readers_open_an_archive(tmp_path: Path) -> None:
    path = build(tmp_path)
    with tarfile.open(path, "r:gz") as tf:
        names = tf.getnames()
    assert names[0] == archive.MANIFEST_NAME
    assert set(FILES) <= set(names)
    assert gzip.decompress(path.read_bytes())  # one valid gzip stream


def test_empty_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="empty manifest"):
        archive.write_archive(tmp_path / "x.tar.gz", b"", [])
    assert not (tmp_path / "x.tar.gz").exists()


# -- damage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_a_flipped_byte_is_detected(tmp_path: Path, where: float) -> None:
    path = build(tmp_path)
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        extract(path, tmp_path)


def test_a_truncated_archive_is_detected(tmp_path: Path) -> None:
    path = build(tmp_path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(IntegrityError):
        extract(path, tmp_path)


def test_content_not_matching_its_hash_is_detected(tmp_path: Path) -> None:
    listing = orjson.dumps(manifest({"a.txt": b"good"}))
    path = tmp_path / "x.tar.gz"
    path.write_bytes(tar_gz([(archive.MANIFEST_NAME, listing), ("a.txt", b"evil")]))
    with pytest.raises(IntegrityError, match="checksum"):
        extract(path, tmp_path)


@pytest.mark.parametrize(
    "members",
    [
        [("a.txt", b"x")],  # no manifest first
        [(archive.MANIFEST_NAME, b"not json")],
        [(archive.MANIFEST_NAME, orjson.dumps(manifest({"a.txt": b"x"})))],  # listed, absent
        [(archive.MANIFEST_NAME, orjson.dumps(manifest({}))), ("a.txt", b"x")],  # unlisted
    ],
    ids=["manifest-not-first", "manifest-not-json", "listed-file-missing", "unlisted-member"],
)
def test_archives_not_matching_their_manifest_are_refused(
    tmp_path: Path, members: list[tuple[str, bytes]]
) -> None:
    path = tmp_path / "x.tar.gz"
    path.write_bytes(tar_gz(members))
    with pytest.raises(IntegrityError):
        extract(path, tmp_path)
    assert not any((tmp_path / "dest").rglob("a.txt"))


def test_an_empty_file_is_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.tar.gz").write_bytes(b"")
    with pytest.raises(IntegrityError, match="empty"):
        extract(tmp_path / "x.tar.gz", tmp_path)


# -- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/abs", "../up", "a/../b", "a//b", "a\\b", "", ".hidden", "x" * 600, "/".join("d" * 9)]
)
def test_unsafe_member_paths_are_refused(path: str) -> None:
    with pytest.raises(IntegrityError):
        archive.check_member_path(path)


def test_safe_member_paths_pass() -> None:
    assert archive.check_member_path("embeddings/set/shard-0001.npz") == (
        "embeddings/set/shard-0001.npz"
    )


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        (archive.Limits(max_members=2), "files"),
        (archive.Limits(max_file_bytes=100), "larger"),
        (archive.Limits(max_total_bytes=1000), "declares"),
    ],
)
def test_limits_are_enforced_from_the_manifest(
    tmp_path: Path, limits: archive.Limits, match: str
) -> None:
    with pytest.raises(IntegrityError, match=match):
        extract(build(tmp_path), tmp_path, limits=limits)


def test_a_compression_bomb_is_stopped(tmp_path: Path) -> None:
    zeros = {"zeros.json": b"0" * (4 << 20)}  # text: deflated, ratio far above the limit
    path = build(tmp_path, zeros)
    tight = archive.Limits(max_ratio=10.0, ratio_floor_bytes=1 << 20)
    with pytest.raises(IntegrityError):
        extract(path, tmp_path, limits=tight)
