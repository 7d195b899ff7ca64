"""Nothing inside a store follows a symbolic link (docs/api.md, "Guarantees"): the one place
that checks.

Every file and folder a store consists of (context folders, logs, indexes, ``context.json``,
part folders, embedding shards, model files, their records) must be exactly what it should
be: a real directory or a regular file, never a symbolic link, never a file where a folder
belongs (or the reverse), never a device or FIFO. Anything else is damage: the read raises
``IntegrityError`` naming the path, ``verify`` and ``stats`` report it.

The checks use ``lstat``, ``os.scandir`` entries (``follow_symlinks=False``) and
``O_NOFOLLOW``: a link is seen as a link and never traversed. A missing path is not damage
here; callers decide what absence means. Other ``OSError`` (permission, I/O) becomes a
``StorageError`` keeping its errno, never damage.
"""

from __future__ import annotations

import errno as errno_codes
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from app.core.errors import IntegrityError, io_error

LINK = "is a symbolic link (nothing inside a store may be a link)"
# O_NONBLOCK: a FIFO planted where a file belongs must not block open() (it is refused by
# the fstat check); reads of regular files ignore the flag
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise io_error("inspecting", path, exc) from exc


def kind_problem(path: Path, st: os.stat_result, want: str) -> str | None:
    """Why ``st`` (an ``lstat`` of ``path``) is not a ``want`` (``"dir"`` or ``"file"``)."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return f"{path}: {LINK}"
    if want == "dir" and not stat.S_ISDIR(mode):
        return f"{path}: is not a directory (a folder of the store was replaced)"
    if want == "file" and not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        return f"{path}: is {what} (a file of the store was replaced)"
    return None


def lstat_as(path: Path, want: str) -> os.stat_result | None:
    """The ``lstat`` of ``path`` if it is a real ``want`` (``"dir"``/``"file"``), None if it
    is missing; ``IntegrityError`` if it is a link or of the wrong type."""
    st = _lstat(path)
    if st is None:
        return None
    problem = kind_problem(path, st, want)
    if problem:
        raise IntegrityError(problem)
    return st


def exists_as(path: Path, want: str) -> bool:
    """True if ``path`` is a real ``want`` (``"dir"``/``"file"``), False if it is missing;
    ``IntegrityError`` if it is a link or of the wrong type."""
    return lstat_as(path, want) is not None


def check_chain(base: Path, *names: str, last: str = "file") -> Path:
    """``base / names...`` after checking that ``base`` and every folder below it on the way
    is a real directory and the final component a real ``last`` (``"file"`` or ``"dir"``).
    Missing components are allowed (the path is returned; opening it will fail); a link or a
    component of the wrong type raises ``IntegrityError`` naming it."""
    path = base
    steps = [(base, "dir")]
    for i, name in enumerate(names):
        path = path / name
        steps.append((path, last if i == len(names) - 1 else "dir"))
    for step, want in steps:
        if not exists_as(step, want):
            break
    return path


def open_regular(path: Path) -> int:
    """A read-only descriptor of the regular file ``path``, opened without following a link
    (``O_NOFOLLOW``) and checked with ``fstat`` (a directory or device where the file belongs
    is damage). ``FileNotFoundError`` propagates: the caller says what a missing file means."""
    try:
        fd = os.open(path, _O_READ)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno_codes.ELOOP:
            raise IntegrityError(f"{path}: {LINK}") from None
        if exc.errno == errno_codes.ENOTDIR:
            raise IntegrityError(
                f"{path}: a folder on its path is not a directory (damaged layout)"
            ) from None
        raise io_error("opening", path, exc) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise IntegrityError(f"{path}: is {what} (a file of the store was replaced)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file ``path`` (see ``open_regular``)."""
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError as exc:
        raise io_error("reading", path, exc) from exc
    finally:
        os.close(fd)


def entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    """The entries of the real directory ``folder`` (none if it is missing), never following
    a link; ``IntegrityError`` if ``folder`` itself is a link or not a directory."""
    if not exists_as(folder, "dir"):
        return
    try:
        with os.scandir(folder) as it:
            items = list(it)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise io_error("listing", folder, exc) from exc
    yield from sorted(items, key=lambda e: e.name)


def link_problems(root: Path) -> list[str]:
    """Every symbolic link or special file at or below ``root`` (a real directory tree), each
    as a problem naming it; links are reported, never followed. Empty for a missing root."""
    st = _lstat(root)
    if st is None:
        return []
    problem = kind_problem(root, st, "dir")
    if problem:
        return [problem]
    problems: list[str] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise io_error("listing", folder, exc) from exc
        for entry in items:
            if entry.is_symlink():
                problems.append(f"{entry.path}: {LINK}")
            elif entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif not entry.is_file(follow_symlinks=False):
                problems.append(f"{entry.path}: is not a regular file or directory")
    return sorted(problems)


def refuse_links(root: Path) -> None:
    """``IntegrityError`` naming the first link (or special file) at or below ``root``."""
    problems = link_problems(root)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(problems[0] + more)


def tree_files(root: Path) -> list[str]:
    """Regular files below the real directory ``root`` as sorted POSIX relative paths, dot
    names (locks, temp files) skipped; a link or special file anywhere raises
    ``IntegrityError`` naming it (export refuses rather than packing something else)."""
    refuse_links(root)
    out: list[str] = []
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in entries(folder):
            if entry.name.startswith("."):
                continue
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), rel + "/"))
            else:
                out.append(rel)
    return sorted(out)


def tree_bytes(root: Path) -> int:
    """Sizes of the regular files at or below ``root`` (``lstat``; links not followed)."""
    st = _lstat(root)
    if st is None or stat.S_ISLNK(st.st_mode):
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    total = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise io_error("listing", folder, exc) from exc
    return total


def part_problems(root: Path, item: str, check: Callable[[Path], list[str]]) -> list[str]:
    """Problems of a part folder (``embeddings``, ``models``) of a context, sorted: the folder
    itself and the chain to it, every link below it, every entry where a folder belongs that is
    not one (``item`` names what it should be), and what ``check`` finds in each item folder.
    Links and dot names (temp files) are never entered."""
    try:
        check_chain(root.parent, root.name, last="dir")
        problems = link_problems(root)
        items = list(entries(root))
    except IntegrityError as exc:  # the context or part folder itself
        return [str(exc)]
    for entry in items:
        path = Path(entry.path)
        if entry.is_symlink() or entry.name.startswith("."):
            continue  # links are reported above
        if not entry.is_dir(follow_symlinks=False):
            problem = kind_problem(path, os.lstat(path), "dir")
            problems.append(f"{problem} ({item})" if problem else "")
            continue
        problems += check(path)
    return sorted(p for p in problems if p)
