"""The exception hierarchy every public operation raises (docs/api.md, "Errors")."""

from __future__ import annotations

import errno as _errno


class StorageError(Exception):
    """Base of every error ctxstore raises on purpose.

    ``errno`` is kept when the error wraps an ``OSError`` (disk full, I/O error...).
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class InvalidInput(StorageError, ValueError):
    """An argument broke a precondition; the message names the argument, and ``argument``
    holds that name (``None`` when no single argument is to blame)."""

    def __init__(self, message: str, *, argument: str | None = None, errno: int | None = None):
        super().__init__(message, errno=errno)
        if argument is None and ": " in message:
            head = message.split(": ", 1)[0]
            argument = head if head.replace("_", "").replace(".", "").isalnum() else None
        self.argument = argument


class NotFoundError(StorageError, KeyError):
    """A context, collection member, embedding set, model or workflow does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConflictError(StorageError):
    """The operation conflicts with the current state (illegal move, existing name...)."""


class IntegrityError(StorageError):
    """Stored data is damaged; the message names the file."""


class SchemaVersionError(StorageError):
    """A file was written by an unknown (newer) format version."""


class UntrustedArtifactError(StorageError):
    """A pickle-based artefact did not come from this store's own ``save``."""


def io_error(action: str, path: object, exc: OSError) -> StorageError:
    """Wrap an ``OSError`` in a ``StorageError`` that keeps its errno."""
    return StorageError(f"{action} failed for {path}: {exc.strerror or exc}", errno=exc.errno)


ENVIRONMENT_ERRNOS = frozenset(
    getattr(_errno, name)
    for name in (
        "EACCES",
        "EPERM",
        "EMFILE",
        "ENFILE",
        "ENOSPC",
        "EDQUOT",
        "EROFS",
        "EIO",
        "EBUSY",
        "EAGAIN",
        "ENOMEM",
        "EFBIG",
        "EINTR",
        "ETIMEDOUT",
        "ENOLCK",
        "ESTALE",
    )
    if hasattr(_errno, name)
)
"""Errnos the environment causes (permission, resources, the device): never damage. A folder,
a link or nothing where a file should be (EISDIR, ENOTDIR, ELOOP, ENOENT) is not here."""


def environmental(exc: BaseException) -> StorageError | None:
    """The error to raise when ``exc`` comes from the environment (permission, too many open
    files, disk full, read-only, I/O, busy: an errno of ``ENVIRONMENT_ERRNOS`` on a plain
    ``StorageError`` or a bare ``OSError``); None when a check should report it as a problem
    (damage, and every other finding)."""
    if isinstance(exc, OSError):
        if exc.errno in ENVIRONMENT_ERRNOS:
            return io_error("checking", exc.filename or "a file", exc)
        return None
    if type(exc) is StorageError and exc.errno in ENVIRONMENT_ERRNOS:
        return exc
    return None
