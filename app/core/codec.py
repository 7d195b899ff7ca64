"""Record codec: strict-JSON checks, id assignment and canonical encoding of a batch.

Pure functions (no I/O). The fast path lets orjson do the type checks while encoding (keys must
be strings, integers fit in 64 bits, nesting is bounded, unsupported types go to ``_default``
which converts datetimes to ISO-8601 UTC, enums and pydantic models, and rejects the rest).
orjson writes NaN and Infinity as ``null``, so a record whose encoding contains ``null`` is
walked once more in Python to tell a real ``None`` from a non-finite float. Schema validation
runs once per batch. The stored form is canonical (sorted keys, compact), and what is returned
later is decoded from it, so callers never share mutable state with the store.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from app.core.errors import InvalidInput
from app.core.schemas import FAST_VALIDATORS

MAX_ID_LENGTH = 256
ENCODE_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_NULL = b"null"


def _datetime(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _default(value: Any) -> Any:
    """orjson's hook for types it does not encode itself."""
    if isinstance(value, dt.datetime):
        return _datetime(value)
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"values of type {type(value).__name__} are not JSON")


def _non_finite(value: Any, depth: int = 0) -> bool:
    """True if a non-finite float hides in ``value`` (only walked when ``null`` was written)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if depth > 300:
        return False
    if isinstance(value, Mapping):
        return any(_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v, depth + 1) for v in value)
    if isinstance(value, BaseModel):
        return _non_finite(value.model_dump(), depth + 1)
    if isinstance(value, enum.Enum):
        return _non_finite(value.value, depth + 1)
    return False


def as_dict(record: object, where: str) -> dict[str, Any]:
    """A record as a plain dict (pydantic models are dumped); else ``InvalidInput``."""
    if type(record) is dict:
        return record
    if isinstance(record, BaseModel):
        return record.model_dump()
    if isinstance(record, Mapping):
        return dict(record)
    raise InvalidInput(
        f"{where}: expected a mapping or a pydantic model, got {type(record).__name__}"
    )


def check_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidInput(
            f'{where}: "id" must be a non-empty string of at most {MAX_ID_LENGTH} characters'
        )
    return value


def new_id() -> str:
    return os.urandom(16).hex()


def encode(record: Mapping[str, Any], where: str = "record") -> bytes:
    """Canonical bytes of one record, or ``InvalidInput`` naming ``where``."""
    try:
        data = orjson.dumps(record, default=_default, option=ENCODE_OPTIONS)
    except orjson.JSONEncodeError as exc:
        cause = exc.__cause__ or exc
        raise InvalidInput(f"{where}: {cause}") from None
    except RecursionError:
        raise InvalidInput(f"{where}: nested too deeply") from None
    if _NULL in data and _non_finite(record):
        raise InvalidInput(f"{where}: NaN and Infinity are not JSON")
    return data


_ADAPTERS: dict[type, TypeAdapter[list[Any]]] = {}


def _adapter(schema: type[BaseModel]) -> TypeAdapter[list[Any]]:
    adapter = _ADAPTERS.get(schema)
    if adapter is None:
        item = FAST_VALIDATORS.get(schema, schema)
        adapter = TypeAdapter(list[item])  # type: ignore[valid-type]
        _ADAPTERS[schema] = adapter
    return adapter


def validate_batch(
    records: list[dict[str, Any]], schema: type[BaseModel] | None, argument: str = "records"
) -> None:
    """Validate a whole batch against ``schema`` in one call (strict mode, extras allowed)."""
    if schema is None or not records:
        return
    try:
        _adapter(schema).validate_python(records, strict=True)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = err.get("loc", ())
        pos = loc[0] if loc else "?"
        field = ".".join(str(p) for p in loc[1:]) or "record"
        raise InvalidInput(f"{argument}[{pos}].{field}: {err.get('msg', 'invalid')}") from None


def prepare_batch(
    records: Iterable[object], schema: type[BaseModel] | None, argument: str = "records"
) -> tuple[list[str], list[bytes]]:
    """Check, assign ids, validate and encode a batch: ``(ids, encoded records)``.

    Raises ``InvalidInput`` naming the record before anything is written.
    """
    if isinstance(records, Mapping | str | bytes) or not isinstance(records, Iterable):
        raise InvalidInput(f"{argument}: expected an iterable of records")
    dicts: list[dict[str, Any]] = []
    ids: list[str] = []
    for i, record in enumerate(records):
        rec = as_dict(record, f"{argument}[{i}]")
        rid = rec.get("id")
        if rid is None and "id" not in rec:
            rid = new_id()
            rec = {**rec, "id": rid}
        ids.append(check_id(rid, f"{argument}[{i}]"))
        dicts.append(rec)
    validate_batch(dicts, schema, argument)
    encoded = [encode(rec, f"{argument}[{i}]") for i, rec in enumerate(dicts)]
    return ids, encoded


def decode(data: bytes | str) -> dict[str, Any]:
    out = orjson.loads(data)
    assert isinstance(out, dict)
    return out
