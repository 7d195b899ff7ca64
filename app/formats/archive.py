"""Context archives: a plain ``.tar.gz`` whose first member is ``manifest.json``.

Writing: the tar stream is built here (PAX headers, regular files only) and compressed into
a single gzip member, block by block on a small thread pool (pigz style: independent raw
deflate blocks ending in a sync flush concatenate into one valid deflate stream): text files
at deflate level 1, binary files (NPZ, model weights: floats that barely compress) stored at
level 0. The archive is written to a temp file beside the destination, fsync'd and
renamed, so a half-written archive never has the final name.

Reading trusts nothing: the manifest must come first and lists every file with its size and
SHA-256; only regular files and directories on the path of a listed file are accepted; absolute
paths, ``..``, odd characters, links (sym and hard), devices, FIFOs, sparse or contiguous
files, setuid/setgid/sticky bits, duplicates, unlisted members, too many members, too many
bytes, a compression ratio beyond the limit and checksum mismatches raise ``IntegrityError``.
``tarfile``'s own extraction is never used: each file is created here with
``O_CREAT | O_EXCL | O_NOFOLLOW`` below the destination directory, hashed while written, and
fsync'd. The work overlaps (each step releases the GIL): the gzip stream is inflated ahead on
a worker thread (``app.formats.gzstream``, which also stops a decompression bomb), each block
is hashed on a second worker while this thread writes it, and each finished file is fsync'd
on a third while the next one is written (all are fsync'd before ``read_archive`` returns).
This module knows tar and gzip, nothing of contexts.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import struct
import tarfile
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.core.atomic import atomic_file, fsync_dir, removed_on_failure
from app.core.errors import IntegrityError, StorageError, io_error
from app.formats.gzstream import Inflater

MANIFEST_NAME = "manifest.json"
BLOCK = 4 << 20
READ_CHUNK = 1 << 20
SYNC_AHEAD = 8
TEXT_SUFFIXES = (".json", ".jsonl", ".txt", ".csv", ".md")
COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,254}")
HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_DEPTH = 8
MAX_PATH = 512
_FORBIDDEN_MODE_BITS = 0o7000  # setuid, setgid, sticky


@dataclass(frozen=True)
class Limits:
    """What an archive may hold at most; anything beyond raises ``IntegrityError``."""

    max_members: int = 4096
    max_total_bytes: int = 256 << 30
    max_file_bytes: int = 64 << 30
    max_manifest_bytes: int = 16 << 20
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 16 << 20


@dataclass(frozen=True)
class Listed:
    """A file the manifest lists."""

    path: str
    size: int
    sha256: str


# -- paths ----------------------------------------------------------------------------------


def check_member_path(path: object) -> str:
    """Return ``path`` if it is a safe relative archive path, else raise ``IntegrityError``."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH:
        raise IntegrityError(f"archive: unsafe member path {str(path)[:80]!r}")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise IntegrityError(f"archive: unsafe member path {path[:80]!r} (absolute or odd)")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise IntegrityError(f"archive: member path {path[:80]!r} is too deep")
    for part in parts:
        if part in ("", ".", "..") or not COMPONENT.fullmatch(part):
            raise IntegrityError(f"archive: unsafe member path {path[:80]!r}")
    return path


def parse_listing(manifest: Mapping[str, Any], limits: Limits) -> dict[str, Listed]:
    """The ``files`` list of a manifest, checked: safe unique paths, sizes, hashes, limits."""
    files = manifest.get("files")
    if not isinstance(files, list):
        raise IntegrityError("archive: manifest has no file list")
    if len(files) + 1 > limits.max_members:
        raise IntegrityError(
            f"archive: manifest lists {len(files)} files (limit {limits.max_members - 1})"
        )
    listed: dict[str, Listed] = {}
    total = 0
    for entry in files:
        if not isinstance(entry, dict):
            raise IntegrityError("archive: malformed manifest file entry")
        path, size, digest = entry.get("path"), entry.get("size"), entry.get("sha256")
        check_member_path(path)
        assert isinstance(path, str)
        if path == MANIFEST_NAME or path in listed:
            raise IntegrityError(f"archive: manifest lists {path!r} twice")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise IntegrityError(f"archive: bad size for {path!r} in the manifest")
        if size > limits.max_file_bytes:
            raise IntegrityError(f"archive: {path!r} is larger than {limits.max_file_bytes} bytes")
        if not isinstance(digest, str) or not HEX64.fullmatch(digest):
            raise IntegrityError(f"archive: bad sha256 for {path!r} in the manifest")
        total += size
        listed[path] = Listed(path, size, digest)
    for path in listed:  # a file may not also be a directory of another listed file
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in listed:
                raise IntegrityError(f"archive: {path!r} lies under a listed file")
    if total > limits.max_total_bytes:
        raise IntegrityError(
            f"archive: manifest declares {total} bytes (limit {limits.max_total_bytes})"
        )
    return listed


