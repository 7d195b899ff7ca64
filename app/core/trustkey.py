"""The trust key: a secret kept outside every store, under which trust marks, token hashes and
the audit chain are signed (docs/api.md, "Service security").

Where it comes from, first found wins:

1. ``$CTXSTORE_TRUST_KEY``: any text of at least ``MIN_KEY_CHARS`` characters (e.g.
   ``openssl rand -hex 32``). Machines that share a store share this value.
2. the per-user file ``$XDG_CONFIG_HOME/ctxstore/trust.key`` (``~/.config/...`` when
   ``XDG_CONFIG_HOME`` is unset): created with mode 0600 and 256 random bits on first use;
   a file that others may read or write, or a link, is refused.

Whoever can write a store but does not hold this key cannot make a mark, a token or an audit
entry the store accepts. Each use signs under its own purpose (domain separation), so a value
made for one purpose is never valid for another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from app.core.errors import StorageError

ENV = "CTXSTORE_TRUST_KEY"
MIN_KEY_CHARS = 32
KEY_FILE = Path("ctxstore") / "trust.key"
PURPOSES = frozenset({"model-trust", "token", "audit"})


def key_file() -> Path:
    """The per-user key file (whether or not it exists yet)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / KEY_FILE


def trust_key() -> bytes:
    """The key (``StorageError`` when it is too short, or its file is unsafe or unreadable)."""
    value = os.environ.get(ENV)
    if value is not None:
        if len(value) < MIN_KEY_CHARS:
            raise StorageError(
                f"${ENV} must hold at least {MIN_KEY_CHARS} characters "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        return value.encode()
    return _file_key(key_file())


def _file_key(path: Path) -> bytes:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, secrets.token_hex(32).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
                raise StorageError(
                    f"{path}: the trust key file must be a regular file only its owner can "
                    "read (chmod 600)"
                )
            key = os.read(fd, 4096).strip()
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"{path}: cannot read the trust key: {exc}", errno=exc.errno) from exc
    if len(key) < MIN_KEY_CHARS:
        raise StorageError(f"{path}: the trust key is shorter than {MIN_KEY_CHARS} characters")
    return key


def sign(purpose: str, data: bytes, *, key: bytes | None = None) -> str:
    """The hex HMAC-SHA256 of ``data`` for ``purpose`` under the trust key (or ``key``)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown signing purpose {purpose!r}")
    mac = hmac.new(trust_key() if key is None else key, purpose.encode() + b"\x00", hashlib.sha256)
    mac.update(data)
    return mac.hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time equality of two signatures."""
    return hmac.compare_digest(a.encode(), b.encode())


__all__ = ["ENV", "MIN_KEY_CHARS", "key_file", "same", "sign", "trust_key"]
