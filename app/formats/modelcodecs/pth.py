"""The ``pth`` codec: a torch ``state_dict`` (or mapping of tensors) saved by ``torch.save``
and read only with ``torch.load(weights_only=True)`` (docs/api.md, "Models").

* It is written by torch's own file writer while a second thread hashes the bytes already
  written (torch writes strictly sequentially): one SHA-256 pass, overlapping the write. The
  record keeps that digest only; records of versions saved before also list the SHA-256 of
  each ``CHUNK`` piece, and those are checked piece by piece on two threads.
* It is read memory-mapped from the very file descriptor that was hashed (no window for the
  file to change in between). No code from the file ever runs: ``runs_code`` is False.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from app.core.atomic import atomic_file
from app.core.errors import IntegrityError, StorageError, UntrustedArtifactError
from app.formats.hashio import HashingWriter
from app.formats.modelcodecs.codec import Recorded, Written
from app.formats.modelcodecs.follow import Follower
from app.formats.modelcodecs.hashing import (
    PROC_FD,
    class_path,
    open_verified,
    read_verified,
    write_hashed,
)
from app.formats.modelcodecs.tensors import fill, holds_tensors, import_torch, state_of

SUFFIX = "pth"


def _write_followed(path: Path, torch: ModuleType, state: Any) -> tuple[str, int]:
    """torch's own (C++) file writer on the temp file, followed by a thread hashing what it
    has written so far (``follow.Follower``): the SHA-256 is done when the write is."""
    with ThreadPoolExecutor(1, thread_name_prefix="ctxstore-follow") as pool:
        future: Future[tuple[str, int]] | None = None
        dup = -1
        try:
            with atomic_file(path) as fh:
                dup = os.dup(fh.fileno())
                follower = Follower(dup)
                future = pool.submit(follower.run)
                try:
                    torch.save(state, str(PROC_FD / str(fh.fileno())))
                finally:
                    follower.finished()
                digest, size = future.result()
                if size != os.fstat(dup).st_size:
                    raise StorageError(f"{path}: file changed while being hashed")
        finally:
            if future is not None and not future.cancel():  # never close ``dup`` under it
                future.exception()
            if dup >= 0:
                os.close(dup)
    return digest, size


def _torch_load(torch: ModuleType, source: Any, path: Path, mmap: bool) -> Any:
    try:
        return torch.load(source, weights_only=True, mmap=mmap, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UntrustedArtifactError(
            f"{path}: refused by the weights-only loader ({str(exc).splitlines()[0][:160]})"
        ) from None
    except (RuntimeError, ValueError, EOFError) as exc:
        raise IntegrityError(f"{path}: not a readable .pth file ({str(exc)[:160]})") from None


class PthCodec:
    """``.pth``: a module's ``state_dict`` or a mapping of tensors; picked by ``format=None``
    for exactly those."""

    suffix = SUFFIX
    runs_code = False
    precedence: int | None = 10
    chunked = False

    def can_save(self, model: object) -> bool:
        return holds_tensors(model)

    def write(self, path: Path, model: Any) -> Written:
        torch = import_torch(SUFFIX)
        state, count = state_of(torch, model)
        versions = {"torch": str(torch.__version__)}
        if not PROC_FD.is_dir():

            def dump(out: HashingWriter) -> None:
                torch.save(state, out)

            digest, size = write_hashed(path, dump)
        else:
            digest, size = _write_followed(path, torch, state)
        return Written(digest, size, class_path(model), count, versions)

    def read(self, path: Path, recorded: Recorded, *, into: Any, permit: Callable[[], None]) -> Any:
        if not PROC_FD.is_dir():  # no descriptor path to map: read, check, load the bytes
            data = read_verified(path, recorded.sha256, recorded.size_bytes)
            permit()
            torch = import_torch(SUFFIX)
            return fill(into, _torch_load(torch, io.BytesIO(data), path, mmap=False))
        fd = open_verified(path, recorded)
        try:
            permit()
            torch = import_torch(SUFFIX)
            # the hashed descriptor itself: mapped, not copied, and cannot be swapped
            state = _torch_load(torch, str(PROC_FD / str(fd)), path, mmap=True)
        finally:
            os.close(fd)
        return fill(into, state)


CODEC = PthCodec()
