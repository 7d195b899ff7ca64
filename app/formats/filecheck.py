"""SHA-256 checks remembered per process by file identity (docs/api.md, "Guarantees").

A file the store wrote is never changed in place (every write is a new file renamed over the
old one), so a file whose identity -- device, inode, size, mtime_ns and ctime_ns -- is the
same as when its SHA-256 last matched still holds the same bytes, unless the disk itself
changed them underneath the file system (bit rot: ``verify`` always re-hashes and finds it).
Any write through the file system changes ``ctime``, so a file damaged after the first
check (in place, even with its ``mtime`` restored) is hashed again on its next open.

File timestamps are coarse (a kernel tick; whole seconds on some file systems), so a file
written in the same tick as it was hashed could change without changing its identity. As
git does for "racily clean" files, an identity is remembered only when its ``ctime`` is
older than the start of the hash by more than the timestamp granularity (``racy_margin``):
a file younger than that is hashed again on every open, for that short while.

``VERIFIED`` is the process-wide, bounded, thread-safe record of identities whose SHA-256
matched; ``check_fd`` hashes the very descriptor that the caller then reads or maps, so no
other file can be swapped in between. Hashing goes through ``hashio.sha256_fd`` (one mapped
buffer: hashlib releases the GIL, so other threads keep running).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from app.core.errors import IntegrityError, io_error
from app.formats.hashio import sha256_fd

Ident = tuple[int, int, int, int, int]
MAX_ENTRIES = 4096
FINE_MARGIN_NS = 50_000_000  # nanosecond timestamps: a kernel tick is at most ~10 ms
COARSE_MARGIN_NS = 2_000_000_000  # whole-second timestamps (ext3, HFS+; FAT has 2 s)


def identity(st: os.stat_result) -> Ident:
    """What identifies one version of a file: device, inode, size, mtime_ns, ctime_ns."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def racy_margin(ctime_ns: int) -> int:
    """How much older than the hash a ``ctime`` must be to trust the identity later: a
    timestamp on a whole second suggests a file system with coarse timestamps."""
    return COARSE_MARGIN_NS if ctime_ns % 1_000_000_000 == 0 else FINE_MARGIN_NS


class VerifiedFiles:
    """Identities (with the digest they matched) whose SHA-256 was checked by this process."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._seen: OrderedDict[tuple[Ident, str], None] = OrderedDict()
        self._guard = threading.Lock()

    def __len__(self) -> int:
        with self._guard:
            return len(self._seen)

    def known(self, ident: Ident, sha256: str) -> bool:
        key = (ident, sha256)
        with self._guard:
            if key in self._seen:
                self._seen.move_to_end(key)
                return True
        return False

    def remember(self, ident: Ident, sha256: str) -> None:
        with self._guard:
            self._seen[(ident, sha256)] = None
            self._seen.move_to_end((ident, sha256))
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)

    def clear(self) -> None:
        """Forget every check (tests; or to force re-hashing after a suspected disk fault)."""
        with self._guard:
            self._seen.clear()

    def check_fd(self, fd: int, path: Path, sha256: str, size: int) -> Ident:
        """Check the file open at ``fd`` against its recorded size and SHA-256, hashing only
        when this identity was not checked before; returns its identity. A mismatch (or a
        file changing while hashed) raises ``IntegrityError`` naming ``path``."""
        started = time.time_ns()
        try:
            ident = identity(os.fstat(fd))
            if ident[2] != size:
                raise IntegrityError(f"{path}: size {ident[2]} differs from the recorded {size}")
            if self.known(ident, sha256):
                return ident
            digest = sha256_fd(fd)
            after = identity(os.fstat(fd))
        except OSError as exc:
            raise io_error("reading", path, exc) from exc
        if digest != sha256:
            raise IntegrityError(f"{path}: SHA-256 mismatch (the file is damaged)")
        if after != ident:
            raise IntegrityError(f"{path}: changed while being checked (files are never rewritten)")
        if ident[4] + racy_margin(ident[4]) < started:  # else it might change unseen
            self.remember(ident, sha256)
        return ident


VERIFIED = VerifiedFiles()
