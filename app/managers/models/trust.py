"""Trust marks for model files whose reading runs code (pickles; docs/api.md, "Models").

``save`` of such a file creates the empty file ``<store>/trust/<sha256>``: outside every
context, so an imported archive cannot bring its own. A file whose digest has no mark loads
only with ``trusted=True``. Which formats need this is the codec's ``runs_code``; nothing
here knows a format by name."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.atomic import write_atomic
from app.core.errors import IntegrityError, UntrustedArtifactError
from app.core.nofollow import lstat_as
from app.formats.modelcodecs import Codec

SHA256 = re.compile(r"[0-9a-f]{64}")


def is_marked(trust_dir: Path, sha256: str) -> bool:
    """True when this store's own ``save`` marked the digest ``sha256`` as trusted."""
    if SHA256.fullmatch(sha256) is None:
        return False
    try:  # a link is never a trust mark
        return lstat_as(trust_dir / sha256, "file") is not None
    except IntegrityError:
        return False


def mark(trust_dir: Path, codec: Codec, sha256: str) -> None:
    """After a save: mark the file trusted when reading it runs code (else nothing to do)."""
    if codec.runs_code:
        write_atomic(trust_dir / sha256, b"")


def check(trust_dir: Path, codec: Codec, path: Path, sha256: str, *, trusted: bool) -> None:
    """``UntrustedArtifactError`` when reading ``path`` would run code that neither this
    store's own ``save`` nor the caller (``trusted=True``) vouches for."""
    if codec.runs_code and not trusted and not is_marked(trust_dir, sha256):
        raise UntrustedArtifactError(
            f"{path}: this .{codec.suffix} did not come from this store's own save; "
            "pass trusted=True only if you trust its origin (unpickling runs code)"
        )
