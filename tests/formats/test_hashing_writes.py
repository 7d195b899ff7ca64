"""Hashing while writing (``app.formats.hashio``, ``app.formats.writeback``,
``app.formats.modelcodecs.follow``): every digest computed on the way out equals the digest of
the bytes that ended up in the file, whatever the sizes of the writes."""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from app.core.atomic import atomic_file
from app.formats import crc, writeback
from app.formats.hashio import PARALLEL_MIN, HashingWriter
from app.formats.modelcodecs.follow import Follower


def payload(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("immutable", [True, False])
@pytest.mark.parametrize("writeback_on", [True, False])
def test_hashing_writer_digests_match_the_file(
    tmp_path: Path, immutable: bool, writeback_on: bool
) -> None:
    parts = [
        payload(10),
        payload(PARALLEL_MIN + 5, 1),
        payload(3, 2),
        payload(3 * PARALLEL_MIN, 3),
        payload(5 << 20, 4),
    ]
    path = tmp_path / "f.bin"
    with atomic_file(path) as fh:
        writer = HashingWriter(fh, immutable=immutable, writeback=writeback_on)
        try:
            for part in parts:
                writer.write(part)
            digest, size = writer.hexdigest(), writer.tell()
        finally:
            writer.close()
    data = path.read_bytes()
    assert data == b"".join(parts)
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))


def test_writeback_hint_changes_nothing_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = payload(9 << 20)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        kicker = writeback.Kicker(fd)
        kicker.written(1 << 20)  # below the minimum: nothing started
        kicker.written(len(data))
        writeback.start(fd, 0, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    assert isinstance(writeback.available(), bool)


@pytest.mark.parametrize("total", [0, 1, 7 << 20, (12 << 20) + 3])
def test_follower_hashes_a_file_written_while_it_runs(tmp_path: Path, total: int) -> None:
    data = payload(total, 5)
    path = tmp_path / "grown.bin"
    wfd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    rfd = os.open(path, os.O_RDONLY)
    follower = Follower(rfd, poll=0.0005)
    out: list[tuple[str, int]] = []
    thread = threading.Thread(target=lambda: out.append(follower.run()))
    thread.start()
    try:
        for begin in range(0, total, 300_001):  # odd sizes: reads land mid-write
            os.write(wfd, data[begin : begin + 300_001])
    finally:
        follower.finished()
        thread.join()
        os.close(wfd)
        os.close(rfd)
    assert out == [(hashlib.sha256(data).hexdigest(), total)]


@pytest.mark.parametrize("size", [0, 1, 5000, 3 << 20])
def test_crc32_equals_zlib(size: int) -> None:
    data = payload(size, 6)
    assert crc.crc32(data) == zlib.crc32(data)
    assert crc.crc32(data[size // 2 :], crc.crc32(data[: size // 2])) == zlib.crc32(data)