# -- writing --------------------------------------------------------------------------------


def default_level(path: str) -> int:
    """Deflate level for a member: 1 for text, 0 (stored) for binary data."""
    return 1 if path.endswith(TEXT_SUFFIXES) else 0


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(mtime)
    info.type = tarfile.REGTYPE
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _segments(
    manifest: bytes, files: Sequence[tuple[str, Path]], level: Callable[[str], int]
) -> Iterator[tuple[bytes, int]]:
    """The tar stream cut into ``(bytes, deflate level)`` blocks of at most ~BLOCK bytes."""
    now = time.time()
    yield _header(MANIFEST_NAME, len(manifest), now) + manifest + _pad(len(manifest)), 1
    for name, path in files:
        check_member_path(name)
        lvl = level(name)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                pending = _header(name, size, now)
                left = size
                while left > 0:
                    chunk = fh.read(min(BLOCK, left))
                    if not chunk:
                        raise StorageError(f"{path}: file shrank while being archived")
                    left -= len(chunk)
                    pending += chunk
                    if left == 0:
                        pending += _pad(size)
                    yield pending, lvl
                    pending = b""
                if size == 0:
                    yield pending, lvl
        except OSError as exc:
            raise io_error("reading", path, exc) from exc
    end = 2 * tarfile.BLOCKSIZE
    yield b"\0" * end, 1


def _pad(size: int) -> bytes:
    rest = size % tarfile.BLOCKSIZE
    return b"\0" * (tarfile.BLOCKSIZE - rest) if rest else b""


