"""``app.formats.npz``: one embedding shard (arrays ids, vectors, norms in a stored zip).

A format test in four parts, to copy when adding a format: write then read gives back what
was written; the file is what it claims (here: any numpy reader opens it); damage is detected
(``IntegrityError``, never wrong data); and the limits (empty shard, shape checks).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.errors import IntegrityError
from app.formats import npz

Array = np.ndarray[Any, Any]


def sample(rows: int = 5, dim: int = 4) -> tuple[Array, Array, Array]:
    ids = np.array([f"id-{i}" for i in range(rows)])
    vectors = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim)
    return ids, vectors, np.linalg.norm(vectors, axis=1)


def write(path: Path, rows: int = 5, dim: int = 4) -> tuple[str, int]:
    return npz.write_shard(path, *sample(rows, dim))


# -- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [True, False])
def test_write_then_open_gives_the_arrays_back(tmp_path: Path, mmap: bool) -> None:
    path = tmp_path / "shard.npz"
    sha, size = write(path)
    assert size == path.stat().st_size
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    got = npz.open_shard(path, count=5, dim=4, dtype="float32", mmap=mmap, sha256=sha, size=size)
    ids, vectors, norms = sample()
    assert got.ids.tolist() == ids.tolist()
    assert np.array_equal(got.vectors, vectors)
    assert np.allclose(got.norms, norms)
    assert npz.read_ids(path, 5).tolist() == ids.tolist()


def test_any_numpy_reader_opens_a_shard(tmp_path: Path) -> None:
    path = tmp_path / "shard.npz"
    write(path)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(npz.MEMBERS)
        assert data["vectors"].shape == (5, 4)


def test_equal_arrays_give_identical_files(tmp_path: Path) -> None:
    assert write(tmp_path / "a.npz") == write(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_array_data_is_aligned_for_mapping(tmp_path: Path) -> None:
    path = tmp_path / "shard.npz"
    write(path)
    members = npz.layout(path)
    assert set(members) == set(npz.MEMBERS)
    assert all(m.offset % npz.ALIGN == 0 for m in members.values())
    assert members["vectors"].shape == (5, 4)


# -- damage -----------------------------------------------------------------------------------


def test_checksum_mismatch_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "shard.npz"
    sha, size = write(path)
    data = bytearray(path.read_bytes())
    data[npz.layout(path)["vectors"].offset] ^= 0xFF  # one bit of the vector data
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        npz.open_shard(path, count=5, dim=4, dtype="float32", mmap=True, sha256=sha, size=size)


@pytest.mark.parametrize("keep", [0, 10, 100, 400])
def test_truncated_shard_is_detected(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "shard.npz"
    write(path)
    path.write_bytes(path.read_bytes()[:keep])
    for mmap in (True, False):
        with pytest.raises(IntegrityError):
            npz.open_shard(path, count=5, dim=4, dtype="float32", mmap=mmap)


def test_missing_file_is_an_integrity_error(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="missing"):
        npz.read_ids(tmp_path / "absent.npz", 1)


def test_a_link_is_never_followed(tmp_path: Path) -> None:
    write(tmp_path / "real.npz")
    (tmp_path / "link.npz").symlink_to(tmp_path / "real.npz")
    with pytest.raises(IntegrityError):
        npz.open_shard(tmp_path / "link.npz", count=5, dim=4, dtype="float32", mmap=True)


# -- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "dim", "dtype"), [(6, 4, "float32"), (5, 3, "float32"), (5, 4, "float64")]
)
def test_arrays_must_match_the_expected_shape(
    tmp_path: Path, count: int, dim: int, dtype: str
) -> None:
    path = tmp_path / "shard.npz"
    write(path)
    with pytest.raises(IntegrityError, match="do not match"):
        npz.open_shard(path, count=count, dim=dim, dtype=dtype, mmap=True)


def test_an_empty_shard_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "shard.npz"
    npz.write_shard(
        path, np.array([], dtype="<U1"), np.empty((0, 4), np.float32), np.empty(0, np.float32)
    )
    got = npz.open_shard(path, count=0, dim=4, dtype="float32", mmap=True)
    assert got.vectors.shape == (0, 4) and got.ids.shape == (0,)
