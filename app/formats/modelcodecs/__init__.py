"""Model file formats as a registry of codecs (docs/api.md, "Models").

Each codec lives in its own module of this package and exports ``CODEC`` (meeting the
``Codec`` protocol of ``codec.py``). ``_REGISTERED`` lists those modules: adding a format is
one new module plus one line there. The store asks this registry, never spells a format:

* ``pick(model)``: the codec ``format=None`` uses (lowest ``precedence`` that can hold it:
  a torch module or mapping of tensors as ``pth``, anything else as ``joblib``);
* ``codec_for(format)``: the codec of a suffix (``InvalidInput`` naming ``format``);
* ``runs_code(format)``: whether reading such a file may run code (needs trust);
* ``formats()``: every registered suffix.
"""

from __future__ import annotations

from importlib import import_module

from app.core.errors import InvalidInput
from app.formats.modelcodecs.codec import Codec, Recorded, Written
from app.formats.modelcodecs.hashing import CHUNK, read_verified


def _codec(module: str) -> Codec:
    codec = import_module(f"{__name__}.{module}").CODEC
    if not isinstance(codec, Codec) or codec.suffix != module:
        raise TypeError(f"{__name__}.{module}.CODEC is not a Codec for .{module}")
    return codec


_REGISTERED: tuple[Codec, ...] = (
    _codec("pth"),
    _codec("joblib"),
    _codec("safetensors"),
)
_BY_SUFFIX: dict[str, Codec] = {c.suffix: c for c in _REGISTERED}
_AUTO: tuple[Codec, ...] = tuple(
    sorted((c for c in _REGISTERED if c.precedence is not None), key=lambda c: c.precedence or 0)
)


def formats() -> tuple[str, ...]:
    """Every registered format (file suffix), in registration order."""
    return tuple(_BY_SUFFIX)


def is_format(format: object) -> bool:
    return isinstance(format, str) and format in _BY_SUFFIX


def codec_for(format: str) -> Codec:
    """The codec of ``format``; ``InvalidInput`` (argument ``format``) if none is registered."""
    codec = _BY_SUFFIX.get(format) if isinstance(format, str) else None
    if codec is None:
        raise InvalidInput(
            f"format: {format!r} is not one of {', '.join(formats())}", argument="format"
        )
    return codec


def pick(model: object) -> Codec:
    """The codec ``format=None`` saves ``model`` with."""
    for codec in _AUTO:
        if codec.can_save(model):
            return codec
    raise InvalidInput("model: no model format can hold it", argument="model")


def runs_code(format: str) -> bool:
    """True when reading a ``format`` file may run code from it (pickle): such files are
    loaded only when trusted. ``InvalidInput`` for an unknown format."""
    return codec_for(format).runs_code


__all__ = [
    "CHUNK",
    "Codec",
    "Recorded",
    "Written",
    "codec_for",
    "formats",
    "is_format",
    "pick",
    "read_verified",
    "runs_code",
]
