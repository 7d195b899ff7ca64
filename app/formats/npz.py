"""One NPZ shard of an embedding set: arrays ``ids`` (unicode), ``vectors`` (rows x dim float)
and ``norms`` (the rows' Euclidean norms, cached for cosine and l2 search).

Written uncompressed (``ZIP_STORED``) through ``atomic_file``, so that

* any ``numpy.load(path, allow_pickle=False)`` opens it;
* the data of each member is contiguous in the file: ``open_shard(mmap=True)`` maps it in
  place at its offset instead of reading it;
* the SHA-256 of the file is computed while it is written (on a second thread).

The zip is written by ``zipstream`` (stored members, data descriptors, aligned data, fixed
timestamps: equal arrays give byte-identical files). This module knows NPZ, nothing of
contexts.
"""

from __future__ import annotations

import os
import struct
import tokenize
import zipfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO, Any

import numpy as np

from app.core.atomic import atomic_file
from app.core.errors import IntegrityError, io_error
from app.core.nofollow import open_regular
from app.formats.filecheck import VERIFIED
from app.formats.hashio import HashingWriter
from app.formats.zipstream import ZipStream

MEMBERS = ("ids", "vectors", "norms")
ALIGN = 64  # array data starts at a multiple of this in the file
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_MAGIC = b"PK\x03\x04"

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class ShardArrays:
    ids: Array
    vectors: Array
    norms: Array
    ident: tuple[int, ...] = ()  # the file identity whose SHA-256 was checked (if it was)


def _npy_header(arr: Array) -> bytes:
    buf = BytesIO()
    header = np.lib.format.header_data_from_array_1_0(arr)
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # header too long for format 1.0
        buf = BytesIO()
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


def write_shard(path: Path, ids: Array, vectors: Array, norms: Array) -> tuple[str, int]:
    """Write a shard atomically and durably; returns ``(sha256 hex, size in bytes)``.

    ``ids`` must be a 1-D unicode array, ``vectors`` a C-contiguous 2-D float array and
    ``norms`` a 1-D float array, all with the same number of rows (the caller validates).
    Three passes over the data run at once: the write (this thread), its CRC-32 and its
    SHA-256 (worker threads); the SHA-256 finishes while ``atomic_file`` fsyncs. The pages
    written are handed to the device as the write goes (``app.formats.writeback``), so the
    closing ``fsync`` waits for the last few only.
    """
    arrays = {"ids": np.ascontiguousarray(ids), "vectors": vectors, "norms": norms}
    writer: HashingWriter | None = None
    stream: ZipStream | None = None
    try:
        with atomic_file(path) as fh:
            writer = HashingWriter(fh, immutable=True, writeback=True)
            stream = ZipStream(writer, align=ALIGN)
            for name in MEMBERS:
                arr = arrays[name]
                header = _npy_header(arr)
                flat = arr.reshape(-1).view(np.uint8).data if arr.size else memoryview(b"")
                stream.add(f"{name}.npy", [memoryview(header), flat], data_offset=len(header))
            stream.close()
        return writer.hexdigest(), writer.tell()
    finally:
        if stream is not None:
            stream.abort()
        if writer is not None:
            writer.close()


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    offset: int  # of the array data in the file
    dtype: np.dtype[Any]
    shape: tuple[int, ...]


def _member(fh: IO[bytes], info: zipfile.ZipInfo, path: Path) -> Member:
    if info.compress_type != zipfile.ZIP_STORED:
        raise IntegrityError(f"{path}: member {info.filename} is compressed (not a ctxstore shard)")
    fh.seek(info.header_offset)
    raw = fh.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size:
        raise IntegrityError(f"{path}: truncated zip header of {info.filename}")
    fields = _LOCAL_HEADER.unpack(raw)
    if fields[0] != _LOCAL_MAGIC:
        raise IntegrityError(f"{path}: bad zip header of {info.filename}")
    name_len, extra_len = fields[9], fields[10]
    if fh.read(name_len) != info.filename.encode("utf-8"):
        raise IntegrityError(f"{path}: zip header of {info.filename} names another member")
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    fh.seek(start)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise IntegrityError(f"{path}: {info.filename} has unsupported npy version {version}")
    offset = fh.tell()
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if fortran or dtype.hasobject or offset - start + nbytes != info.file_size:
        raise IntegrityError(f"{path}: {info.filename} header does not match its data")
    return Member(offset, dtype, tuple(int(s) for s in shape))


def _open(path: Path) -> int:
    """A descriptor of the shard, never through a link (``IntegrityError`` if missing)."""
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: shard file is missing") from None


