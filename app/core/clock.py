"""The two clocks of ctxstore: wall time for display, a steady clock for liveness.

``wall()`` (``time.time``) may jump (NTP step, an operator, a VM resume); it is used only for
fields shown to people (``created_at``, ``started_at``, ``finished_at``, ``heartbeat_at``) and for
``purge(older_than=...)``, which is about calendar age.

``steady()`` is what claims, heartbeats and ``recover(stale_after=...)`` compare: on Linux
``CLOCK_BOOTTIME``, a monotonic clock shared by every process of the host (it also counts
suspend, so a machine that slept for an hour sees an hour pass). A steady reading only means
something together with the boot it was taken in: ``boot_id()`` (``/proc/sys/kernel/random/
boot_id``) is stored beside it, and a reading from another boot is older than any
``stale_after`` (its process cannot be alive). One SQLite store is served by one host; on other
systems the fallback is ``time.monotonic`` with a host-wide boot id, where available.

Everything reads the clocks through this module so a test can fake a wall-clock jump.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def wall() -> float:
    """Seconds since the epoch (may jump): display fields and purge only."""
    return time.time()


_STEADY_CLOCK = getattr(time, "CLOCK_BOOTTIME", None)


def steady() -> float:
    """Seconds on a host-wide clock that never jumps (``CLOCK_BOOTTIME`` on Linux)."""
    if _STEADY_CLOCK is not None:
        return time.clock_gettime(_STEADY_CLOCK)
    return time.monotonic()


@functools.cache
def boot_id() -> str:
    """This boot's id; steady readings of another boot are meaningless here."""
    try:
        return BOOT_ID_FILE.read_text(encoding="ascii").strip() or "unknown"
    except OSError:
        return "unknown"


@dataclass(frozen=True)
class Stamp:
    """One instant on both clocks: ``wall`` for display, ``boot`` + ``steady`` for liveness."""

    wall: float
    boot: str
    steady: float


def now() -> Stamp:
    return Stamp(wall(), boot_id(), steady())


def utc_iso() -> str:
    """The current UTC time as ISO 8601 text: the one way records, sets, models and manifests
    stamp ``created_at`` / ``exported_at``."""
    import datetime as dt

    return dt.datetime.fromtimestamp(wall(), dt.UTC).isoformat()
