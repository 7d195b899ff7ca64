"""The ``safetensors`` codec: tensors only, never pickle, read memory-mapped (docs/api.md,
"Models"), written and read here directly from the published format:

* 8 bytes: ``N``, the header's length (unsigned 64-bit little-endian);
* ``N`` bytes: a UTF-8 JSON object mapping each tensor's name to ``{"dtype": "F32",
  "shape": [2, 3], "data_offsets": [begin, end]}`` (offsets into the data that follows),
  plus an optional ``"__metadata__"`` object of strings; padded with spaces so the data
  starts at a multiple of 8;
* the data: each tensor's bytes, row-major, little-endian, the tensors back to back with no
  gap and no overlap.

Writing hashes the bytes on the way out like every codec. Reading checks the SHA-256 on the
descriptor it then maps (copy-on-write: a loaded tensor can be changed, the file never is),
refuses a malformed header with ``IntegrityError``, and builds the tensors over the mapping.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from app.core.errors import IntegrityError, InvalidInput, StorageError
from app.formats.hashio import HashingWriter
from app.formats.modelcodecs.codec import Recorded, Written
from app.formats.modelcodecs.hashing import class_path, open_verified, write_hashed
from app.formats.modelcodecs.tensors import (
    fill,
    holds_tensors,
    import_torch,
    loaded_torch,
    state_of,
)

SUFFIX = "safetensors"
METADATA = "__metadata__"
HEADER_LIMIT = 100 << 20  # the published readers refuse larger headers too
ALIGN = 8
# dtype code -> (torch dtype name, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U64": ("uint64", 8),
    "U32": ("uint32", 4),
    "U16": ("uint16", 2),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
}


@dataclass(frozen=True)
class Entry:
    """One tensor of a header: ``data_offsets`` relative to the start of the data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _little_endian() -> None:
    if sys.byteorder != "little":
        raise StorageError(".safetensors files are little-endian: not supported on this host")


def _codes(torch: ModuleType) -> dict[Any, str]:
    """torch dtype -> dtype code, for the dtypes this torch has."""
    return {
        getattr(torch, name): code for code, (name, _) in DTYPES.items() if hasattr(torch, name)
    }


def _refusal(torch: ModuleType, state: dict[str, Any]) -> str | None:
    """Why ``state`` cannot be written as safetensors, or None."""
    codes = _codes(torch)
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            return f"{name!r} is not a tensor (safetensors holds tensors only)"
        if value.layout != torch.strided or value.dtype not in codes:
            return f"tensor {name!r} ({value.dtype}, {value.layout}) has no safetensors dtype"
    return None


# -- header ------------------------------------------------------------------------------


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a name appears twice")
    return out