def _layout(fh: IO[bytes], path: Path) -> dict[str, Member]:
    try:
        with zipfile.ZipFile(fh) as zf:
            infos = {i.filename: i for i in zf.infolist()}
        missing = [m for m in MEMBERS if f"{m}.npy" not in infos]
        if missing:
            raise IntegrityError(f"{path}: missing arrays {missing}")
        return {m: _member(fh, infos[f"{m}.npy"], path) for m in MEMBERS}
    except OSError as exc:
        raise io_error("reading", path, exc) from exc
    except (
        zipfile.BadZipFile,
        ValueError,
        EOFError,
        struct.error,
        SyntaxError,
        tokenize.TokenError,
    ) as exc:
        raise IntegrityError(f"{path}: damaged shard ({str(exc)[:120]})") from None


def layout(path: Path) -> dict[str, Member]:
    """Offsets, dtypes and shapes of the shard's members, read from the zip and npy headers
    only (a few hundred bytes); damage to the structure raises ``IntegrityError``."""
    with os.fdopen(_open(path), "rb") as fh:
        return _layout(fh, path)


def _map(fh: IO[bytes], path: Path, member: Member) -> Array:
    if 0 in member.shape:
        return np.empty(member.shape, dtype=member.dtype)
    try:
        return np.memmap(fh, dtype=member.dtype, mode="r", offset=member.offset, shape=member.shape)
    except (OSError, ValueError) as exc:  # e.g. a truncated file
        raise IntegrityError(f"{path}: cannot map ({str(exc)[:120]})") from None


def _check(arrays: ShardArrays, path: Path, count: int, dim: int, dtype: str) -> ShardArrays:
    ids, vectors, norms = arrays.ids, arrays.vectors, arrays.norms
    if (
        ids.ndim != 1
        or ids.dtype.kind != "U"
        or vectors.shape != (count, dim)
        or vectors.dtype != np.dtype(dtype)
        or ids.shape[0] != count
        or norms.shape != (count,)
        or norms.dtype.kind != "f"
    ):
        raise IntegrityError(
            f"{path}: arrays do not match the set's metadata "
            f"(expected {count}x{dim} {dtype}, found {vectors.shape} {vectors.dtype})"
        )
    return arrays


def _load(fh: IO[bytes], path: Path) -> tuple[Array, Array, Array]:
    try:
        with np.load(fh, allow_pickle=False) as npz:
            ids, vectors, norms = (npz[m] for m in MEMBERS)
            return ids, vectors, norms
    except KeyError as exc:
        raise IntegrityError(f"{path}: missing array {exc}") from None
    except OSError as exc:
        raise io_error("reading", path, exc) from exc
    # a damaged .npy header can also fail numpy's header parser (tokenize / ast)
    except (zipfile.BadZipFile, ValueError, EOFError, SyntaxError, tokenize.TokenError) as exc:
        raise IntegrityError(f"{path}: damaged shard ({str(exc)[:120]})") from None


def open_shard(
    path: Path,
    *,
    count: int,
    dim: int,
    dtype: str,
    mmap: bool,
    sha256: str | None = None,
    size: int = 0,
) -> ShardArrays:
    """The shard's arrays, checked against the expected shape and dtype.

    The file is opened once, without following a link; with ``sha256`` its SHA-256 (and
    ``size``) is checked on that descriptor first, unless this process already checked the
    same file identity (``filecheck.VERIFIED``); ``sha256=None`` skips that check. Then
    ``mmap=True`` maps every member read-only in place from the same descriptor (nothing of
    the data is read; only the headers are parsed) and ``mmap=False`` reads through
    ``numpy.load``, whose zip layer also checks each member's CRC-32.
    """
    fd = _open(path)
    with os.fdopen(fd, "rb") as fh:
        ident = VERIFIED.check_fd(fd, path, sha256, size) if sha256 is not None else ()
        if mmap:
            members = _layout(fh, path)
            ids, vectors, norms = (_map(fh, path, members[m]) for m in MEMBERS)
        else:
            fh.seek(0)
            ids, vectors, norms = _load(fh, path)
    return _check(ShardArrays(ids, vectors, norms, ident), path, count, dim, dtype)


def read_ids(path: Path, count: int) -> Array:
    """Only the ``ids`` array (used for duplicate checks on append); mapped, not read."""
    with os.fdopen(_open(path), "rb") as fh:
        ids = _map(fh, path, _layout(fh, path)["ids"])
    if ids.ndim != 1 or ids.dtype.kind != "U" or ids.shape[0] != count:
        raise IntegrityError(f"{path}: ids do not match the set's metadata")
    return ids
