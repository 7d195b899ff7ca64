"""Trust marks for model files whose reading runs code (pickles; docs/api.md, "Models").

``save`` of such a file writes ``<store>/trust/<sha256>`` holding the HMAC of the digest under
the trust key (``app.core.trustkey``, purpose ``model-trust``): outside every context, so an
imported archive cannot bring its own, and bound to a key kept outside the store, so whoever
can write the store but does not hold the key cannot forge one. A file whose digest has no
mark with the right content loads only with ``trusted=True``. Which formats need this is the
codec's ``runs_code``; nothing here knows a format by name.

Where marks live (``Marks``): the embedded store's ``trust`` folder (``FolderMarks``); on a
server backend that offers ``trust_marks()`` (PostgreSQL: a table, so a mark made on one host
counts on every host sharing the store and the trust key), read there first and then in this
host's ``trust`` folder (marks made by a trusted staged context, e.g. ``save_context``), and
written there (``layered``).

Mark states: ``signed`` (valid under this key), ``v1`` (the empty mark version 1 wrote: not
trusted until ``ctxstore models trust --existing`` re-signs it), ``foreign`` (anything else:
forged, damaged, or signed with another key, e.g. a store moved from another user), ``absent``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Protocol

from app.core import trustkey
from app.core.atomic import write_atomic
from app.core.errors import IntegrityError, UntrustedArtifactError, io_error
from app.core.nofollow import open_regular
from app.formats.modelcodecs import Codec

SHA256 = re.compile(r"[0-9a-f]{64}")
PURPOSE = "model-trust"
MARK_BYTES = 64  # a hex HMAC-SHA256
EXISTING_COMMAND = "ctxstore models trust --existing"
TRUST_COMMAND = "ctxstore models trust CTX NAME [VERSION]"

MarkState = Literal["signed", "v1", "foreign", "absent"]


def signature(sha256: str) -> str:
    """What the mark of ``sha256`` holds under this user's trust key."""
    return trustkey.sign(PURPOSE, sha256.encode())


class Marks(Protocol):
    """Where the trust marks of a store are kept."""

    def where(self, sha256: str) -> str:
        """How messages name the mark of ``sha256``."""
        ...

    def read(self, sha256: str) -> bytes | None:
        """At most ``MARK_BYTES + 1`` bytes of the mark of ``sha256`` (a valid digest), None
        if there is none; ``IntegrityError`` for a link or anything but a regular file."""
        ...

    def write(self, sha256: str, data: bytes) -> None:
        """Create or replace the mark atomically and durably."""
        ...


class FolderMarks:
    """Marks as files ``<trust folder>/<sha256>`` (never read through a link)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __repr__(self) -> str:
        return f"FolderMarks({str(self.folder)!r})"

    def where(self, sha256: str) -> str:
        return str(self.folder / sha256)

    def read(self, sha256: str) -> bytes | None:
        try:
            fd = open_regular(self.folder / sha256)
        except FileNotFoundError:
            return None
        try:
            return os.read(fd, MARK_BYTES + 1)  # never more: a mark is short
        except OSError as exc:
            raise io_error("reading", self.folder / sha256, exc) from exc
        finally:
            os.close(fd)

    def write(self, sha256: str, data: bytes) -> None:
        write_atomic(self.folder / sha256, data)


class LayeredMarks:
    """Marks kept in ``shared`` (every host), also read from this host's ``local`` folder."""

    def __init__(self, shared: Marks, local: Marks) -> None:
        self.shared = shared
        self.local = local

    def __repr__(self) -> str:
        return f"LayeredMarks({self.shared!r}, {self.local!r})"

    def where(self, sha256: str) -> str:
        return self.shared.where(sha256)

    def read(self, sha256: str) -> bytes | None:
        found = self.shared.read(sha256)
        return found if found is not None else self.local.read(sha256)

    def write(self, sha256: str, data: bytes) -> None:
        self.shared.write(sha256, data)


def marks_of(backend: object, trust_dir: Path) -> Marks:
    """The marks a context of ``backend`` whose trust folder is ``trust_dir`` uses: the
    backend's shared marks (``trust_marks()``) layered over the folder when it has them."""
    shared = getattr(backend, "trust_marks", None)
    local = FolderMarks(trust_dir)
    if not callable(shared):
        return local
    return LayeredMarks(shared(), local)


def _marks(where: Marks | Path) -> Marks:
    return FolderMarks(where) if isinstance(where, Path) else where


def state(marks: Marks | Path, sha256: str) -> MarkState:
    """The state of the mark of ``sha256`` (a link or a special file is ``foreign``)."""
    if SHA256.fullmatch(sha256) is None:
        return "absent"
    try:
        content = _marks(marks).read(sha256)
    except IntegrityError:  # a link, a folder, a damaged path
        return "foreign"
    if content is None:
        return "absent"
    if not content:
        return "v1"
    if len(content) != MARK_BYTES:
        return "foreign"
    return "signed" if trustkey.same(content.decode("latin-1"), signature(sha256)) else "foreign"


def is_marked(marks: Marks | Path, sha256: str) -> bool:
    """True when the mark of ``sha256`` is signed with this user's trust key."""
    return state(marks, sha256) == "signed"


def sign(marks: Marks | Path, sha256: str) -> None:
    """Write (or replace) the signed mark of ``sha256``, atomically and durably."""
    if SHA256.fullmatch(sha256) is None:
        raise IntegrityError(f"{sha256!r} is not a SHA-256 hex digest")
    _marks(marks).write(sha256, signature(sha256).encode())


def mark(marks: Marks | Path, codec: Codec, sha256: str) -> None:
    """After a save: mark the file trusted when reading it runs code (else nothing to do)."""
    if codec.runs_code:
        sign(marks, sha256)


def check(marks: Marks | Path, codec: Codec, path: Path, sha256: str, *, trusted: bool) -> None:
    """``UntrustedArtifactError`` when reading ``path`` would run code that neither a mark
    signed with this user's key nor the caller (``trusted=True``) vouches for."""
    if not codec.runs_code or trusted:
        return
    found = state(marks, sha256)
    if found == "signed":
        return
    where = f"{path}: this .{codec.suffix} (unpickling runs code)"
    if found == "v1":
        raise UntrustedArtifactError(
            f"{where} has a trust mark written by version 1, which is not signed: run "
            f"`{EXISTING_COMMAND}` to re-sign version 1's marks (it lists what it signs; "
            "--dry-run lists only), or pass trusted=True only if you trust its origin"
        )
    if found == "foreign":
        raise UntrustedArtifactError(
            f"{where} has a trust mark that is not valid under this user's trust key "
            "(forged, or signed with another key: a store moved from another user or host); "
            f"if you trust its origin, re-trust it with `{TRUST_COMMAND}` or pass trusted=True"
        )
    raise UntrustedArtifactError(
        f"{where} did not come from this store's own save; pass trusted=True only if you "
        f"trust its origin, or trust it once with `{TRUST_COMMAND}`"
    )


__all__ = [
    "EXISTING_COMMAND",
    "FolderMarks",
    "LayeredMarks",
    "MarkState",
    "Marks",
    "check",
    "is_marked",
    "mark",
    "marks_of",
    "sign",
    "signature",
    "state",
]
