"""Request body limits of the HTTP service: ``BodyLimit``, a pure ASGI middleware.

A body may be at most ``max_upload`` bytes on an upload path (``POST /import``) and
``max_body`` bytes anywhere else. A request whose ``Content-Length`` is over the limit is
answered 413 before any of its body is read (the application is not even called); a body
without a length (chunked) is counted while it streams and the read that passes the limit
raises ``BodyTooLarge``, which the service answers 413 - nothing is ever buffered whole
here, so the memory of the server does not grow with the size of a refused body. Handlers
that consume a body as a stream (an ndjson append) therefore see the error midway and commit
nothing. See docs/api.md, "HTTP service".
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY = 64 << 20
"""64 MiB: any request body but an upload."""
DEFAULT_MAX_UPLOAD = 4 << 30
"""4 GiB: an archive uploaded to ``POST /import``."""
UPLOAD_PATHS = frozenset({"/import"})
"""Paths bounded by ``max_upload`` instead of ``max_body``."""
TOO_LARGE = 413


class BodyTooLarge(HTTPException):
    """The body of a request passed its limit (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(TOO_LARGE, f"request body larger than {limit:,} bytes")
        self.limit = limit


def declared_length(scope: Scope) -> int | None:
    """The ``Content-Length`` of a request, if it has a valid one."""
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """``BodyLimit(app, max_body=..., max_upload=..., upload_paths=...)``: bodies over their
    limit are answered 413 (before they are read when their length is declared)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_upload: int = DEFAULT_MAX_UPLOAD,
        upload_paths: Collection[str] = UPLOAD_PATHS,
    ) -> None:
        if max_body < 0 or max_upload < 0:
            raise ValueError("body limits must be >= 0")
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload
        self.upload_paths = frozenset(upload_paths)

    def limit_of(self, scope: Scope) -> int:
        """The limit that applies to a request."""
        return self.max_upload if scope.get("path") in self.upload_paths else self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope)
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await _refuse(BodyTooLarge(limit), scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # the application let it through: answer it here
            if started:
                raise
            await _refuse(exc, scope, receive, send)


async def _refuse(exc: BodyTooLarge, scope: Scope, receive: Receive, send: Send) -> None:
    """413 with the body FastAPI gives an ``HTTPException`` (``{"detail": message}``)."""
    response = JSONResponse({"detail": exc.detail}, status_code=TOO_LARGE)
    await response(scope, receive, send)


__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_UPLOAD",
    "UPLOAD_PATHS",
    "BodyLimit",
    "BodyTooLarge",
    "declared_length",
]
