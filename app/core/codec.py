"""Record codec: strict-JSON normalisation, id assignment and canonical encoding of a batch.

Pure functions (no I/O). One pass per record builds a private, normalised copy (so stored data
never shares mutable state with the caller); schema validation runs once per batch.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from app.core.errors import InvalidInput

MAX_DEPTH = 64
MAX_ID_LENGTH = 256
_INT64 = 2**63
ENCODE_OPTIONS = orjson.OPT_SORT_KEYS
JSONValue = Any


class _Bad(Exception):
    def __init__(self, where: str, why: str) -> None:
        super().__init__(why)
        self.where = where
        self.why = why


def _datetime(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _norm(value: Any, depth: int, where: str) -> JSONValue:
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if -_INT64 <= value < _INT64:
            return value
        raise _Bad(where, "integers must fit in 64 bits")
    if t is float:
        if value - value != 0.0:
            raise _Bad(where, "NaN and Infinity are not JSON")
        return value
    if depth >= MAX_DEPTH:
        raise _Bad(where, f"nested deeper than {MAX_DEPTH} levels")
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _Bad(where, "object keys must be strings")
            out[k] = _norm(v, depth + 1, where)
        return out
    if t is list or t is tuple:
        return [_norm(v, depth + 1, where) for v in value]
    return _norm_other(value, depth, where)


def _norm_other(value: Any, depth: int, where: str) -> JSONValue:
    if isinstance(value, dt.datetime):
        return _datetime(value)
    if isinstance(value, enum.Enum):
        return _norm(value.value, depth, where)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _norm(int(value), depth, where)
    if isinstance(value, float):
        return _norm(float(value), depth, where)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, BaseModel):
        return _norm(value.model_dump(), depth, where)
    if isinstance(value, Mapping):
        return _norm(dict(value), depth, where)
    raise _Bad(where, f"values of type {type(value).__name__} are not JSON")


def normalise_record(record: object, index: int, argument: str = "records") -> dict[str, Any]:
    """Return a normalised private copy of one record or raise ``InvalidInput``."""
    where = f"{argument}[{index}]"
    if isinstance(record, BaseModel):
        record = record.model_dump()
    if not isinstance(record, Mapping):
        raise InvalidInput(f"{where}: expected a mapping or a pydantic model, "
                           f"got {type(record).__name__}")
    try:
        out = _norm(dict(record), 0, where)
    except _Bad as bad:
        raise InvalidInput(f"{bad.where}: {bad.why}") from None
    except RecursionError:
        raise InvalidInput(f"{where}: nested too deeply") from None
    assert isinstance(out, dict)
    return out


def check_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{where}: \"id\" must be a non-empty string of at most "
                           f"{MAX_ID_LENGTH} characters")
    return value


class _IdSource:
    """Random 32-hex ids drawn from one ``os.urandom`` call per batch."""

    def __init__(self, n: int) -> None:
        self._hex = os.urandom(16 * n).hex() if n else ""
        self._i = 0

    def next(self) -> str:
        s = self._hex[self._i : self._i + 32]
        self._i += 32
        return s


def new_id() -> str:
    return os.urandom(16).hex()


def encode(record: Mapping[str, Any]) -> bytes:
    """Canonical bytes of a normalised record (sorted keys, compact)."""
    try:
        return orjson.dumps(record, option=ENCODE_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise InvalidInput(f"records: not encodable as JSON ({exc})") from None


_ADAPTERS: dict[type[BaseModel], TypeAdapter[list[Any]]] = {}


def _adapter(schema: type[BaseModel]) -> TypeAdapter[list[Any]]:
    adapter = _ADAPTERS.get(schema)
    if adapter is None:
        adapter = TypeAdapter(list[schema])  # type: ignore[valid-type]
        _ADAPTERS[schema] = adapter
    return adapter


def validate_batch(
    records: list[dict[str, Any]], schema: type[BaseModel] | None, argument: str = "records"
) -> None:
    """Validate a whole batch against ``schema`` in one call (strict mode)."""
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
    """Normalise, assign ids, validate and encode a batch: ``(ids, encoded records)``.

    Raises ``InvalidInput`` (naming the record index) before anything is written.
    """
    if isinstance(records, Mapping | str | bytes) or not isinstance(records, Iterable):
        raise InvalidInput(f"{argument}: expected an iterable of records")
    normalised = [normalise_record(r, i, argument) for i, r in enumerate(records)]
    missing = sum(1 for r in normalised if "id" not in r)
    ids_source = _IdSource(missing)
    ids: list[str] = []
    for i, rec in enumerate(normalised):
        if "id" in rec:
            ids.append(check_id(rec["id"], f"{argument}[{i}]"))
        else:
            rid = ids_source.next()
            rec["id"] = rid
            ids.append(rid)
    validate_batch(normalised, schema, argument)
    return ids, [encode(r) for r in normalised]


def decode(data: bytes | str) -> dict[str, Any]:
    out = orjson.loads(data)
    assert isinstance(out, dict)
    return out
