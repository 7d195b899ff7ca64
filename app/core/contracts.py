"""Contract helpers: always-on input preconditions and switchable postconditions.

Three levels, from ``CTXSTORE_CONTRACTS`` (read once, at import):

- input-validation and security preconditions (``require``) raise ``InvalidInput`` naming the
  argument and are never disabled;
- ``ensure``: cheap postconditions (O(1), or O(size of the result) where the operation is
  already that) - on by default, off with ``CTXSTORE_CONTRACTS=off`` (``EXPENSIVE`` is their
  switch; the name is historical);
- ``ensure_full``: postconditions that cost O(n) extra work (re-reading a collection, listing a
  folder again) or sit on a per-item hot path (``AppendBuffer.record``) - only with
  ``CTXSTORE_CONTRACTS=full`` (tests and debugging). The bench reports the default overhead.

A postcondition states a promise the caller relies on (a receipt counts the batch, a search
returns at most k hits best first, compaction keeps every current record), not the line above it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import icontract

from app.core.errors import InvalidInput

F = TypeVar("F", bound=Callable[..., Any])

LEVEL: str = os.environ.get("CTXSTORE_CONTRACTS", "on").strip().lower()
EXPENSIVE: bool = LEVEL not in {"off", "0", "false", "no"}  # cheap postconditions on
FULL: bool = LEVEL == "full"  # O(n) postconditions too


def require(condition: Callable[..., bool], argument: str, message: str) -> Callable[[F], F]:
    """Always-on precondition; a failure raises ``InvalidInput("<argument>: <message>")``."""
    text = f"{argument}: {message}"

    def error() -> InvalidInput:
        return InvalidInput(text, argument=argument)

    decorator: Callable[[F], F] = icontract.require(condition, text, error=error)
    return decorator


def _violation(description: str) -> Callable[[], icontract.ViolationError]:
    """The error of a broken postcondition: its description only, never the values (a
    100k-record batch or a user's records would be printed otherwise)."""

    def error() -> icontract.ViolationError:
        return icontract.ViolationError(f"postcondition violated: {description}")

    return error


def ensure(condition: Callable[..., bool], description: str) -> Callable[[F], F]:
    """Postcondition guarding the library's own promise; off with ``CTXSTORE_CONTRACTS=off``."""
    decorator: Callable[[F], F] = icontract.ensure(
        condition, description, enabled=EXPENSIVE, error=_violation(description)
    )
    return decorator


def ensure_full(condition: Callable[..., bool], description: str) -> Callable[[F], F]:
    """Postcondition costing O(n) (or on a per-item hot path): only with
    ``CTXSTORE_CONTRACTS=full``."""
    decorator: Callable[[F], F] = icontract.ensure(
        condition, description, enabled=FULL, error=_violation(description)
    )
    return decorator


T = TypeVar("T", bound=type)


def invariant(
    condition: Callable[..., bool], description: str, *, full: bool = False
) -> Callable[[T], T]:
    """Class invariant: a promise about the object's own state, checked around every public
    call (keep it O(1)); off with ``CTXSTORE_CONTRACTS=off``, ``full=True``: only at ``full``."""
    decorator: Callable[[T], T] = icontract.invariant(
        condition,
        description,
        enabled=FULL if full else EXPENSIVE,
        error=lambda self: icontract.ViolationError(f"invariant violated: {description}"),
    )
    return decorator


def is_non_negative_int(value: object) -> bool:
    """An int in ``[0, 2**63)``: every count, limit and offset must fit SQLite's integers."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
