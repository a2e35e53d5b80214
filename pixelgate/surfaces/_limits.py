"""Limits every surface shares, enforced below the routes: the body size while it streams in (and
the per-address throttle on failed authentication, services.authfailures, which SurfaceRoute
applies before the key is looked up).

Both raise GatewayErrors where a route can render them in its own shape: the body limit from
inside `receive()` (so `request.body()`, `request.form()` and python-multipart raise it where
the route reads the body). What escapes a route (a page that does not catch it) is answered
here in a plain JSON shape."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelgate.errors import GatewayError, PayloadTooLarge


class BodyLimit:
    """Refuses a request body past `max_bytes` as it arrives: a declared Content-Length at the
    first read, a chunked body at the chunk that crosses the limit. Nothing past the limit is
    read, so a 200 MB chunked upload costs at most `max_bytes` of memory (reading whole and
    then measuring cost the whole body, twice: the chunks and their join)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes
        declared = _content_length(scope)
        received = 0
        started = False

        def too_large() -> PayloadTooLarge:
            return PayloadTooLarge(f"The request body is larger than {limit} bytes (max_body_bytes).")

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge as exc:
            if started:
                raise
            await plain_error(send, exc)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def plain_error(send: Send, exc: GatewayError) -> None:
    """The error for a route that let it through: {"error": {"message", "type", "code"}}."""
    body = orjson.dumps({"error": {"message": exc.message, "type": exc.type, "param": exc.field, "code": exc.code}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
