"""What the commands read: JSON options, JSON-lines files, durations."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

from app.core.codec import parse_user_json
from app.core.errors import InvalidInput

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_json_option(value: str | None, option: str) -> Any:
    """Parse a JSON option value; a syntax error is a usage mistake naming the option."""
    if value is None:
        return None
    return parse_user_json(value, option)


def parse_where(value: str | None) -> Mapping[str, Any] | None:
    where = parse_json_option(value, "--where")
    if where is not None and not isinstance(where, dict):
        raise InvalidInput("--where: must be a JSON object")
    return where


def parse_duration(text: str, option: str = "--older-than") -> dt.timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w`` -> timedelta; else ``InvalidInput`` naming
    ``option`` (a bare number is refused: the unit is never guessed)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidInput(
            f"{option}: {text[:40]!r} is not a duration with a unit, like 60s, 15m, 12h, 7d",
            argument=option.lstrip("-").replace("-", "_"),
        )
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _read_jsonl(fh: IO[bytes], source: str) -> Iterator[tuple[int, Any]]:
    for lineno, raw in enumerate(fh, start=1):
        line = raw.strip()
        if not line:
            continue
        yield lineno, parse_user_json(line, f"{source}:{lineno}")


def batches(
    fh: IO[bytes], source: str, size: int, on_line: Callable[[int], None]
) -> Iterator[Iterator[dict[str, Any]]]:
    """The records of a JSON-lines file in batches of at most ``size``; ``on_line`` sees each
    line. A batch is a lazy iterator over the file (never a list): ``ctx.append`` consumes it
    whole, spooling a big one to disk, before the next batch is read."""
    records = _records(fh, source, on_line)
    for first in records:  # the next batch starts only when the last one was consumed
        yield itertools.chain((first,), itertools.islice(records, size - 1))


def _records(
    fh: IO[bytes], source: str, on_line: Callable[[int], None]
) -> Iterator[dict[str, Any]]:
    for lineno, obj in _read_jsonl(fh, source):
        if not isinstance(obj, dict):
            raise InvalidInput(f"{source}:{lineno}: a record must be a JSON object")
        on_line(lineno)
        yield obj


def jsonl_items(fh: Any) -> Iterator[dict[str, Any]]:
    """The items of a workflow from a JSON-lines file, one object a line."""
    source = getattr(fh, "name", "items")
    for lineno, line in enumerate(fh, 1):
        if not line.strip():
            continue
        obj = parse_user_json(line, f"{source}:{lineno}")
        if not isinstance(obj, dict):
            raise InvalidInput(f"{source}:{lineno}: an item must be a JSON object")
        yield obj


__all__ = ["batches", "jsonl_items", "parse_duration", "parse_json_option", "parse_where"]
