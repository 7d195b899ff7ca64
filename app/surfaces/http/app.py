"""``create_app(store) -> FastAPI``: assembles the routers of the HTTP service.

FastAPI is imported by this package only (and by ``app.service``), never by ``import app``.
Handlers are plain ``def`` functions (FastAPI runs them on its thread pool) over the public
API of the store, which they get through a dependency (``deps.StoreDep``). Errors follow the
table of ``app.surfaces.errors``: bad input 422 (a JSON body whose ``detail[].loc`` names the
field), unknown things 404, conflicts 409, a refused pickle 403, a damaged archive upload 422;
only faults of the server itself (damaged stored data, I/O errors) answer 5xx. See
docs/api.md, "HTTP service".
"""

from __future__ import annotations

from fastapi import FastAPI

from app.core.version import __version__
from app.managers.store import Store
from app.surfaces.http import contexts, embeddings, health, records, transfer, workflows
from app.surfaces.http.deps import Service
from app.surfaces.http.handlers import install_handlers
from app.surfaces.http.limits import DEFAULT_MAX_BODY, DEFAULT_MAX_UPLOAD, UPLOAD_PATHS, BodyLimit

ROUTERS = (
    health.router,
    contexts.router,
    records.router,
    embeddings.router,
    transfer.router,
    workflows.router,
)
"""In the order of the OpenAPI document."""


def create_app(
    store: Store,
    *,
    process_workflows: bool = True,
    max_body: int = DEFAULT_MAX_BODY,
    max_upload: int = DEFAULT_MAX_UPLOAD,
) -> FastAPI:
    """The FastAPI application serving ``store``. With ``process_workflows`` a workflow
    submitted over HTTP is processed by a background task after the response is sent
    (otherwise run ``ctxstore worker``). Request bodies are at most ``max_body`` bytes,
    archives uploaded to ``POST /import`` at most ``max_upload`` (413 otherwise)."""
    application = FastAPI(
        title="ctxstore",
        version=__version__,
        description="Records, embeddings, models and batch workflows of a ctxstore store.",
    )
    application.state.ctxstore = Service(store, process_workflows)
    install_handlers(application)
    application.add_middleware(
        BodyLimit, max_body=max_body, max_upload=max_upload, upload_paths=UPLOAD_PATHS
    )
    for router in ROUTERS:
        application.include_router(router)
    return application


__all__ = ["create_app"]
