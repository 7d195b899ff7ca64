"""Record codec: strict-JSON checks, id assignment and canonical encoding of a batch.

Pure functions (no I/O; a batch too large to hold goes to ``app.core.spool``). A record made
only of exact JSON types (``_plain``: one tight type walk) is encoded by orjson as it is;
anything else goes through ``_norm``, which converts datetimes to ISO-8601 UTC strings, enums
to their values and pydantic models to dicts, and rejects every other type (UUIDs,
dataclasses, dates, sets...), non-finite floats, integers outside the signed 64-bit range and
nesting deeper than ``MAX_DEPTH``. Strings (values and keys)
containing NUL are refused too: the encoded bytes are searched once for ``\\u0000`` (orjson's
escape of NUL) and only a hit walks the record. Schema validation runs once per batch.
The stored form is canonical (sorted keys, compact), and what is returned later is decoded
from it, so callers never share mutable state with the store.

Ids generated under a ``batch_id`` derive from it and the record's position (``derived_id``),
so a retried request is byte-identical; ``request_digest`` names the request as given (before
ids were generated) for the idempotency check (docs/api.md, "Idempotency keys").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from app.core.errors import InvalidInput
from app.core.memtrim import release_free_memory
from app.core.rules import MAX_ID_CHARS
from app.core.schemas import FAST_VALIDATORS
from app.core.spool import SizedIterable, Spool

MAX_DEPTH = 64
ENCODE_OPTIONS = orjson.OPT_SORT_KEYS
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
NUL_ESCAPE = b"\\u0000"


def _datetime(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC).isoformat()
    except OverflowError:  # e.g. datetime.max at UTC-5: no UTC datetime exists
        raise _Bad("datetimes must be representable in UTC (years 1-9999)") from None


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
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if INT_MIN <= v <= INT_MAX:
                continue
            return False
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
        if "\0" in value:
            raise _Bad("strings must not contain NUL")
        return str.__str__(value)
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise _Bad("integers must be within the signed 64-bit range [-2**63, 2**63-1]")
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
            if "\0" in k:
                raise _Bad("object keys must not contain NUL")
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
        f"{where}: expected a mapping or a pydantic model, got {type(record).__name__}",
        argument=where,
    )


def check_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InvalidInput(
            f'{where}: "id" must be a non-empty string of at most {MAX_ID_CHARS} characters',
            argument=where,
        )
    return value


def new_id() -> str:
    return os.urandom(16).hex()


def id_deriver(batch_id: str) -> Any:
    """``derive(position) -> id`` for records without an id in batch ``batch_id``: 32 hex
    characters, BLAKE2b-128 of the position (8 bytes, big-endian) keyed with the SHA-256 of the
    batch id. A retry of the same request therefore writes the very same ids."""
    key = hashlib.sha256(batch_id.encode("utf-8", "surrogatepass")).digest()
    blake = hashlib.blake2b

    def derive(position: int) -> str:
        return blake(position.to_bytes(8, "big"), digest_size=16, key=key).hexdigest()

    return derive


def derived_id(batch_id: str, position: int) -> str:
    """The id generated for the record at ``position`` of batch ``batch_id`` (see above)."""
    return str(id_deriver(batch_id)(position))


def _has_nul(value: Any) -> bool:
    if type(value) is str:
        return "\0" in value
    if type(value) is dict:
        return any("\0" in k or _has_nul(v) for k, v in value.items())
    if type(value) is list:
        return any(_has_nul(v) for v in value)
    return False


def encode(record: dict[str, Any], where: str = "record") -> bytes:
    """Canonical bytes of one record, or ``InvalidInput`` naming ``where``."""
    if not _plain(record):
        try:
            record = _norm(record, 0)
        except _Bad as bad:
            raise InvalidInput(f"{where}: {bad}", argument=where) from None
        except RecursionError:
            raise InvalidInput(f"{where}: nested too deeply", argument=where) from None
    try:
        data = orjson.dumps(record, option=ENCODE_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise InvalidInput(f"{where}: {exc.__cause__ or exc}", argument=where) from None
    if NUL_ESCAPE in data and _has_nul(orjson.loads(data)):
        raise InvalidInput(
            f"{where}: strings (values and keys) must not contain NUL", argument=where
        )
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
    records: list[dict[str, Any]],
    schema: type[BaseModel] | None,
    argument: str = "records",
    offset: int = 0,
) -> None:
    """Validate a whole batch against ``schema`` in one call (strict mode, extras allowed);
    ``offset`` is the position of ``records[0]`` in the request (for error messages)."""
    if schema is None or not records:
        return
    try:
        _adapter(schema).validate_python(records, strict=True)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = err.get("loc", ())
        pos = loc[0] + offset if loc and isinstance(loc[0], int) else "?"
        field = ".".join(str(p) for p in loc[1:]) or "record"
        head = f"{argument}[{pos}].{field}"
        raise InvalidInput(f"{head}: {err.get('msg', 'invalid')}", argument=head) from None


MAX_BATCH_RECORDS = 1 << 30
MAX_BATCH_BYTES = 64 << 30
"""The caps of one batch: 1,073,741,824 records and 64 GiB of encoded records. Past
``SPOOL_AT`` a batch is prepared on disk (``app.core.spool``), so these bound the disk a batch
may take, not memory."""
SPOOL_AT = 32 << 20
"""Estimated memory (encoded bytes plus ``HELD_COST`` per record) past which a batch being
prepared moves to a spool, when the caller gave one (``spill``)."""
HELD_COST = 128
"""Estimated bytes a record held in memory costs besides its encoding (its id string, the
bytes object's header, two list slots)."""
PREPARE_STEP = 8192
"""Most records validated and encoded together (one pydantic call per step)."""
FIRST_STEP = 64
"""Records in the first step; later steps hold about ``STEP_BYTES`` (``_next_step``)."""
STEP_BYTES = 4 << 20


class PreparedBatch:
    """A checked batch: its ids, canonical records and the request digest (``None`` without
    a batch id: such a batch can never be a duplicate).

    ``ids`` and ``encoded`` are lists for a batch held in memory, or sized re-iterable views
    over a spool (``spooled``); either way they satisfy ``SizedIterable``. Close it (or use it
    as a context manager) once stored: that removes its spool."""

    __slots__ = ("_close", "digest", "encoded", "ids", "spooled")

    def __init__(
        self,
        ids: SizedIterable[str],
        encoded: SizedIterable[bytes],
        digest: str | None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.ids = ids
        self.encoded = encoded
        self.digest = digest
        self.spooled = close is not None
        self._close = close

    def __len__(self) -> int:
        return len(self.encoded)

    def close(self) -> None:
        """Remove the spool (if any); idempotent."""
        close, self._close = self._close, None
        if close is not None:
            close()

    def __enter__(self) -> PreparedBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _size_text(n: int) -> str:
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift:,} {unit}"
    return f"{n:,} bytes"


def _too_large(argument: str, what: str) -> InvalidInput:
    return InvalidInput(
        f"{argument}: a batch holds at most {MAX_BATCH_RECORDS:,} records and "
        f"{_size_text(MAX_BATCH_BYTES)} of encoded records ({what}); split it or use a "
        "workflow",
        argument=argument,
    )


Spill = Callable[[], AbstractContextManager[Path]]
"""Gives a private folder for a spool, held while the returned context is open (removed
when it closes)."""


class _Held:
    """The batch being prepared: in memory until its estimated size passes ``SPOOL_AT``, then
    (given ``spill``) in a ``Spool``."""

    def __init__(self, spill: Spill | None) -> None:
        self.ids: list[str] = []
        self.encoded: list[bytes] = []
        self.generated = bytearray()
        self.count = 0
        self.memory = 0
        self._spill = spill
        self._spool: Spool | None = None
        self._stack = contextlib.ExitStack()

    def add_id(self, rid: str, generated: bool) -> None:
        if self._spool is None:
            self.ids.append(rid)
            self.generated.append(generated)
        else:
            self._spool.ids.add(rid)
            self.generated.append(generated)
            if len(self.generated) >= FLAG_FLUSH:
                self._spool.add_flags(self.generated)
                self.generated.clear()

    def add_encoded(self, data: bytes) -> None:
        self.count += 1
        if self._spool is None:
            self.encoded.append(memoryview(data).tobytes())  # exact size (see prepare_batch)
            self.memory += len(data) + HELD_COST
            if self.memory > SPOOL_AT:  # also mid-step: a step of large records
                self.check_memory()
        else:
            self._spool.records.add(data)

    def add_encoded_many(self, encoded: list[bytes], size: int) -> None:
        """``add_encoded`` for each of ``encoded`` (exact-size bytes, ``size`` in all)."""
        self.count += len(encoded)
        if self._spool is None:
            self.encoded += encoded
            self.memory += size + HELD_COST * len(encoded)
            if self.memory > SPOOL_AT:
                self.check_memory()
        else:
            add = self._spool.records.add
            for data in encoded:
                add(data)

    def check_memory(self) -> None:
        """Move the batch to a spool once it holds more than ``SPOOL_AT`` (given ``spill``)."""
        if self._spill is None or self._spool is not None:
            return
        if self.memory + (len(self.ids) - len(self.encoded)) * HELD_COST <= SPOOL_AT:
            return
        folder = self._stack.enter_context(self._spill())
        spool = self._spool = Spool(folder)
        self._stack.callback(spool.close)
        for data in self.encoded:
            spool.records.add(data)
        for rid in self.ids:
            spool.ids.add(rid)
        spool.add_flags(self.generated)
        self.ids, self.encoded, self.generated = [], [], bytearray()
        self.memory = 0
        release_free_memory()

    def hash_generated(self, h: Any) -> None:
        if self._spool is not None:
            self._spool.add_flags(self.generated)
            self.generated.clear()
            for chunk in self._spool.flag_chunks():
                h.update(chunk)
        else:
            h.update(self.generated)

    def batch(self, digest: str | None) -> PreparedBatch:
        spool = self._spool
        if spool is None:
            return PreparedBatch(self.ids, self.encoded, digest)
        spool.seal()
        return PreparedBatch(spool.ids, spool.records, digest, self._stack.close)

    def close(self) -> None:
        self._stack.close()


FLAG_FLUSH = 1 << 16


def prepare_batch(
    records: Iterable[object],
    schema: type[BaseModel] | None,
    argument: str = "records",
    *,
    batch_id: str | None = None,
    collection: str = "",
    spill: Spill | None = None,
) -> PreparedBatch:
    """Check, assign ids, validate and encode a batch.

    Records without an id get ``derived_id(batch_id, position)`` when a ``batch_id`` is given,
    a random id otherwise. Records are handled ``PREPARE_STEP`` at a time (copy, validate,
    encode), so only the encoded batch is held, never a second copy of every record; each
    encoding is kept as an exact-size copy: orjson returns its bytes inside a 4 KiB
    allocation, which held per record made a batch cost ~4.5 KB a record. Given ``spill``, a
    batch whose estimated memory passes ``SPOOL_AT`` moves to a spool in the folder
    ``spill()`` gives (``app.core.spool``), so memory stays flat whatever its size; close the
    result to remove the spool. Without ``spill`` the batch stays in memory. Raises
    ``InvalidInput`` naming the record (or the size limit) before anything is written, with
    any spool already removed. The request digest (``batch_id`` given) is the SHA-256 of
    ``["append", collection, count]``, one byte per record (1: its id was generated) and the
    canonical bytes of the records: given the batch id, the same as hashing the records
    before their ids were generated, since generated ids derive from (batch id, position).
    """
    if isinstance(records, Mapping | str | bytes) or not isinstance(records, Iterable):
        raise InvalidInput(f"{argument}: expected an iterable of records", argument=argument)
    held = _Held(spill)
    try:
        return _prepare(records, schema, argument, batch_id, collection, held)
    except BaseException:
        held.close()
        raise


def _prepare(
    records: Iterable[object],
    schema: type[BaseModel] | None,
    argument: str,
    batch_id: str | None,
    collection: str,
    held: _Held,
) -> PreparedBatch:
    derive = id_deriver(batch_id) if batch_id is not None else None
    h = hashlib.sha256() if batch_id is not None else None
    size = 0
    step: list[dict[str, Any]] = []
    step_len = min(FIRST_STEP, PREPARE_STEP)
    for i, record in enumerate(records):
        if i >= MAX_BATCH_RECORDS:
            raise _too_large(argument, "too many records")
        # the record's name (an f-string) is only built where an error may need it
        rec = record if type(record) is dict else as_dict(record, f"{argument}[{i}]")
        rid = rec.get("id")
        generated = rid is None and "id" not in rec
        if generated:
            rid = new_id() if derive is None else derive(i)
            rec = {**rec, "id": rid}
        elif type(rid) is not str or not rid or len(rid) > MAX_ID_CHARS:
            check_id(rid, f"{argument}[{i}]")
        held.add_id(cast(str, rid), generated)
        step.append(rec)
        if len(step) >= step_len:
            before = size
            size = _encode_step(step, schema, argument, held, h, size)
            held.check_memory()
            step_len = _next_step(len(step), size - before)
            step = []
    _encode_step(step, schema, argument, held, h, size)
    digest = None
    if h is not None:
        head = hashlib.sha256(orjson.dumps(["append", collection, held.count]))
        held.hash_generated(head)
        head.update(h.digest())
        digest = head.hexdigest()
    return held.batch(digest)


def _next_step(records: int, encoded: int) -> int:
    """How many records the next step takes: about ``STEP_BYTES`` of encodings at the size the
    last step's records had (between 16 and ``PREPARE_STEP``), so a step of large records
    never holds much memory as Python objects."""
    return max(16, min(PREPARE_STEP, STEP_BYTES * records // max(encoded, 1)))


def _encode_step(
    step: list[dict[str, Any]],
    schema: type[BaseModel] | None,
    argument: str,
    held: _Held,
    h: Any,
    size: int,
) -> int:
    """Validate and encode ``step`` into ``held``; returns ``size`` (the encoded bytes so
    far) grown by the step's encodings. ``InvalidInput`` past ``MAX_BATCH_BYTES``.

    The first step of a batch (``FIRST_STEP`` records, whose size is not known yet) is
    encoded record by record; later ones, sized to about ``STEP_BYTES``, in one call
    (``encode_many``) when they can be, with the very same bytes."""
    validate_batch(step, schema, argument, held.count)
    encoded = encode_many(step) if held.count >= FIRST_STEP else None
    if encoded is not None:
        step_size = sum(map(len, encoded))
        if size + step_size > MAX_BATCH_BYTES:
            raise _too_large(argument, "too many bytes")
        if h is not None:
            h.update(b"".join(encoded))
        held.add_encoded_many(encoded, step_size)
        return size + step_size
    add = held.add_encoded
    for i, rec in enumerate(step, held.count):
        data = encode(rec, f"{argument}[{i}]")
        size += len(data)
        if size > MAX_BATCH_BYTES:
            raise _too_large(argument, "too many bytes")
        if h is not None:
            h.update(data)
        add(data)
    return size


_MARK = "\0"
"""Put between the records of a step encoded in one call: its encoding (``_SEP``, with the
commas around it) cannot occur inside a record holding no NUL, and records with NUL are
refused (each such step is encoded again record by record, for the error)."""
_SEP = b',"' + NUL_ESCAPE + b'",'


def encode_many(records: list[dict[str, Any]]) -> list[bytes] | None:
    """The canonical bytes of each of ``records``, from one ``orjson.dumps`` call: byte for
    byte what ``encode`` gives each record (orjson writes a value nested in a list exactly as
    on its own). ``None`` when a record is not plain JSON, holds an escaped NUL (or text that
    looks like one) or orjson refuses the list: the caller then encodes record by record,
    which normalises values or raises ``InvalidInput`` naming the record. Each returned bytes
    object has its exact size (cut out of the one encoding)."""
    n = len(records)
    if n == 0 or not _plain(records, -1):
        return None
    items: list[Any] = [_MARK] * (2 * n - 1)
    items[::2] = records
    try:
        data = orjson.dumps(items, option=ENCODE_OPTIONS)
    except orjson.JSONEncodeError:
        return None
    if data.count(NUL_ESCAPE) != n - 1:
        return None
    parts = data[1:-1].split(_SEP)
    return parts if len(parts) == n else None


def delete_digest(collection: str, ids: list[str] | None, where: object) -> str:
    """The request digest of a delete: its collection, ids (as given) and filter, as
    canonical JSON."""

    def default(value: object) -> object:
        if isinstance(value, Mapping):
            return dict(value)
        raise TypeError

    data = orjson.dumps(["delete", collection, ids, where], default=default, option=ENCODE_OPTIONS)
    return hashlib.sha256(data).hexdigest()


_LONG_DIGITS = re.compile(rb"[0-9]{19,}")


def _legacy(value: Any) -> str | None:
    if type(value) is int:
        return None if INT_MIN <= value <= INT_MAX else "an integer outside the signed 64-bit range"
    if type(value) is str:
        return "a string containing NUL" if "\0" in value else None
    if type(value) is dict:
        for k, v in value.items():
            found = "a key containing NUL" if "\0" in k else _legacy(v)
            if found:
                return found
    if type(value) is list:
        for v in value:
            found = _legacy(v)
            if found:
                return found
    return None


def legacy_value(data: bytes) -> str | None:
    """What an encoded record holds that v2 refuses at append (written by v1: an integer
    outside int64, NUL in a string or key), or ``None``. A byte search first: only records
    with a long digit run or an escaped NUL are decoded."""
    if NUL_ESCAPE not in data and _LONG_DIGITS.search(data) is None:
        return None
    return _legacy(json.loads(data))  # exact integers (orjson reads < -2**63 as a float)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def parse_user_json(raw: bytes | str, where: str) -> Any:
    """JSON text a user gave (a CLI file or option, an HTTP query parameter). orjson turns an
    integer beyond the 64-bit range into a float; where the text has such a long digit run it
    is parsed exactly instead, so the int64 rule refuses it like any other value. A syntax
    error (or NaN/Infinity) is ``InvalidInput`` naming ``where``."""
    try:
        data = raw.encode() if isinstance(raw, str) else raw
        if _LONG_DIGITS.search(data) is None:
            return orjson.loads(data)
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # both parsers' errors are ValueErrors
        raise InvalidInput(f"{where}: not valid JSON ({exc})", argument=where) from None


def decode(data: bytes | str) -> dict[str, Any]:
    out = orjson.loads(data)
    assert isinstance(out, dict)
    return out
