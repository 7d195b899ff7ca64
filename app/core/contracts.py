"""Contract helpers: always-on input preconditions and switchable expensive checks.

Input-validation and security preconditions raise ``InvalidInput`` naming the argument and
can never be disabled. Expensive postconditions and invariants (``EXPENSIVE``) are switched off
with ``CTXSTORE_CONTRACTS=off``; the variable is read once, at import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import icontract

from app.core.errors import InvalidInput
from app.core.names import check_name

F = TypeVar("F", bound=Callable[..., Any])

EXPENSIVE: bool = os.environ.get("CTXSTORE_CONTRACTS", "on").strip().lower() not in {
    "off",
    "0",
    "false",
    "no",
}


def require(condition: Callable[..., bool], argument: str, message: str) -> Callable[[F], F]:
    """Always-on precondition; a failure raises ``InvalidInput("<argument>: <message>")``."""
    text = f"{argument}: {message}"

    def error() -> InvalidInput:
        return InvalidInput(text)

    decorator: Callable[[F], F] = icontract.require(condition, text, error=error)
    return decorator


def ensure(condition: Callable[..., bool], description: str) -> Callable[[F], F]:
    """Postcondition guarding the library's own promise; off with ``CTXSTORE_CONTRACTS=off``."""
    decorator: Callable[[F], F] = icontract.ensure(condition, description, enabled=EXPENSIVE)
    return decorator


def valid_name(value: object, argument: str) -> bool:
    """Condition helper: raises ``InvalidInput`` with the offending value, else True."""
    check_name(value, argument)
    return True


def is_non_negative_int(value: object) -> bool:
    """An int in ``[0, 2**63)``: every count, limit and offset must fit SQLite's integers."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
