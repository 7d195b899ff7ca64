"""The one error table of the surfaces: exception class -> HTTP status and CLI exit code.

The HTTP service answers a ``StorageError`` with ``status`` (a body naming ``kind``); the CLI
prints it on one line and exits with ``exit_code``. Bad input is the user's mistake (422, exit
2); damaged stored data and I/O errors are faults of the server (5xx, logged). See docs/api.md,
"Errors".
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from app.core.errors import (
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    StorageError,
    UntrustedArtifactError,
)

EXIT_FAILED = 1
"""The operation failed: not found, conflict, damage, I/O."""
EXIT_USAGE = 2
"""A usage mistake: bad option, bad argument, bad JSON, invalid name."""
DISK_FULL_STATUS = 507


@dataclass(frozen=True)
class ErrorKind:
    """How the surfaces answer one class of ``StorageError``."""

    error: type[StorageError]
    status: int
    kind: str
    exit_code: int
    logged: bool = False  # a fault of the server: the service logs it

    def status_of(self, exc: StorageError) -> int:
        """The HTTP status; a plain storage error from a full disk is 507."""
        if self.error is StorageError and exc.errno == errno.ENOSPC:
            return DISK_FULL_STATUS
        return self.status


ERRORS: tuple[ErrorKind, ...] = (
    ErrorKind(InvalidInput, 422, "invalid_input", EXIT_USAGE),
    ErrorKind(NotFoundError, 404, "not_found", EXIT_FAILED),
    ErrorKind(ConflictError, 409, "conflict", EXIT_FAILED),
    ErrorKind(UntrustedArtifactError, 403, "untrusted_artifact", EXIT_FAILED),
    ErrorKind(IntegrityError, 500, "integrity_error", EXIT_FAILED, logged=True),
    ErrorKind(StorageError, 500, "storage_error", EXIT_FAILED, logged=True),
)
"""Most specific first: the first row whose class the error is an instance of applies."""


def kind_of(exc: StorageError) -> ErrorKind:
    """The row of the table that applies to ``exc``."""
    for row in ERRORS:
        if isinstance(exc, row.error):
            return row
    return ERRORS[-1]


def location(exc: InvalidInput) -> str:
    """What a bad-input answer names: the argument (for a record's field, the path
    ``records[3].quality_score``), or ``"request"`` when no single argument is to blame."""
    return exc.argument or "request"


__all__ = ["ERRORS", "EXIT_FAILED", "EXIT_USAGE", "ErrorKind", "kind_of", "location"]
