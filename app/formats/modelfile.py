"""Model files: ``.pth`` (PyTorch ``state_dict`` / mapping of tensors) and ``.joblib`` (any
other picklable object), written atomically with their SHA-256 computed on the way out, and
read back only after that SHA-256 has been checked.

* torch is imported lazily (``import app`` never imports it): a model can only be a torch
  object if the caller already imported torch, and reading a ``.pth`` imports it on demand.
* ``.pth`` is written by torch's own file writer while a second thread hashes the bytes
  already written (torch writes strictly sequentially); the record also keeps the SHA-256
  of each 8 MiB piece so that loading checks every byte on two threads. It is read with
  ``torch.load(weights_only=True)`` only, memory-mapped from the very file descriptor that
  was hashed (no window for the file to change in between).
* ``.joblib`` bytes are read once, hashed, and unpickled from that same buffer. Whether to
  unpickle at all (trust) is the caller's decision, made before ``load_joblib``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from app.core.atomic import atomic_file
from app.core.errors import (
    IntegrityError,
    InvalidInput,
    StorageError,
    UntrustedArtifactError,
    io_error,
)
from app.core.nofollow import open_regular, read_regular
from app.formats.hashio import HashingWriter, chunk_digests_fd, follow_sha256, sha256_fd

Format = Literal["pth", "joblib"]
_PROC_FD = Path("/proc/self/fd")
CHUNK = 8 << 20  # .pth files are also checked as SHA-256 digests of pieces of this size


@dataclass(frozen=True)
class Written:
    sha256: str
    size_bytes: int
    class_path: str
    parameter_count: int | None = None
    library_versions: dict[str, str] = field(default_factory=dict)
    chunks: list[str] = field(default_factory=list)  # SHA-256 of each CHUNK-byte piece


def _loaded_torch() -> ModuleType | None:
    return sys.modules.get("torch")


def import_torch() -> ModuleType:
    """torch, or a clear ``StorageError`` when it is not installed."""
    try:
        import torch
    except ImportError:
        raise StorageError(
            "reading a .pth model needs PyTorch: pip install 'ctxstore[torch]'"
        ) from None
    return torch


def _is_tensor_mapping(torch: ModuleType, model: object) -> bool:
    return (
        isinstance(model, Mapping)
        and len(model) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items())
    )


def classify(model: object) -> Format:
    """``"pth"`` for a ``torch.nn.Module`` or a non-empty mapping ``str -> Tensor``, else
    ``"joblib"``."""
    torch = _loaded_torch()
    if torch is not None and (
        isinstance(model, torch.nn.Module) or _is_tensor_mapping(torch, model)
    ):
        return "pth"
    return "joblib"


def class_path(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def write_pth(path: Path, model: Any) -> Written:
    """Save a module's ``state_dict`` (or a mapping of tensors) to ``path``."""
    torch = import_torch()
    if isinstance(model, torch.nn.Module):
        state = model.state_dict()
        count = sum(int(p.numel()) for p in model.parameters())
    else:
        state = model if isinstance(model, dict) else dict(model)
        count = sum(int(t.numel()) for t in state.values())
    versions = {"torch": str(torch.__version__)}
    if not _PROC_FD.is_dir():
        with atomic_file(path) as fh:
            writer = HashingWriter(fh)
            try:
                torch.save(state, writer)
                digest, size = writer.hexdigest(), writer.tell()
            finally:
                writer.close()
        return Written(digest, size, class_path(model), count, versions)
    # torch's own (C++) file writer on the temp file, followed by a thread hashing what it
    # has written so far; the per-piece digests are computed while atomic_file fsyncs
    with ThreadPoolExecutor(2, thread_name_prefix="ctxstore-sha") as pool:
        futures: list[Future[Any]] = []
        dup = -1
        try:
            with atomic_file(path) as fh:
                dup = os.dup(fh.fileno())
                done = threading.Event()
                futures.append(pool.submit(follow_sha256, dup, done))
                try:
                    torch.save(state, str(_PROC_FD / str(fh.fileno())))
                finally:
                    done.set()
                digest, size = futures[0].result()
                if size != os.fstat(dup).st_size:
                    raise StorageError(f"{path}: file changed while being hashed")
                futures.append(pool.submit(chunk_digests_fd, dup, CHUNK))
            chunks = futures[1].result()
        finally:
            for future in futures:  # never close ``dup`` under a running hash
                if not future.cancel():
                    future.exception()
            if dup >= 0:
                os.close(dup)
    return Written(digest, size, class_path(model), count, versions, chunks)


