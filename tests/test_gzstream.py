"""``app.formats.gzstream.Inflater``: the same bytes and the same refusals as ``gzip``."""

from __future__ import annotations

import gzip
import io
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.formats.gzstream import Inflater


def _never(compressed: int, decompressed: int) -> None:
    return None


def _read_all(data: bytes, *, block: int = 1 << 10, depth: int = 2, size: int = 777) -> bytes:
    out = []
    with Inflater(io.BytesIO(data), _never, block=block, depth=depth) as inf:
        while chunk := inf.read(size):
            out.append(chunk)
    return b"".join(out)


@settings(max_examples=40, deadline=None)
@given(
    members=st.lists(st.binary(max_size=5000), min_size=1, max_size=4),
    padding=st.integers(0, 600),
    level=st.sampled_from([0, 1, 9]),
    size=st.integers(1, 5000),
)
def test_same_bytes_as_gzip(members: list[bytes], padding: int, level: int, size: int) -> None:
    data = b"".join(gzip.compress(m, compresslevel=level) + b"\0" * padding for m in members)
    assert _read_all(data, size=size) == gzip.decompress(data) == b"".join(members)


def test_large_random_and_compressible_data() -> None:
    payload = os.urandom(3 << 20) + b"abc" * (1 << 20)
    data = gzip.compress(payload, compresslevel=1)
    assert _read_all(data, block=1 << 16, size=1 << 20) == payload
    with Inflater(io.BytesIO(data), _never) as inf:
        assert inf.read() == payload  # readall
    buf = bytearray(10)
    with Inflater(io.BytesIO(data), _never) as inf:
        assert inf.readinto(buf) == 10
        assert bytes(buf) == payload[:10]


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda d: d[: len(d) // 2], EOFError),  # truncated inside the member
        (lambda d: d[:-8] + b"\0\0\0\0" + d[-4:], zlib.error),  # CRC-32 wrong
        (lambda d: d[:-4] + b"\1\0\0\0", zlib.error),  # length wrong
        (lambda d: d + b"junk after the member", zlib.error),
        (lambda d: b"hello, not gzip", zlib.error),
    ],
)
def test_refuses_what_gzip_refuses(damage: object, error: type[Exception]) -> None:
    good = gzip.compress(os.urandom(5000) + b"x" * 50_000)
    bad = damage(good)  # type: ignore[operator]
    with pytest.raises((gzip.BadGzipFile, EOFError, zlib.error)):
        gzip.decompress(bad)
    with pytest.raises(error):
        _read_all(bad)


def test_check_stops_the_worker_and_is_raised_by_the_reader() -> None:
    seen: list[tuple[int, int]] = []

    def check(compressed: int, decompressed: int) -> None:
        seen.append((compressed, decompressed))
        if decompressed > 100 * compressed:
            raise ValueError(f"ratio {decompressed}/{compressed}")

    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    with (
        pytest.raises(ValueError, match="ratio"),
        Inflater(io.BytesIO(bomb), check, block=1 << 16) as inf,
    ):
        while inf.read(1 << 16):
            pass
    compressed, decompressed = seen[-1]
    assert decompressed <= 100 * compressed + (1 << 16)  # stopped at the limit, not at 64 MB


def test_an_empty_stream_is_empty_as_for_gzip() -> None:
    assert gzip.decompress(b"") == _read_all(b"") == b""


def test_close_ends_a_worker_blocked_on_a_full_queue() -> None:
    data = gzip.compress(os.urandom(1 << 20), compresslevel=1)
    inf = Inflater(io.BytesIO(data), _never, block=1 << 12, depth=1)
    assert inf.read(10)
    inf.close()
    assert inf.closed
    assert not inf._thread.is_alive()
