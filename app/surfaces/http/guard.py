"""The gate of the HTTP service: a pure ASGI middleware that decides from the request line and
the headers alone, BEFORE any of the body is read, whether a request goes on.

In order:

1. ``Host`` must be an allowed host (default ``localhost``, ``127.0.0.1``, ``[::1]``; the
   server adds its bound address and ``--allow-host``), else 400: a page on another site that
   rebinds its DNS name to 127.0.0.1 cannot talk to the service.
2. ``Origin``, when sent, must be the server's own (``http(s)://<Host>``) or an allowed
   origin, else 403: a web page cannot use the user's browser against the service.
3. Unless the route is public (``scopes.is_public``): with ``auth`` the bearer token must be
   known (401 with ``WWW-Authenticate: Bearer``) and hold the scope ``scopes.ROUTE_SCOPES``
   names for the route (403); a token limited to some contexts gets 404 for a ``{context}`` or
   a workflow of a context outside it, and 403 on store-wide routes. Without ``auth`` only
   loopback clients are served (403 for the others).

The token's description goes to the handlers in the ASGI scope (``deps.TokenDep``); every
response carries ``X-Request-ID``. Every mutating request and every export, answered or
refused, is recorded in the audit log after its response was sent, in a worker thread. See
docs/api.md, "Service security".
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import orjson
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.access_types import AuditEvent, TokenInfo
from app.core.errors import NotFoundError, StorageError
from app.managers.store import Store
from app.surfaces.http.deps import STATE_REQUEST_ID, STATE_TARGET, STATE_TOKEN
from app.surfaces.http.scopes import audited, is_public, need_of

log = logging.getLogger("ctxstore.http")

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
ANY_HOST = "*"
REQUEST_ID_HEADER = b"x-request-id"
NO_AUTH_TOKEN = TokenInfo(name="", scope="admin", contexts=None, created_at="")
"""What handlers see when the service runs without authentication (loopback only)."""


def normal_host(host: str) -> str:
    """A host name as ``Host`` carries it, without port: lower case, IPv6 in brackets."""
    host = host.strip().lower()
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def host_of(header: str) -> str:
    """The host part of a ``Host`` header (``example.com:8000`` -> ``example.com``)."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[: end + 1] if end > 0 else header
    return header.rsplit(":", 1)[0] if ":" in header else header


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass(frozen=True)
class GuardSettings:
    """How the gate is configured (``create_app`` builds it)."""

    auth: bool = True
    allowed_hosts: frozenset[str] = LOOPBACK_HOSTS
    allowed_origins: frozenset[str] = frozenset()
    cors: bool = False

    @classmethod
    def build(
        cls, *, auth: bool, hosts: Iterable[str] | None, origins: Iterable[str] | None
    ) -> GuardSettings:
        extra = {normal_host(h) for h in hosts or ()}
        allowed_origins = frozenset(o.strip().lower().rstrip("/") for o in origins or ())
        return cls(
            auth=auth,
            allowed_hosts=LOOPBACK_HOSTS | extra,
            allowed_origins=allowed_origins,
            cors=bool(allowed_origins),
        )

    def host_allowed(self, host: str) -> bool:
        return ANY_HOST in self.allowed_hosts or host in self.allowed_hosts

    def origin_allowed(self, origin: str, own: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        return origin == own or origin in self.allowed_origins


@dataclass(frozen=True)
class RouteMatch:
    endpoint: str
    template: str
    params: dict[str, Any]


class Refused(Exception):
    """A request the gate answers itself."""

    def __init__(
        self, status: int, kind: str, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = list(headers)


class Guard:
    """The ASGI middleware; ``routes()`` lists the application's routes (read at each
    request, so a route added later is guarded too)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Store,
        routes: Callable[[], Iterable[BaseRoute]],
        settings: GuardSettings,
    ) -> None:
        self.app = app
        self.store = store
        self.routes = routes
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the service has none; never let one past the gate
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _Exchange(scope, send, self._record)
        try:
            route = self._match(scope)
            request.route = route
            token = await self._check(scope, route, request)
        except Refused as refused:
            await request.refuse(refused)
            await request.finish(None)
            return
        state = dict(scope.get("state") or {})
        state[STATE_TOKEN] = token
        state[STATE_REQUEST_ID] = request.request_id
        inner = {**scope, "state": state}
        request.state = state
        request.token = token
        try:
            await self.app(inner, receive, request.send)
        finally:
            await request.finish(state)

    # -- the checks ----------------------------------------------------------------------

    async def _check(
        self, scope: Scope, route: RouteMatch | None, request: _Exchange
    ) -> TokenInfo | None:
        headers = _headers(scope)
        host = host_of(headers.get("host", ""))
        if not host or not self.settings.host_allowed(host):
            raise Refused(400, "bad_host", f"host {host[:100]!r} is not served here")
        origin = headers.get("origin")
        if origin is not None:
            own = f"{scope.get('scheme', 'http')}://{headers['host'].strip().lower()}"
            if not self.settings.origin_allowed(origin, own):
                raise Refused(403, "forbidden", f"origin {origin[:100]!r} is not allowed")
        method: str = scope["method"]
        if not self.settings.auth:
            client = scope.get("client")
            if client is None or not is_loopback(str(client[0])):
                raise Refused(403, "forbidden", "without authentication only loopback is served")
            return NO_AUTH_TOKEN
        if is_public(method, scope["path"]):
            return None
        preflight = method == "OPTIONS" and "access-control-request-method" in headers
        if self.settings.cors and preflight:
            return None  # answered by the CORS middleware; carries no data
        token = await self._authenticate(headers.get("authorization"))
        request.token = token  # a refusal from here on is recorded under its name
        if route is not None:
            await self._authorize(token, method, route)
        return token

    async def _authenticate(self, authorization: str | None) -> TokenInfo:
        challenge = [(b"www-authenticate", b"Bearer")]
        if authorization is None:
            raise Refused(401, "unauthorized", "a bearer token is required", challenge)
        kind, _, presented = authorization.partition(" ")
        info = None
        if kind.lower() == "bearer" and presented.strip():
            info = await anyio.to_thread.run_sync(self._lookup, presented.strip())
        if info is None:
            invalid = [(b"www-authenticate", b'Bearer error="invalid_token"')]
            raise Refused(401, "unauthorized", "the bearer token is not valid", invalid)
        return info

    def _lookup(self, presented: str) -> TokenInfo | None:
        info: TokenInfo | None = self.store.tokens.authenticate(presented)
        return info

    async def _authorize(self, token: TokenInfo, method: str, route: RouteMatch) -> None:
        need = need_of(method, route.template)
        if not token.allows(need.scope):
            raise Refused(403, "forbidden", f"this needs a token of scope {need.scope!r}")
        if need.store_wide and token.contexts is not None:
            raise Refused(403, "forbidden", "this needs a token not limited to some contexts")
        context = route.params.get("context")
        if isinstance(context, str) and not token.sees(context):
            raise Refused(404, "not_found", f"context {context!r} not found")
        workflow_id = route.params.get("workflow_id")
        if isinstance(workflow_id, str) and token.contexts is not None:
            owner = await anyio.to_thread.run_sync(self._workflow_context, workflow_id)
            if owner is not None and not token.sees(owner):
                raise Refused(404, "not_found", f"workflow {workflow_id!r} not found")

    def _workflow_context(self, workflow_id: str) -> str | None:
        try:
            return self.store.workflows.get(workflow_id).context
        except (NotFoundError, StorageError):  # the handler answers it
            return None

    def _match(self, scope: Scope) -> RouteMatch | None:
        partial: RouteMatch | None = None
        for route in self.routes():
            match, child = route.matches(scope)
            if match is Match.NONE:
                continue
            found = RouteMatch(
                endpoint=str(getattr(route, "name", "") or ""),
                template=str(getattr(route, "path", scope["path"])),
                params=dict(child.get("path_params") or {}),
            )
            if match is Match.FULL:
                return found
            partial = partial or found
        return partial

    # -- the audit log -------------------------------------------------------------------

    def _record(self, event: AuditEvent) -> None:
        try:
            self.store.audit.record(event)
        except StorageError as exc:
            log.error("audit: cannot record %s %s: %s", event.action, event.target, exc)


SINGLE_HEADERS = frozenset({"host", "origin", "authorization"})
"""Headers the gate decides on: sent twice, the request is refused (which one would count?)."""


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers (lower-case names); 400 if one of ``SINGLE_HEADERS`` repeats."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        if name in found and name in SINGLE_HEADERS:
            raise Refused(400, "bad_request", f"header {name!r} sent more than once")
        found[name] = raw_value.decode("latin-1")
    return found


class _Exchange:
    """One request passing the gate: its id, status and what the audit log records of it."""

    def __init__(self, scope: Scope, send: Send, record: Callable[[AuditEvent], None]) -> None:
        self.scope = scope
        self._send = send
        self._record = record
        self.request_id = uuid.uuid4().hex
        self.route: RouteMatch | None = None
        self.token: TokenInfo | None = None
        self.state: dict[str, Any] | None = None
        self.status: int | None = None
        self.recorded = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, self.request_id.encode())]
            message = {**message, "headers": headers}
        await self._send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            await self.finish(self.state)

    async def refuse(self, refused: Refused) -> None:
        body = orjson.dumps({"detail": refused.detail, "type": refused.kind})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *refused.headers,
        ]
        start = {"type": "http.response.start", "status": refused.status, "headers": headers}
        await self.send(start)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def finish(self, state: dict[str, Any] | None) -> None:
        """Record the request in the audit log (once) if it is audited."""
        if self.recorded:
            return
        self.recorded = True
        endpoint = self.route.endpoint if self.route else ""
        if not audited(self.scope["method"], endpoint):
            return
        event = AuditEvent(
            token=self.token.name if self.token else "",
            action=endpoint or "unknown",
            target=_target(self.route, state),
            outcome=self.status if self.status is not None else 500,
            request_id=self.request_id,
        )
        try:
            with anyio.CancelScope(shield=True):  # e.g. a response that saw the disconnect
                await anyio.to_thread.run_sync(self._record, event)
        except Exception:  # never let the log break a response already sent
            log.exception("audit: cannot record request %s", self.request_id)


def _target(route: RouteMatch | None, state: dict[str, Any] | None) -> str:
    """What a request acted on: what its handler named, else from its path parameters."""
    named = (state or {}).get(STATE_TARGET)
    if isinstance(named, str) and named:
        return named
    if route is None:
        return ""
    params = route.params
    for key in ("workflow_id", "name"):
        if key in params and "context" not in params:
            return str(params[key])
    parts = [str(params[k]) for k in ("context", "collection") if k in params]
    return "/".join(parts)


__all__ = ["NO_AUTH_TOKEN", "Guard", "GuardSettings", "host_of", "is_loopback", "normal_host"]
