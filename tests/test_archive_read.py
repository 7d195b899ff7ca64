"""``read_archive`` reads what gzip reads (several members, padding) and refuses the rest;
every extracted file is complete when it returns."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import pytest

import app
from app.core.errors import IntegrityError
from app.formats.archive import read_archive

pytestmark = pytest.mark.embedded_only("rewrites an archive's gzip framing")


@pytest.fixture
def exported(store: app.Store, tmp_path: Path) -> tuple[Path, bytes]:
    """An exported context's archive and its tar bytes."""
    ctx = store.context("c")
    ctx.append("t", [{"id": f"r{i}", "v": "x" * (i % 50)} for i in range(3000)])
    rng = np.random.default_rng(3)
    ctx.embeddings.save("e", [f"e{i}" for i in range(300)], rng.standard_normal((300, 64)))
    archive = tmp_path / "c.tar.gz"
    store.export_context("c", archive)
    return archive, gzip.decompress(archive.read_bytes())


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_several_gzip_members_with_padding_import(
    store: app.Store, tmp_path: Path, exported: tuple[Path, bytes]
) -> None:
    archive, tar = exported
    cut = len(tar) // 3
    members = tmp_path / "members.tar.gz"
    members.write_bytes(
        gzip.compress(tar[:cut], 1) + b"\0" * 100 + gzip.compress(tar[cut:], 6) + b"\0" * 7
    )
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert read_archive(archive, a) == read_archive(members, b)
    assert _files(a) == _files(b)
    store.import_context(members, name="copy")
    assert store.context("copy").count("t") == 3000
    assert store.context("copy").verify().ok


@pytest.mark.parametrize("damage", ["junk_after", "crc", "cut_in_data"])
def test_broken_gzip_framing_is_refused(
    store: app.Store, tmp_path: Path, exported: tuple[Path, bytes], damage: str
) -> None:
    _, tar = exported
    data = gzip.compress(tar, 1)
    if damage == "junk_after":
        data += b"not a gzip member"
    elif damage == "crc":
        crc = zlib.crc32(tar) ^ 1
        data = data[:-8] + crc.to_bytes(4, "little") + data[-4:]
    else:
        data = data[: len(data) * 2 // 3]
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(data)
    with pytest.raises(IntegrityError):
        store.import_context(bad, name="copy")
    assert not store.exists("copy")
    assert "copy" not in store.contexts()
