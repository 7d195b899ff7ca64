"""Priorities and retries of batch workflows (docs/api.md, "Batch workflows").

- ``Priority`` / ``MaxRetries``: the argument rules of ``submit(priority=, max_retries=)``;
- ``RetryPolicy``: exponential backoff with jitter between the attempts of a failing chunk
  (``base * 2**(failures - 1)``, capped, times a random factor in ``[0.5, 1.0]`` so that
  workers failing together do not come back together);
- ``retryable``: which handler errors are retried (every ``Exception`` but ``InvalidInput``:
  bad input fails the same way every time).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Annotated

from app.core.errors import InvalidInput
from app.core.rules import Rule

MAX_PRIORITY = 1_000_000
MAX_RETRIES = 50
"""At most this many retries per chunk (every attempt's error is kept in ``errors``)."""


def _int_in(low: int, high: int) -> Rule:
    return Rule(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
        f"an int in {low}..{high}",
    )


Priority = Annotated[int, _int_in(-MAX_PRIORITY, MAX_PRIORITY)]
MaxRetries = Annotated[int, _int_in(0, MAX_RETRIES)]


@dataclass(frozen=True)
class RetryPolicy:
    """How long a failed chunk waits before its next attempt."""

    base_s: float = 1.0
    cap_s: float = 300.0

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt of a chunk (>= 1)."""
        raw = min(self.cap_s, self.base_s * 2.0 ** max(0, failures - 1))
        factor = (rng or random).uniform(0.5, 1.0)
        return raw * factor


def retryable(exc: BaseException) -> bool:
    """Whether a handler's error may be retried (``InvalidInput`` never is)."""
    return isinstance(exc, Exception) and not isinstance(exc, InvalidInput)


__all__ = ["MAX_PRIORITY", "MAX_RETRIES", "MaxRetries", "Priority", "RetryPolicy", "retryable"]
