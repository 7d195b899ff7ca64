"""Name validation: runs before any path is built and can never be disabled."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.errors import InvalidInput

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def is_valid_name(name: object) -> bool:
    """True when ``name`` may be used as a context, collection, embedding or model name."""
    return (
        isinstance(name, str)
        and NAME_PATTERN.fullmatch(name) is not None
        and name not in (".", "..")
    )


def name_problem(name: object) -> str:
    """Why ``name`` is refused (the message of the name rule, without the argument)."""
    shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
    return (
        f"{shown} is not a valid name "
        "(1-64 chars of letters, digits, '_', '.', '-', starting with a letter or digit)"
    )


def check_name(name: object, argument: str = "name") -> str:
    """Return ``name`` if valid, else raise ``InvalidInput`` naming ``argument``."""
    if not is_valid_name(name):
        raise InvalidInput(f"{argument}: {name_problem(name)}", argument=argument)
    assert isinstance(name, str)
    return name


def child(parent: Path, name: str, argument: str = "name", suffix: str = "") -> Path:
    """``parent / (name + suffix)`` after validating ``name``: the only way names become paths."""
    return parent / (check_name(name, argument) + suffix)
