"""The files a context folder must hold, checked before the context is used.

Damage to one context's files (a log or the index replaced by a folder or a link, a missing or
unreadable ``context.json``) must make that context raise ``IntegrityError`` naming the file
when it is used, and be listed by ``verify`` -- never stop the store from opening, and never be
reported as an I/O error. The checks are ``lstat`` calls only (links are not followed).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from app.core import layout
from app.core.errors import IntegrityError, io_error
from app.core.names import is_valid_name


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def layout_problems(folder: Path, name: str) -> list[str]:
    """What is wrong with the files of the context in ``folder`` (empty when nothing)."""
    if os.path.islink(folder):  # never read a context through a link (docs/api.md, Guarantees)
        return [f"{folder}: the context folder is a symbolic link"]
    problems: list[str] = []
    catalog = layout.catalog(folder)
    try:
        st = os.lstat(catalog)
    except FileNotFoundError:
        problems.append(f"{catalog}: context description missing")
    except OSError as exc:
        raise io_error("reading", catalog, exc) from exc
    else:
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{catalog}: context description is {_kind(st.st_mode)}")
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise io_error("listing", folder, exc) from exc
    for entry in entries:
        is_log = is_valid_name(layout.collection_of(entry.name))
        if not (is_log or entry.name == layout.index_name(name)):
            continue
        mode = entry.stat(follow_symlinks=False).st_mode
        if not stat.S_ISREG(mode):
            what = "log" if is_log else "index"
            problems.append(f"{entry.path}: the {what} is {_kind(mode)}")
    return sorted(problems)


def is_context_folder(folder: Path) -> bool:
    """True for a context's folder: it has a ``context.json`` or any file that is not a dot
    file (a folder holding nothing else is a context whose creation never finished); a link
    where a context folder belongs is listed too (as a damaged context)."""
    if os.path.islink(folder) or os.path.lexists(layout.catalog(folder)):
        return True
    try:
        return any(not e.name.startswith(".") for e in os.scandir(folder))
    except OSError:
        return False


def check_layout(folder: Path, name: str) -> None:
    """``IntegrityError`` naming the first damaged file of the context in ``folder``."""
    problems = layout_problems(folder, name)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(problems[0] + more)