def _no_constant(value: str) -> Any:
    raise ValueError(f"{value} is not JSON")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(name: str, spec: object) -> Entry:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"tensor {name!r}: needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype not in DTYPES:
        raise ValueError(f"tensor {name!r}: unknown dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ValueError(f"tensor {name!r}: shape must be a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise ValueError(f"tensor {name!r}: data_offsets must be [begin, end]")
    begin, end = offsets
    if end - begin != math.prod(shape) * DTYPES[dtype][1]:
        raise ValueError(f"tensor {name!r}: data_offsets do not match its dtype and shape")
    return Entry(name, dtype, tuple(shape), begin, end)


def parse_header(view: memoryview, path: Path) -> tuple[list[Entry], dict[str, str], int]:
    """``(tensors, metadata, start of the data)`` of the whole file ``view``;
    ``IntegrityError`` naming ``path`` unless the header follows the format exactly and its
    tensors cover the data with no gap, no overlap and nothing past the end."""
    try:
        return _parse_header(view)
    except ValueError as exc:
        raise IntegrityError(f"{path}: not a valid .safetensors file ({exc})") from None


def _parse_header(view: memoryview) -> tuple[list[Entry], dict[str, str], int]:
    if view.nbytes < 8:
        raise ValueError("shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", view[:8])
    if not 2 <= length <= min(HEADER_LIMIT, view.nbytes - 8):
        raise ValueError(f"header length {length} does not fit the file")
    raw = bytes(view[8 : 8 + length])
    if not raw.startswith(b"{"):
        raise ValueError("the header is not a JSON object")
    try:
        doc = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the header is not JSON: {str(exc)[:80]}") from None
    if not isinstance(doc, dict):
        raise ValueError("the header is not a JSON object")
    metadata = doc.pop(METADATA, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{METADATA} must map names to strings")
    entries = [_entry(name, spec) for name, spec in doc.items()]
    start = 8 + length
    covered = 0
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if entry.begin != covered:
            what = "overlaps another" if entry.begin < covered else "leaves a gap before it"
            raise ValueError(f"tensor {entry.name!r} {what}")
        covered = entry.end
    if start + covered != view.nbytes:
        raise ValueError(f"the tensors cover {covered} of {view.nbytes - start} data bytes")
    return entries, metadata, start


def _header(entries: list[Entry], metadata: dict[str, str]) -> bytes:
    doc: dict[str, Any] = {METADATA: metadata} if metadata else {}
    for e in entries:
        doc[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [e.begin, e.end]}
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    return raw + b" " * (-(8 + len(raw)) % ALIGN)


# -- codec -------------------------------------------------------------------------------


def _tensor(torch: ModuleType, mapped: mmap.mmap, start: int, entry: Entry) -> Any:
    name, size = DTYPES[entry.dtype]
    dtype = getattr(torch, name, None)
    if dtype is None:
        raise StorageError(f"this PyTorch has no {name} (dtype {entry.dtype})")
    count = math.prod(entry.shape)
    if count == 0:
        return torch.empty(entry.shape, dtype=dtype)
    offset = start + entry.begin
    if offset % size:  # another writer's unaligned tensor: copied, not mapped
        buffer: Any = bytearray(mapped[offset : start + entry.end])
        offset = 0
    else:
        buffer = mapped
    return torch.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(entry.shape)


class SafetensorsCodec:
    """``.safetensors``: a module's ``state_dict`` or a mapping of tensors, never pickled;
    only by an explicit ``format="safetensors"``."""

    suffix = SUFFIX
    runs_code = False
    precedence: int | None = None
    chunked = False

    def can_save(self, model: object) -> bool:
        torch = loaded_torch()
        if torch is None or not holds_tensors(model):
            return False
        return _refusal(torch, state_of(torch, model)[0]) is None

    def write(self, path: Path, model: Any) -> Written:
        _little_endian()
        torch = import_torch(SUFFIX)
        state, count = state_of(torch, model)
        refusal = _refusal(torch, state)
        if refusal is not None:
            raise InvalidInput(f"model: {refusal}", argument="model")
        codes = _codes(torch)
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in state.items()}
        # data ordered by element size, widest first: every tensor starts aligned
        order = sorted(tensors, key=lambda n: -tensors[n].element_size())
        placed: dict[str, Entry] = {}
        offset = 0
        for name in order:
            t = tensors[name]
            end = offset + t.numel() * t.element_size()
            placed[name] = Entry(name, codes[t.dtype], tuple(t.shape), offset, end)
            offset = end
        header = _header([placed[name] for name in tensors], {"format": "pt"})

        def dump(out: HashingWriter) -> None:
            out.write(struct.pack("<Q", len(header)))
            out.write(header)
            for name in order:
                if tensors[name].numel():
                    out.write(tensors[name].reshape(-1).view(torch.uint8).numpy())

        # ``tensors`` keeps every buffer alive until the digests are done
        digest, size = write_hashed(path, dump, immutable=True)
        versions = {"torch": str(torch.__version__)}
        return Written(digest, size, class_path(model), count, versions)

    def read(self, path: Path, recorded: Recorded, *, into: Any, permit: Callable[[], None]) -> Any:
        _little_endian()
        fd = open_verified(path, recorded)
        try:
            permit()  # nothing here runs code from the file; the store's say all the same
            if recorded.size_bytes < 8:  # too short to map: refused by the header check
                parse_header(memoryview(os.pread(fd, 8, 0)), path)
            # the hashed descriptor itself, mapped copy-on-write
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        finally:
            os.close(fd)
        with memoryview(mapped) as view:
            entries, _, start = parse_header(view, path)
        torch = import_torch(SUFFIX)
        state = {e.name: _tensor(torch, mapped, start, e) for e in entries}
        return fill(into, state)


CODEC = SafetensorsCodec()
