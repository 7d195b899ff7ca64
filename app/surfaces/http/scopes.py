"""Who may call what: the ONE table of the scope each route of the HTTP service needs.

Keyed by ``(method, route path template)`` exactly as the routers declare them (``HEAD`` is
looked up as ``GET``). The guard (``guard.py``) reads it before the body of a request is read;
the OpenAPI document states it per operation. A route missing from the table needs ``admin``
(and ``tests/test_service_access.py`` fails, listing it). Scopes are ordered: ``read`` <
``write`` < ``admin`` (``app.core.access_types``). A ``store_wide`` route acts on the whole
store (import, tokens, audit): a token limited to some contexts may not call it (403), else
such a token could mint itself an unlimited one. See docs/api.md, "Service security".
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.access_types import Scope


@dataclass(frozen=True)
class Need:
    """What a route needs: a scope, and for ``store_wide`` routes a token for every context."""

    scope: Scope
    store_wide: bool = False


READ = Need("read")
WRITE = Need("write")
ADMIN = Need("admin")
STORE_ADMIN = Need("admin", store_wide=True)

_C = "/contexts/{context}"
_COLL = _C + "/collections/{collection}"

ROUTE_SCOPES: dict[tuple[str, str], Need] = {
    # contexts
    ("GET", "/contexts"): READ,
    ("POST", "/contexts"): WRITE,
    ("GET", _C): READ,
    ("DELETE", _C): ADMIN,
    # records
    ("POST", _COLL + "/records"): WRITE,
    ("GET", _COLL + "/records"): READ,
    ("POST", _COLL + "/query"): READ,
    ("GET", _COLL + "/records/{record_id}"): READ,
    ("GET", _COLL + "/count"): READ,
    ("POST", _COLL + "/count"): READ,
    ("DELETE", _COLL + "/records"): WRITE,
    ("POST", _COLL + "/compact"): WRITE,
    # embeddings
    ("GET", _C + "/embeddings"): READ,
    ("POST", _C + "/embeddings/{name}/search"): READ,
    # whole contexts
    ("GET", _C + "/export"): READ,
    ("POST", "/import"): STORE_ADMIN,
    # workflows (scoped by the workflow's context)
    ("POST", "/workflows"): WRITE,
    ("GET", "/workflows"): READ,
    ("GET", "/workflows/{workflow_id}"): READ,
    ("POST", "/workflows/{workflow_id}/cancel"): WRITE,
    ("POST", "/workflows/{workflow_id}/rollback"): WRITE,
    # access control itself
    ("POST", "/tokens"): STORE_ADMIN,
    ("GET", "/tokens"): STORE_ADMIN,
    ("DELETE", "/tokens/{name}"): STORE_ADMIN,
    ("GET", "/audit"): STORE_ADMIN,
}
"""(method, path template) -> what the route needs."""

PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/health"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
    }
)
"""Answered without a token: liveness and the API's own description (no data)."""

PUBLIC_PREFIX = "/ui"
"""The dashboard's static shell (``/ui`` and ``/ui/...``): no data, no token."""

AUDITED_READS = frozenset({"export"})
"""Endpoint names recorded in the audit log although their method does not change anything."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def lookup_method(method: str) -> str:
    return "GET" if method == "HEAD" else method


def is_public(method: str, path: str) -> bool:
    """True for the routes answered without a token."""
    method = lookup_method(method)
    if (method, path) in PUBLIC_ROUTES:
        return True
    return method == "GET" and (path == PUBLIC_PREFIX or path.startswith(PUBLIC_PREFIX + "/"))


def need_of(method: str, template: str) -> Need:
    """What the route ``(method, template)`` needs; ``admin`` for a route not in the table."""
    return ROUTE_SCOPES.get((lookup_method(method), template), STORE_ADMIN)


def audited(method: str, endpoint: str) -> bool:
    """Whether a request is recorded in the audit log: every mutating one, and exports."""
    return method not in SAFE_METHODS or endpoint in AUDITED_READS


__all__ = [
    "ADMIN",
    "AUDITED_READS",
    "PUBLIC_PREFIX",
    "PUBLIC_ROUTES",
    "READ",
    "ROUTE_SCOPES",
    "STORE_ADMIN",
    "WRITE",
    "Need",
    "audited",
    "is_public",
    "lookup_method",
    "need_of",
]