def _deflate(data: bytes, level: int, last: bool) -> bytes:
    """One block as raw deflate; a non-final block ends byte-aligned (sync flush), so blocks
    compressed independently (and at different levels) concatenate into one deflate stream."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _lookahead(
    segments: Iterator[tuple[bytes, int]],
) -> Iterator[tuple[bytes, int, bool]]:
    prev = next(segments)
    for seg in segments:
        yield prev[0], prev[1], False
        prev = seg
    yield prev[0], prev[1], True


def write_archive(
    dest: Path,
    manifest: bytes,
    files: Sequence[tuple[str, Path]],
    *,
    level: Callable[[str], int] = default_level,
    threads: int = 2,
) -> int:
    """Write ``manifest`` then ``files`` (archive name, source path) to ``dest``; its size.

    The output is one gzip member (readable by every gzip and tar reader, stream mode
    included) whose deflate stream is compressed block by block on a thread pool, as pigz
    does. The archive appears under its final name only when complete and fsync'd.
    """
    if len(manifest) == 0:
        raise StorageError("archive: empty manifest")
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    crc = 0
    size = 0
    written = len(header)
    with atomic_file(dest) as out, ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        out.write(header)
        queue: deque[Future[bytes]] = deque()
        for data, lvl, last in _lookahead(_segments(manifest, files, level)):
            crc = zlib.crc32(data, crc)
            size += len(data)
            queue.append(pool.submit(_deflate, data, lvl, last))
            while len(queue) > 2 * threads:
                block = queue.popleft().result()
                out.write(block)
                written += len(block)
        while queue:
            block = queue.popleft().result()
            out.write(block)
            written += len(block)
        trailer = struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)
        out.write(trailer)
        written += len(trailer)
    return written


# -- reading --------------------------------------------------------------------------------


def _bomb_check(limits: Limits) -> Callable[[int, int], None]:
    """The check the inflater runs after every block: stops a compression bomb early."""

    def check(compressed: int, decompressed: int) -> None:
        if decompressed > limits.ratio_floor_bytes and decompressed > limits.max_ratio * max(
            compressed, 1
        ):
            raise IntegrityError(
                f"archive: compression ratio above {limits.max_ratio:g} (a decompression bomb?)"
            )
        if decompressed > limits.max_total_bytes + limits.max_manifest_bytes + (64 << 20):
            raise IntegrityError("archive: more data than the size limit allows")

    return check


def _check_member(member: tarfile.TarInfo) -> None:
    if member.mode & _FORBIDDEN_MODE_BITS:
        raise IntegrityError(f"archive: {member.name[:80]!r} has setuid/setgid/sticky bits")
    if member.issym() or member.islnk():
        raise IntegrityError(f"archive: {member.name[:80]!r} is a link")
    if member.isdev():
        raise IntegrityError(f"archive: {member.name[:80]!r} is a device or FIFO")
    if member.isdir():
        return
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.issparse():
        raise IntegrityError(f"archive: {member.name[:80]!r} is not a regular file")


class _Workers:
    """The extraction's helpers: ``hasher`` hashes a block while the reader writes it;
    ``sync`` fsyncs and closes a finished file on another thread while the next one is
    written (at most ``SYNC_AHEAD`` files pending, so few descriptors stay open); ``finish``
    waits for every fsync (its error is raised) before anything is reported done."""

    def __init__(self, hasher: Executor, syncer: Executor) -> None:
        self.hasher = hasher
        self._syncer = syncer
        self._pending: deque[Future[None]] = deque()

    def sync(self, fd: int, target: Path) -> None:
        while len(self._pending) >= SYNC_AHEAD:
            self._pending.popleft().result()
        self._pending.append(self._syncer.submit(_fsync_close, fd, target))

    def finish(self) -> None:
        while self._pending:
            self._pending.popleft().result()


def _fsync_close(fd: int, target: Path) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise io_error("extracting", target, exc) from exc
    finally:
        os.close(fd)


def _extract(
    tf: tarfile.TarFile, member: tarfile.TarInfo, listed: Listed, dest_dir: Path, work: _Workers
) -> None:
    """Write ``member`` to its place below ``dest_dir``, hashing each block on a worker
    while this thread writes it (hashlib and the write both release the GIL); once its size
    and SHA-256 match, the file is handed to ``work.sync`` (fsync, close)."""
    src = tf.extractfile(member)
    if src is None:
        raise IntegrityError(f"archive: {listed.path!r} has no data")
    target = dest_dir.joinpath(*listed.path.split("/"))
    parent = target.parent
    digest = hashlib.sha256()
    size = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, flags, 0o644)
    except OSError as exc:
        raise io_error("extracting", target, exc) from exc
    hashing: Future[None] | None = None
    handed = False
    try:
        with removed_on_failure(target, "extracting"):
            while chunk := src.read(READ_CHUNK):
                size += len(chunk)
                if size > listed.size:
                    raise IntegrityError(f"archive: {listed.path!r} is larger than listed")
                if hashing is not None:
                    hashing.result()
                hashing = work.hasher.submit(digest.update, chunk)
                _write_all(fd, chunk)
            if hashing is not None:
                hashing.result()
                hashing = None
        if size != listed.size:
            raise IntegrityError(f"archive: {listed.path!r} has {size} bytes, listed {listed.size}")
        if digest.hexdigest() != listed.sha256:
            raise IntegrityError(f"archive: checksum mismatch for {listed.path!r}")
        work.sync(fd, target)
        handed = True
    finally:
        if not handed:
            os.close(fd)  # a hash still running works on its own bytes, not on the file


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_archive(src: Path, dest_dir: Path, *, limits: Limits | None = None) -> dict[str, Any]:
    """Check ``src`` member by member and extract its listed files below ``dest_dir``.

    ``dest_dir`` must be an empty directory the caller owns (and removes on failure). Returns
    the parsed manifest (a dict with at least a checked ``files`` list). Nothing is written
    outside ``dest_dir``; every extracted file has been size- and hash-checked when this
    returns.
    """
    lim = limits or Limits()
    try:
        raw = open(src, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise io_error("opening", src, exc) from exc
    try:
        if os.fstat(raw.fileno()).st_size == 0:
            raise IntegrityError(f"{src}: empty file, not a ctxstore archive")
        try:
            with (
                Inflater(raw, _bomb_check(lim)) as reader,
                ThreadPoolExecutor(1, thread_name_prefix="ctxstore-hash") as hasher,
                ThreadPoolExecutor(1, thread_name_prefix="ctxstore-fsync") as syncer,
            ):
                return _read_members(reader, dest_dir, lim, src, _Workers(hasher, syncer))
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise IntegrityError(f"{src}: not a valid tar.gz archive ({exc})") from None
        except UnicodeDecodeError:
            raise IntegrityError(f"{src}: archive member names are not UTF-8") from None
        except OSError as exc:  # writing the extracted files (disk full, I/O error)
            raise io_error("extracting", src, exc) from exc
    finally:
        raw.close()


def _read_members(
    reader: Inflater, dest_dir: Path, lim: Limits, src: Path, work: _Workers
) -> dict[str, Any]:
    with tarfile.open(
        fileobj=reader, mode="r|", encoding="utf-8", errors="strict", bufsize=READ_CHUNK
    ) as tf:
        it = iter(tf)
        first = next(it, None)
        if first is None or first.name != MANIFEST_NAME:
            raise IntegrityError(f"{src}: {MANIFEST_NAME} is not the first member")
        _check_member(first)
        if not first.isreg() or first.size > lim.max_manifest_bytes:
            raise IntegrityError(f"{src}: {MANIFEST_NAME} is not a small regular file")
        fh = tf.extractfile(first)
        assert fh is not None
        try:
            manifest = orjson.loads(fh.read())
        except orjson.JSONDecodeError:
            raise IntegrityError(f"{src}: {MANIFEST_NAME} is not valid JSON") from None
        if not isinstance(manifest, dict):
            raise IntegrityError(f"{src}: {MANIFEST_NAME} is not a JSON object")
        listed = parse_listing(manifest, lim)
        dirs = {"/".join(p.split("/")[:i]) for p in listed for i in range(1, p.count("/") + 1)}
        _free_space(dest_dir, sum(f.size for f in listed.values()))
        seen: set[str] = {MANIFEST_NAME}
        members = 1
        for member in it:
            members += 1
            if members > lim.max_members:
                raise IntegrityError(f"{src}: more than {lim.max_members} members")
            name = member.name
            check_member_path(name)
            _check_member(member)
            if member.isdir():
                if name not in dirs:
                    raise IntegrityError(f"{src}: directory {name!r} is not in the manifest")
                continue
            if name in seen:
                raise IntegrityError(f"{src}: duplicate member {name!r}")
            seen.add(name)
            entry = listed.get(name)
            if entry is None:
                raise IntegrityError(f"{src}: member {name!r} is not in the manifest")
            if member.size != entry.size:
                raise IntegrityError(
                    f"{src}: {name!r} has {member.size} bytes, the manifest says {entry.size}"
                )
            _extract(tf, member, entry, dest_dir, work)
        missing = sorted(set(listed) - seen)
        if missing:
            raise IntegrityError(f"{src}: listed files missing from the archive: {missing[:5]}")
    while reader.read(READ_CHUNK):  # the gzip stream to its end: its framing is checked too
        pass  # (a CRC, junk after the last member), as a plain gzip read would
    work.finish()  # every extracted file fsync'd (an fsync error raised here)
    for d in sorted({dest_dir.joinpath(*p.split("/")).parent for p in listed}):
        fsync_dir(d)
    return manifest


def _free_space(dest_dir: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(dest_dir).free
    except OSError:
        return
    if needed > free:
        raise StorageError(
            f"{dest_dir}: the archive needs {needed} bytes, only {free} free", errno=28
        )


__all__ = [
    "MANIFEST_NAME",
    "Limits",
    "Listed",
    "check_member_path",
    "parse_listing",
    "read_archive",
    "write_archive",
]
