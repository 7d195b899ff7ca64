"""File-system helpers of whole-context transfer: snapshot copies (hard links for files that
are only ever replaced by rename), copies and hashing. Staging folders and putting a staged
context in place belong to the store (``ContextHost.staging`` / ``install``).

Nothing here follows a symbolic link (``app.core.nofollow``): a link anywhere in a context
that is exported, merged into or overwritten is damage (``IntegrityError`` naming it). The
hashes export computes for its manifest are compared with the SHA-256 each embedding shard
and model file has on record, so an export never packs a damaged file (its archive would
fail its own import).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from app.backends.local import LocalFileStore
from app.core.atomic import write_atomic
from app.core.errors import IntegrityError, InvalidInput, io_error
from app.core.nofollow import exists_as, open_regular, tree_files
from app.managers.parts import ContextPart, PartContext, parts

HASH_CHUNK = 4 << 20


def sha256_file(path: Path) -> tuple[int, str]:
    """``(size, sha256)`` of the regular file ``path`` (never through a link), read in big
    buffers with ``readinto`` so that hashlib releases the GIL while it hashes."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    try:
        fd = open_regular(path)
    except FileNotFoundError as exc:
        raise io_error("reading", path, exc) from exc
    try:
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as fh:
            size = 0
            while n := fh.readinto(view):
                digest.update(view[:n])
                size += n
    except OSError as exc:
        raise io_error("reading", path, exc) from exc
    finally:
        view.release()
        os.close(fd)
    return size, digest.hexdigest()


def hash_files(
    paths: Sequence[Path],
    threads: int = 2,
    *,
    expected: Mapping[Path, tuple[int, str]] | None = None,
) -> list[tuple[int, str]]:
    """``(size, sha256)`` of each path, hashed on a small thread pool (hashlib drops the GIL).
    A path in ``expected`` must be among ``paths`` and have that ``(size, sha256)``:
    otherwise ``IntegrityError`` naming it (the file is missing or damaged; nothing may be
    written from it)."""
    want = expected or {}
    missing = sorted(set(want) - set(paths))
    if missing:
        raise IntegrityError(
            f"{missing[0]}: on record but missing (refusing to write an archive that would "
            "not import)" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
        )

    def one(p: Path) -> tuple[int, str]:
        got = sha256_file(p)
        record = want.get(p)
        if record is not None and got != record:
            what = "size" if got[0] != record[0] else "SHA-256"
            raise IntegrityError(
                f"{p}: {what} differs from the store's record (the file is damaged; "
                "refusing to write an archive that would not import)"
            )
        return got

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(one, paths))


def recorded_digests(root: Path) -> dict[Path, tuple[int, str]]:
    """``(size, sha256)`` on record for every file of every part of the context (or staged
    copy) at ``root`` (``ContextPart.recorded_files``: read from the parts' checksummed
    records); damaged records raise ``IntegrityError`` naming them."""
    out: dict[Path, tuple[int, str]] = {}
    for part in parts():
        folder = root / part.folder
        for rel, record in part.recorded_files(folder).items():
            out[folder / rel] = record
    return out


def relative_files(root: Path) -> list[str]:
    """Regular files below ``root`` as sorted POSIX relative paths, skipping dot names
    (locks, temp files); a link or special file raises ``IntegrityError`` naming it."""
    return tree_files(root)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same file system), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        copy_file(src, dst)


def snapshot_tree(src: Path, dst: Path) -> list[str]:
    """Link every file of ``src`` into ``dst`` (files there are only ever replaced by
    rename, so a link is a consistent snapshot); returns their relative paths. ``src`` or
    anything below it being a symbolic link (or ``src`` a file) is damage."""
    files = relative_files(src) if exists_as(src, "dir") else []
    for rel in files:
        link_or_copy(src / rel, dst / rel)
    return files


def is_local_part(ctx: PartContext, part: ContextPart[Any]) -> bool:
    """Whether the part's files of ``ctx`` are the embedded part folder ``ctx.path/<folder>``
    (then a hard-link snapshot of the folder is the consistent copy): the backend's file
    store is the embedded one, or the backend keeps no files for the part (a part registered
    by a plug-in works in its folder)."""
    try:
        return isinstance(ctx.backend.files(ctx.name, part.folder), LocalFileStore)
    except InvalidInput:
        return True


def copy_part(ctx: PartContext, part: ContextPart[Any], dest: Path) -> list[str]:
    """Copy ``part`` of ``ctx`` into ``dest`` in the embedded layout (``<item>/<file>``) and
    return the copied paths, sorted: a hard-link snapshot of the part folder on the embedded
    backend; otherwise every item's documents and files read through the part's stores (files
    verified into the local cache first: ``FileStore.local_path``). The caller holds the
    context's writer lock."""
    if is_local_part(ctx, part):
        return snapshot_tree(ctx.path / part.folder, dest)
    files = ctx.backend.files(ctx.name, part.folder)
    meta = ctx.backend.meta(ctx.name, part.folder)
    out: list[str] = []
    for item in meta.items():
        for name in meta.names(item):
            data = meta.read(f"{item}/{name}")
            if data is not None:  # deleted meanwhile
                (dest / item).mkdir(parents=True, exist_ok=True)
                write_atomic(dest / item / name, data)
                out.append(f"{item}/{name}")
        for key in files.list(item):
            link_or_copy(files.local_path(key), dest / key)
            out.append(key)
    return sorted(out)


def part_present(ctx: PartContext, part: ContextPart[Any]) -> bool:
    """Whether ``ctx`` holds ``part``: its folder (embedded), or any item in its stores."""
    if (ctx.path / part.folder).is_dir():
        return True
    return not is_local_part(ctx, part) and bool(ctx.backend.meta(ctx.name, part.folder).items())


def copy_file(src: Path, dst: Path) -> None:
    """Copy the regular file ``src`` (never through a link) to ``dst``."""
    try:
        fd = open_regular(src)
    except FileNotFoundError as exc:
        raise io_error("copying", src, exc) from exc
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(fd, "rb", closefd=False) as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, HASH_CHUNK)
    except OSError as exc:
        raise io_error("copying", src, exc) from exc
    finally:
        os.close(fd)


__all__ = [
    "copy_file",
    "copy_part",
    "hash_files",
    "is_local_part",
    "link_or_copy",
    "part_present",
    "recorded_digests",
    "relative_files",
    "sha256_file",
    "snapshot_tree",
]
