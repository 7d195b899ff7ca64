"""Exception handlers of the HTTP service, driven by the error table of ``app.surfaces.errors``.

Bad input (pydantic validation and ``InvalidInput``) answers 422 with a JSON body whose
``detail[].loc`` names the field; every other ``StorageError`` answers the status of its row
with ``{"detail": message, "type": kind}``; faults of the server are logged.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.core.errors import InvalidInput, StorageError
from app.surfaces.errors import kind_of, location

log = logging.getLogger("ctxstore.http")


def unparsable(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 echoes the input, which may hold NaN/Infinity and then cannot be sent
    as JSON (a 500): location, message and type only."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": e.get("type", ""),
        }
        for e in errors
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


def storage_error(_: Request, exc: Exception) -> JSONResponse:
    """Any ``StorageError``: the status and kind of its row of the error table."""
    assert isinstance(exc, StorageError)
    row = kind_of(exc)
    message = str(exc)
    if row.logged:
        log.error("%s: %s", row.kind.replace("_", " "), message)
    if isinstance(exc, InvalidInput):
        detail = [{"loc": [location(exc)], "msg": message, "type": row.kind}]
        return JSONResponse(status_code=row.status, content={"detail": detail})
    return JSONResponse(
        status_code=row.status_of(exc), content={"detail": message, "type": row.kind}
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, unparsable)
    app.add_exception_handler(StorageError, storage_error)


__all__ = ["install_handlers"]
