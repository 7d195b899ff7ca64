"""``create_app(store) -> FastAPI``: assembles the routers of the HTTP service behind its gate.

FastAPI is imported by this package only (and by ``app.service``), never by ``import app``.
Handlers are plain ``def`` functions (FastAPI runs them on its thread pool) over the public
API of the store, which they get through a dependency (``deps.StoreDep``). Errors follow the
table of ``app.surfaces.errors``: bad input 422 (a JSON body whose ``detail[].loc`` names the
field), unknown things 404, conflicts 409, a refused pickle 403, a damaged archive upload 422;
only faults of the server itself (damaged stored data, I/O errors) answer 5xx. Before any of
that, the gate (``guard.Guard``) checks host, origin, bearer token and scope from the headers
alone. See docs/api.md, "HTTP service" and "Service security".
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from app.core.version import __version__
from app.managers.store import Store
from app.surfaces.http import access, contexts, embeddings, health, records, transfer, workflows
from app.surfaces.http.deps import Service
from app.surfaces.http.guard import Guard, GuardSettings
from app.surfaces.http.handlers import install_handlers
from app.surfaces.http.limits import DEFAULT_MAX_BODY, DEFAULT_MAX_UPLOAD, UPLOAD_PATHS, BodyLimit
from app.surfaces.http.scopes import is_public, need_of

ROUTERS = (
    health.router,
    contexts.router,
    records.router,
    embeddings.router,
    transfer.router,
    workflows.router,
    access.router,
)
"""In the order of the OpenAPI document."""

MAX_BODY = DEFAULT_MAX_BODY
"""Default cap of a request body (64 MiB); archive uploads: ``MAX_UPLOAD`` (4 GiB)."""
MAX_UPLOAD = DEFAULT_MAX_UPLOAD
BEARER = "bearer"
EXPOSED_HEADERS = ["X-Request-ID"]
CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key"]


class ServiceApp(FastAPI):
    """The FastAPI application; its OpenAPI document states the bearer scheme and, per
    operation, the scope it needs (from ``scopes.ROUTE_SCOPES``)."""

    auth: bool = True

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            if self.auth:
                declare_security(schema)
            self.openapi_schema = schema
        return self.openapi_schema


def declare_security(schema: dict[str, Any]) -> None:
    """Add the HTTP bearer scheme (the Authorize button of ``/docs``) and per-route security."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A token made by `ctxstore tokens create` (or `POST /tokens`).",
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if is_public(method.upper(), path):
                operation["security"] = []
                continue
            need = need_of(method.upper(), path)
            operation["security"] = [{BEARER: []}]
            scope_text = f"Needs a token of scope `{need.scope}`"
            if need.store_wide:
                scope_text += " not limited to some contexts"
            text = operation.get("description", "")
            operation["description"] = f"{text}\n\n{scope_text}.".strip()
            responses = operation["responses"]
            responses.setdefault("401", {"description": "No token, or not a valid one"})
            responses.setdefault("403", {"description": "The token's scope is not enough"})


def app_routes(application: FastAPI) -> list[BaseRoute]:
    """Every route of the application as one flat list, each with its full path template:
    the routes of ``ROUTERS`` and those added to the application itself (FastAPI keeps an
    included router as one opaque entry)."""
    own = (r for r in application.router.routes if isinstance(getattr(r, "path", None), str))
    return list(chain(own, chain.from_iterable(router.routes for router in ROUTERS)))


def create_app(
    store: Store,
    *,
    auth: bool = True,
    allowed_hosts: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
    max_body: int = MAX_BODY,
    max_upload: int = MAX_UPLOAD,
    process_workflows: bool = True,
) -> FastAPI:
    """The FastAPI application serving ``store``.

    ``auth``: every route but the public ones needs a bearer token of the right scope
    (without it only loopback clients are served). ``allowed_hosts`` are accepted in ``Host``
    besides ``localhost``, ``127.0.0.1`` and ``[::1]`` (``"*"``: any); ``allowed_origins``
    may send ``Origin`` besides the server itself (and get CORS headers). ``max_body`` /
    ``max_upload`` cap request bodies / archive uploads in bytes (413 beyond: ``limits``).
    With ``process_workflows`` a workflow submitted over HTTP is processed by a background
    task after the response is sent (otherwise run ``ctxstore worker``)."""
    application = ServiceApp(
        title="ctxstore",
        version=__version__,
        description="Records, embeddings, models and batch workflows of a ctxstore store.",
    )
    application.auth = auth
    application.state.ctxstore = Service(
        store, process_workflows, max_body=max_body, max_upload=max_upload
    )
    install_handlers(application)
    for router in ROUTERS:
        application.include_router(router)
    # the last added is the outermost: CORS -> Guard -> BodyLimit -> routes
    application.add_middleware(
        BodyLimit, max_body=max_body, max_upload=max_upload, upload_paths=UPLOAD_PATHS
    )
    settings = GuardSettings.build(auth=auth, hosts=allowed_hosts, origins=allowed_origins)
    application.add_middleware(
        Guard, store=store, routes=lambda: app_routes(application), settings=settings
    )
    if settings.cors:
        application.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(settings.allowed_origins),
            allow_methods=["*"],
            allow_headers=CORS_HEADERS,
            expose_headers=EXPOSED_HEADERS,
        )
    return application


__all__ = ["MAX_BODY", "MAX_UPLOAD", "app_routes", "create_app"]
