"""Hashing a file while another writer fills it (docs/api.md, "Models").

torch's own (C++) zip writer writes a ``.pth`` file strictly sequentially and refuses any
out-of-order write, so the file can be hashed as it grows: ``Follower`` reads each new stretch
once (from the page cache) into one reused buffer, feeds it to the SHA-256 and starts the
write-back of every stretch it has read (``app.formats.writeback``). When the writer closes,
the digest is done but for the last stretch: one pass over the bytes, overlapping the write,
instead of a hash after it.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

from app.formats.writeback import Kicker

READ = 4 << 20  # bytes read at a time


class Follower:
    """Follow the file open at ``fd`` (a descriptor of its own, which the caller keeps open
    until ``run`` returned) as another writer appends to it."""

    def __init__(self, fd: int, poll: float = 0.002) -> None:
        self._fd = fd
        self._poll = poll
        self._done = threading.Event()

    def finished(self) -> None:
        """The writer has closed the file: ``run`` hashes what is left and returns."""
        self._done.set()

    def run(self) -> tuple[str, int]:
        """``(SHA-256 hex, bytes hashed)``: call on a worker thread, then ``finished()`` once
        the writer closed."""
        digest = hashlib.sha256()
        kicker = Kicker(self._fd)
        buf = bytearray(READ)
        view = memoryview(buf)
        pos = 0
        try:
            while True:
                finished = self._done.is_set()
                size = os.fstat(self._fd).st_size
                while pos < size:
                    n = os.preadv(self._fd, [view[: min(READ, size - pos)]], pos)
                    if n <= 0:
                        break
                    digest.update(view[:n])
                    pos += n
                    kicker.written(pos)
                if finished:
                    return digest.hexdigest(), pos
                time.sleep(self._poll)
        finally:
            view.release()
