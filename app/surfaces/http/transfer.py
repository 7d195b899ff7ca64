"""Whole contexts over HTTP: ``GET /contexts/{context}/export`` downloads a ``.tar.gz``,
``POST /import`` uploads one (checked completely before anything becomes visible)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from app.core.errors import IntegrityError, InvalidInput, SchemaVersionError
from app.core.rules import ContextName, OnConflictValue, check
from app.core.transfer_types import Manifest
from app.surfaces.http.deps import StoreDep, open_context

UPLOAD_CHUNK = 1 << 20

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


@router.post("/import", response_model=Manifest, status_code=201)
def import_archive(
    archive: Annotated[UploadFile, File(description="A .tar.gz written by export")],
    store: StoreDep,
    name: Annotated[str | None, Query()] = None,
    on_conflict: Annotated[OnConflictValue, Query()] = "fail",
) -> Manifest:
    check(ContextName | None, name, "name")
    with _uploaded(archive) as path:
        try:
            manifest: Manifest = store.import_context(path, name=name, on_conflict=on_conflict)
        except (IntegrityError, SchemaVersionError) as exc:
            raise InvalidInput(f"archive: {exc}") from None
    return manifest


@contextlib.contextmanager
def _uploaded(upload: UploadFile) -> Iterator[Path]:
    """The upload copied to a private temp file (removed afterwards)."""
    fd, name = tempfile.mkstemp(prefix="ctxstore-upload-", suffix=".tar.gz")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := upload.file.read(UPLOAD_CHUNK):
                out.write(chunk)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
