"""The exception hierarchy every public operation raises (SPEC section 9)."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error ctxstore raises on purpose.

    ``errno`` is kept when the error wraps an ``OSError`` (disk full, I/O error...).
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class InvalidInput(StorageError, ValueError):
    """An argument broke a precondition; the message names the argument."""


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


def environmental(exc: BaseException) -> StorageError | None:
    """The error to raise when ``exc`` comes from the environment (I/O, permission, too many
    open files, disk full, read-only, busy: a ``StorageError`` that is not damage, or a bare
    ``OSError``); None when it is damage (or a bug) a check should report as a problem."""
    if isinstance(exc, (IntegrityError, SchemaVersionError)):
        return None
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError):
        return io_error("checking", getattr(exc, "filename", None) or "a file", exc)
    return None
