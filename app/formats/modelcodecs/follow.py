"""Hashing a file while another writer fills it (docs/api.md, "Models").

torch's own (C++) zip writer writes a ``.pth`` file strictly sequentially and refuses any
out-of-order write, so the file can be hashed as it grows: ``Follower`` reads each new stretch
once (from the page cache) and feeds it to the whole-file SHA-256 on its own thread and to
the per-piece SHA-256s (``hashio.PieceDigests``) on a second thread, and starts the
write-back of every stretch it has read (``app.formats.writeback``). When the writer closes,
the digests are done but for the last stretch: one pass over the bytes, overlapping the
write, instead of a hash after the write.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from app.formats.hashio import PieceDigests
from app.formats.writeback import Kicker

READ = 4 << 20  # bytes read at a time
AHEAD = 8  # stretches the piece thread may lag behind (bounds the memory held: 32 MiB)


class Follower:
    """Follow the file open at ``fd`` (a descriptor of its own, which the caller keeps open
    until ``result`` returned) as another writer appends to it."""

    def __init__(self, fd: int, chunk: int, poll: float = 0.002) -> None:
        self._fd = fd
        self._chunk = chunk
        self._poll = poll
        self._done = threading.Event()

    def finished(self) -> None:
        """The writer has closed the file: ``run`` hashes what is left and returns."""
        self._done.set()

    def run(self) -> tuple[str, int, list[str]]:
        """``(SHA-256, bytes hashed, SHA-256 of each chunk-byte piece)``: call on a worker
        thread, then ``finished()`` once the writer closed."""
        whole = hashlib.sha256()
        pieces = PieceDigests(self._chunk)
        kicker = Kicker(self._fd)
        pending: deque[Future[None]] = deque()
        pos = 0
        with ThreadPoolExecutor(1, thread_name_prefix="ctxstore-sha") as pool:
            try:
                while True:
                    finished = self._done.is_set()
                    size = os.fstat(self._fd).st_size
                    while pos < size:
                        data = os.pread(self._fd, min(READ, size - pos), pos)
                        if not data:
                            break
                        pending.append(pool.submit(pieces.update, data))
                        whole.update(data)
                        pos += len(data)
                        kicker.written(pos)
                        while len(pending) > AHEAD:
                            pending.popleft().result()
                    if finished:
                        break
                    time.sleep(self._poll)
            finally:
                while pending:
                    pending.popleft().result()
        return whole.hexdigest(), pos, pieces.digests()