def write_joblib(path: Path, model: Any) -> Written:
    """Pickle ``model`` with joblib to ``path``; ``InvalidInput`` if it cannot be pickled."""
    import joblib

    versions = {"joblib": str(joblib.__version__)}
    top = type(model).__module__.split(".")[0]
    module = sys.modules.get(top)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        versions[top] = module.__version__
    try:
        with atomic_file(path) as fh:
            writer = HashingWriter(fh)
            try:
                joblib.dump(model, writer)
                digest, size = writer.hexdigest(), writer.tell()
            finally:
                writer.close()
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"model: cannot be pickled ({str(exc)[:160]})") from None
    return Written(digest, size, class_path(model), None, versions)


def _check_size(fd: int, path: Path, size: int) -> None:
    actual_size = os.fstat(fd).st_size
    if actual_size != size:
        raise IntegrityError(f"{path}: size {actual_size} differs from the recorded {size}")


def _check(fd: int, path: Path, sha256: str, size: int) -> None:
    _check_size(fd, path, size)
    if sha256_fd(fd) != sha256:
        raise IntegrityError(f"{path}: SHA-256 mismatch (the model file is damaged)")


def _torch_load(torch: ModuleType, source: Any, path: Path, mmap: bool) -> Any:
    try:
        return torch.load(source, weights_only=True, mmap=mmap, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UntrustedArtifactError(
            f"{path}: refused by the weights-only loader ({str(exc).splitlines()[0][:160]})"
        ) from None
    except (RuntimeError, ValueError, EOFError) as exc:
        raise IntegrityError(f"{path}: not a readable .pth file ({str(exc)[:160]})") from None


def read_pth(
    path: Path, sha256: str, size: int, chunks: list[str] | None = None, chunk_bytes: int = 0
) -> Any:
    """Check the file's SHA-256, then ``torch.load(weights_only=True)`` it. With ``chunks``
    (the SHA-256 of each ``chunk_bytes`` piece, recorded at save) the pieces are checked on
    two threads instead of one pass over the whole file: every byte is still checked."""
    try:
        fd = open_regular(path)  # never through a link
    except FileNotFoundError:
        raise IntegrityError(f"{path}: model file is missing") from None
    try:
        if _PROC_FD.is_dir():
            if chunks and chunk_bytes > 0:
                _check_size(fd, path, size)
                if chunk_digests_fd(fd, chunk_bytes) != chunks:
                    raise IntegrityError(f"{path}: SHA-256 mismatch (the model file is damaged)")
            else:
                _check(fd, path, sha256, size)
            torch = import_torch()
            # the hashed descriptor itself: mapped, not copied, and cannot be swapped
            return _torch_load(torch, str(_PROC_FD / str(fd)), path, mmap=True)
        with open(os.dup(fd), "rb") as fh:
            data = fh.read()
        _check_bytes(data, path, sha256, size)
        return _torch_load(import_torch(), io.BytesIO(data), path, mmap=False)
    finally:
        os.close(fd)


def _check_bytes(data: bytes, path: Path, sha256: str, size: int) -> None:
    if len(data) != size:
        raise IntegrityError(f"{path}: size {len(data)} differs from the recorded {size}")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise IntegrityError(f"{path}: SHA-256 mismatch (the model file is damaged)")


def read_verified(path: Path, sha256: str, size: int) -> bytes:
    """The file's bytes after checking their size and SHA-256."""
    try:
        data = read_regular(path)  # never through a link
    except FileNotFoundError:
        raise IntegrityError(f"{path}: model file is missing") from None
    _check_bytes(data, path, sha256, size)
    return data


def load_joblib(data: bytes, path: Path) -> Any:
    """Unpickle checked, trusted bytes (this runs code from the pickle: trust comes first)."""
    import joblib

    try:
        return joblib.load(io.BytesIO(data))
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise IntegrityError(f"{path}: not a readable .joblib file ({str(exc)[:160]})") from None


def verify_file(path: Path, sha256: str, size: int) -> str | None:
    """A problem naming ``path``, or None when its size and SHA-256 match."""
    try:
        fd = open_regular(path)  # I/O failures raise StorageError keeping the errno
    except FileNotFoundError:
        return f"{path}: model file is missing"
    except IntegrityError as exc:  # a link or a directory where the file belongs
        return str(exc)
    try:
        _check(fd, path, sha256, size)
    except IntegrityError as exc:
        return str(exc)
    except OSError as exc:
        raise io_error("reading", path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return None
