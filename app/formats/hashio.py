"""Hashing I/O helpers shared by the artefact formats: a writer that computes the SHA-256 of
everything written (on a second thread, so hashing overlaps the write), a fast file digest, and
JSON documents carrying their own checksum."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mmap
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from typing_extensions import Buffer

from app.core.errors import IntegrityError, SchemaVersionError
from app.core.rules import METADATA, check
from app.formats.writeback import Kicker

PARALLEL_MIN = 1 << 20  # buffers at least this large are hashed on the worker thread


class HashingWriter(io.RawIOBase):
    """Write-only, non-seekable stream over ``raw`` that hashes what passes through.

    Large buffers are hashed on a worker thread while this thread writes them (hashlib and
    file writes both release the GIL). With ``immutable=True`` the caller promises that every
    buffer stays alive and unchanged until ``hexdigest()``: writes then return without waiting
    for the hash. Otherwise each write waits, because the caller may reuse its buffer.
    ``writeback``: after each large write, the worker starts writing the new pages back to
    the device (``app.formats.writeback``) so that the final ``fsync`` has little left to do.
    """

    def __init__(self, raw: IO[bytes], *, immutable: bool = False, writeback: bool = False) -> None:
        super().__init__()
        self._raw = raw
        self._hash = hashlib.sha256()
        self._pos = 0
        self._immutable = immutable
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._keep: list[Buffer] = []
        self._kicker: Kicker | None = None
        if writeback:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                self._kicker = Kicker(raw.fileno())  # none for a stream without a file

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def write(self, b: Buffer) -> int:
        view = memoryview(b).cast("B")
        n = view.nbytes
        if n < PARALLEL_MIN:
            data = bytes(view)
            self._drain()
            self._hash.update(data)
            self._raw.write(data)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="ctxstore-sha")
            self._pending.append(self._pool.submit(self._hash.update, view))
            if self._immutable:
                self._keep.append(view)
                self._raw.write(view)
            else:
                try:
                    self._raw.write(view)
                finally:
                    self._drain()
            if self._kicker is not None:  # on the worker: never blocks this thread
                self._raw.flush()
                self._pending.append(self._pool.submit(self._kicker.written, self._pos + n))
        self._pos += n
        return n

    def _drain(self) -> None:
        for future in self._pending:
            future.result()
        self._pending.clear()

    def hexdigest(self) -> str:
        self._drain()
        self._keep.clear()
        return self._hash.hexdigest()

    def flush(self) -> None:
        if not self._raw.closed:
            self._raw.flush()

    def close(self) -> None:
        try:
            self._drain()
        finally:
            self._keep.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            super().close()


def _read_fd(fd: int) -> bytes:
    with open(os.dup(fd), "rb") as fh:
        fh.seek(0)
        return fh.read()


@contextlib.contextmanager
def _view(fd: int) -> Iterator[memoryview]:
    """The file at ``fd`` as a read-only buffer: mapped (populated) when possible."""
    size = os.fstat(fd).st_size
    mapped: mmap.mmap | None = None
    if size:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            mapped = mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ)
    view = memoryview(mapped if mapped is not None else _read_fd(fd) if size else b"")
    try:
        yield view
    finally:
        view.release()
        if mapped is not None:
            mapped.close()


def _hex(data: Buffer) -> str:
    return hashlib.sha256(data).hexdigest()


def _pieces(view: memoryview, chunk: int) -> list[memoryview]:
    return [view[i : i + chunk] for i in range(0, view.nbytes, chunk)] or [view[0:0]]


def sha256_fd(fd: int) -> str:
    """SHA-256 of the whole file open at ``fd``."""
    with _view(fd) as view:
        return _hex(view)


def chunk_digests_fd(fd: int, chunk: int) -> list[str]:
    """SHA-256 of each ``chunk``-byte piece of the file at ``fd``, on two threads: checking
    them all checks every byte in about half the time of one SHA-256 pass."""
    with _view(fd) as view, ThreadPoolExecutor(2, thread_name_prefix="ctxstore-sha") as pool:
        pieces = _pieces(view, chunk)
        try:
            return list(pool.map(_hex, pieces))
        finally:
            for piece in pieces:
                piece.release()


def chunk_digests(data: bytes, chunk: int) -> list[str]:
    view = memoryview(data)
    return [hashlib.sha256(view[i : i + chunk]).hexdigest() for i in range(0, len(data), chunk)]


# -- JSON documents with an embedded checksum ------------------------------------------------


def _reject_constant(value: str) -> Any:
    raise ValueError(f"non-finite number {value}")


def canonical_json(value: object) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def plain_json(value: object, argument: str) -> dict[str, Any]:
    """A deep copy of ``value`` as plain JSON data (``{}`` for ``None``); ``InvalidInput``
    naming ``argument`` unless it keeps the ``Metadata`` rule of ``app.core.rules`` (a
    mapping with string keys holding strict JSON, no NaN/Infinity)."""
    check(METADATA, value, argument)
    if value is None:
        return {}
    assert isinstance(value, Mapping)
    out: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    return out


def dump_checked(doc: Mapping[str, Any]) -> bytes:
    """``doc`` as readable JSON with a ``checksum`` member over its canonical form."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    body["checksum"] = hashlib.sha256(canonical_json(body)).hexdigest()
    return json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def parse_checked(data: bytes, path: Path) -> dict[str, Any]:
    """Parse a document written by ``dump_checked``; ``IntegrityError`` naming ``path`` if it
    is not valid JSON or its checksum does not match."""
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IntegrityError(f"{path}: damaged JSON ({str(exc)[:120]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("checksum"), str):
        raise IntegrityError(f"{path}: damaged metadata (no checksum)")
    stored = doc.pop("checksum")
    if hashlib.sha256(canonical_json(doc)).hexdigest() != stored:
        raise IntegrityError(f"{path}: checksum mismatch (the file is damaged)")
    return doc


def check_document(doc: Mapping[str, Any], path: Path, document: str, version: int) -> None:
    """The header of a checked JSON document: its kind and a format version this ctxstore
    reads (``IntegrityError`` for a damaged header, ``SchemaVersionError`` for a newer one)."""
    if doc.get("document") != document:
        raise IntegrityError(f"{path}: not a {document} document")
    found = doc.get("format_version")
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise IntegrityError(f"{path}: bad format_version")
    if found > version:
        raise SchemaVersionError(
            f"{path}: {document} format {found} is unknown (this ctxstore reads {version})"
        )
