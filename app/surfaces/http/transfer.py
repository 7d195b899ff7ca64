"""Whole contexts over HTTP: ``GET /contexts/{context}/export`` downloads a ``.tar.gz``,
``POST /import`` uploads one (multipart ``archive`` field or a raw ``application/gzip``
body, streamed to a temp file and bounded by the upload limit; checked completely before
anything becomes visible)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from app.core.errors import IntegrityError, InvalidInput, SchemaVersionError
from app.core.rules import ContextName, OnConflictValue, check
from app.core.transfer_types import Manifest
from app.surfaces.http.deps import StoreDep, audit_target, open_context
from app.surfaces.http.streaming import blocking_chunks, media_type
from app.surfaces.http.upload import FIELD, UPLOAD_TYPES, save_upload

router = APIRouter(tags=["contexts"])


@router.get("/contexts/{context}/export", response_class=FileResponse)
def export(context: str, store: StoreDep) -> FileResponse:
    open_context(store, context)
    tmp = Path(tempfile.mkdtemp(prefix="ctxstore-export-"))
    dest = tmp / f"{context}.tar.gz"
    try:
        store.export_context(context, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FileResponse(
        dest,
        media_type="application/gzip",
        filename=f"{context}.tar.gz",
        background=BackgroundTask(shutil.rmtree, tmp, True),
    )


IMPORT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    FIELD: {
                        "type": "string",
                        "format": "binary",
                        "description": "A .tar.gz written by export",
                    }
                },
                "required": [FIELD],
            }
        },
        "application/gzip": {
            "schema": {"type": "string", "format": "binary", "description": "The .tar.gz itself"}
        },
    },
}
"""The two bodies of an import, for the OpenAPI document (the handler streams the body)."""


@router.post(
    "/import",
    response_model=Manifest,
    status_code=201,
    openapi_extra={"requestBody": IMPORT_BODY},
    responses={
        413: {"description": "Archive larger than the server's --max-upload"},
        415: {"description": "Body neither multipart/form-data nor application/gzip"},
    },
)
async def import_archive(
    request: Request,
    store: StoreDep,
    name: Annotated[str | None, Query()] = None,
    on_conflict: Annotated[OnConflictValue, Query()] = "fail",
) -> Manifest | Response:
    """Import an uploaded archive: streamed to a private temp file (never held in memory),
    then checked completely before anything becomes visible."""
    check(ContextName | None, name, "name")
    content_type = request.headers.get("content-type")
    if media_type(content_type) not in UPLOAD_TYPES:
        raise HTTPException(415, f"content type {media_type(content_type)!r}: {_SEND}")

    def run() -> Manifest:
        with _uploaded(blocking_chunks(request.stream()), content_type) as path:
            try:
                manifest: Manifest = store.import_context(path, name=name, on_conflict=on_conflict)
            except (IntegrityError, SchemaVersionError) as exc:
                raise InvalidInput(f"archive: {exc}") from None
        return manifest

    if name is not None:
        audit_target(request, name)
    try:
        manifest = await anyio.to_thread.run_sync(run)
    except ClientDisconnect:  # nothing imported, nobody to answer
        return Response(status_code=400)
    audit_target(request, name or manifest.context)
    return manifest


_SEND = f"send multipart/form-data (field {FIELD!r}) or application/gzip"


@contextlib.contextmanager
def _uploaded(chunks: Iterable[bytes], content_type: str | None) -> Iterator[Path]:
    """The uploaded archive written to a private temp file (removed afterwards)."""
    fd, name = tempfile.mkstemp(prefix="ctxstore-upload-", suffix=".tar.gz")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            save_upload(chunks, content_type, out)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
