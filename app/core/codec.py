"""Record codec: strict-JSON checks, id assignment and canonical encoding of a batch.

Pure functions (no I/O). A record made only of exact JSON types (``_plain``: one tight type
walk) is encoded by orjson as it is; anything else goes through ``_norm``, which converts
datetimes to ISO-8601 UTC strings, enums to their values and pydantic models to dicts, and
rejects every other type (UUIDs, dataclasses, dates, sets...), non-finite floats, integers
beyond 64 bits and nesting deeper than ``MAX_DEPTH``. Schema validation runs once per batch.
The stored form is canonical (sorted keys, compact), and what is returned later is decoded
from it, so callers never share mutable state with the store.
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
MAX_DEPTH = 64
ENCODE_OPTIONS = orjson.OPT_SORT_KEYS


def _datetime(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _plain(value: dict[str, Any] | list[Any], depth: int = 0) -> bool:
    """True when ``value`` holds only exact JSON types (str keys, finite floats) within
    ``MAX_DEPTH``: such records are encoded as they are (the fast path)."""
    if depth >= MAX_DEPTH:
        return False
    if type(value) is dict:
        if not all(type(k) is str for k in value):
            return False
        items: Any = value.values()
    else:
        items = value
    for v in items:
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            continue
        if t is float:
            if v - v != 0.0:  # NaN or +-Infinity
                return False
        elif t is dict or t is list:
            if not _plain(v, depth + 1):
                return False
        else:
            return False
    return True


class _Bad(Exception):
    pass


def _norm(value: Any, depth: int) -> Any:
    """Normalised private copy of a value with non-plain parts (the slow path)."""
    if value is None or isinstance(value, bool):
        return value if value is None else bool(value)
    if isinstance(value, enum.Enum):
        return _norm(value.value, depth)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise _Bad("integers must fit in 64 bits")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad("NaN and Infinity are not JSON")
        return float(value)
    if isinstance(value, dt.datetime):
        return _datetime(value)
    if depth >= MAX_DEPTH:
        raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, BaseModel):
        return _norm(value.model_dump(), depth)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Bad("object keys must be strings")
            out[str.__str__(k)] = _norm(v, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_norm(v, depth + 1) for v in value]
    raise _Bad(f"values of type {type(value).__name__} are not JSON")


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


def encode(record: dict[str, Any], where: str = "record") -> bytes:
    """Canonical bytes of one record, or ``InvalidInput`` naming ``where``."""
    if not _plain(record):
        try:
            record = _norm(record, 0)
        except _Bad as bad:
            raise InvalidInput(f"{where}: {bad}") from None
        except RecursionError:
            raise InvalidInput(f"{where}: nested too deeply") from None
    try:
        return orjson.dumps(record, option=ENCODE_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise InvalidInput(f"{where}: {exc.__cause__ or exc}") from None


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
