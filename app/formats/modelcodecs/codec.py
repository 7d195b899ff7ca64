"""The ``Codec`` protocol every model file format meets, and the two small records it
exchanges with the model store: ``Written`` (what a save produced) and ``Recorded`` (what the
version record promises about a file before it is read). See docs/api.md, "Models"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Written:
    """What writing a model file produced (copied into the version record)."""

    sha256: str
    size_bytes: int
    class_path: str
    parameter_count: int | None = None
    library_versions: dict[str, str] = field(default_factory=dict)
    chunks: list[str] = field(default_factory=list)  # SHA-256 of each CHUNK-byte piece


@dataclass(frozen=True)
class Recorded:
    """What the version record says about a file: checked before any byte is decoded.
    ``chunks`` (the SHA-256 of each ``chunk_bytes`` piece) lets the check run on two threads."""

    sha256: str
    size_bytes: int
    chunks: list[str] = field(default_factory=list)
    chunk_bytes: int = 0


@runtime_checkable
class Codec(Protocol):
    """One model file format.

    * ``suffix``: the file suffix and ``ModelInfo.format`` (``"pth"``, ``"joblib"``, ...).
    * ``runs_code``: reading it may run code from the file (pickle): the store loads such a
      file only when it is trusted.
    * ``precedence``: order in which ``format=None`` tries the codecs (lowest first);
      ``None``: never picked automatically, only by an explicit ``format=``.
    * ``chunked``: its record keeps the SHA-256 of each ``CHUNK``-byte piece.
    """

    @property
    def suffix(self) -> str: ...

    @property
    def runs_code(self) -> bool: ...

    @property
    def precedence(self) -> int | None: ...

    @property
    def chunked(self) -> bool: ...

    def can_save(self, model: object) -> bool:
        """True when this format can hold ``model`` (cheap; no I/O)."""
        ...

    def write(self, path: Path, model: Any) -> Written:
        """Write ``model`` to ``path`` atomically, hashing the bytes on the way out."""
        ...

    def read(self, path: Path, recorded: Recorded, *, into: Any, permit: Callable[[], None]) -> Any:
        """Open ``path`` without following a link, check it against ``recorded``
        (``IntegrityError`` on any difference), call ``permit()`` (which raises when the
        caller does not allow decoding it), then decode it. With ``into`` (a torch module),
        the weights are loaded into it and it is returned."""
        ...
