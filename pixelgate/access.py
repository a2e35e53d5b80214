"""AccessLog: one `pixelgate.access` line per request, written once its answer has been sent (a
stream's, when the stream ends), and the last word on an exception nothing else caught.

A pure ASGI middleware (BaseHTTPMiddleware would put every request and stream through a task
and a queue). What the request did, its key, model, channel, images and cost, is read from the
RequestContext its route kept in `request.state.ctx` (surfaces/_route.py): the object its
request-log row and its metrics are made from, so the three agree. The key itself is never in
it, only the key's id and name."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelgate.errors import GatewayError
from pixelgate.logs import REQUEST_ID, quoted
from pixelgate.surfaces._limits import plain_error
from pixelgate.surfaces._route import format_amount, new_request_id

access = logging.getLogger("pixelgate.access")
log = logging.getLogger("pixelgate")


class AccessLog:
    def __init__(self, app: ASGIApp, currency: str) -> None:
        self.app = app
        self.currency = currency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 0
        state = scope.setdefault("state", {})  # request.state: where the route leaves its ctx

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception as exc:  # escaped every route (a console page, a bug in rendering)
            ctx = state.get("ctx")
            request_id = ctx.request_id if ctx is not None else REQUEST_ID.get() or new_request_id()
            state["request_id"] = request_id  # for the access line of a request with no ctx
            log.exception("unhandled error in %s %s", scope["method"], quoted(scope["path"]),
                          extra={"request_id": request_id})
            if status:
                return  # the answer is half sent: uvicorn closes the connection
            status = 500
            await plain_error(send, GatewayError(f"Internal error ({exc.__class__.__name__}); "
                                                 f"request id {request_id}."))
        finally:
            if access.isEnabledFor(logging.INFO):
                self.write(scope, state, status, started)

    def write(self, scope: Scope, state: dict, status: int, started: float) -> None:
        ctx = state.get("ctx")
        principal = ctx.principal if ctx is not None else None
        fields = {
            "method": scope["method"], "path": scope["path"], "status": status,
            "request_id": ctx.request_id if ctx is not None else state.get("request_id"),
            "surface": ctx.surface if ctx is not None else _surface(scope["path"]),
            "key_id": principal.key_id if principal is not None else None,
            "key_name": principal.name if principal is not None else None,
            "model": ctx.model[:200] if ctx is not None and ctx.model else None,  # a client's: any length
            "channel": ctx.channel if ctx is not None else None,
            "images": ctx.images_delivered if ctx is not None else None,
            "cost": format_amount(ctx.cost) if ctx is not None and ctx.cost is not None else None,
            "currency": self.currency if ctx is not None and ctx.cost is not None else None,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }
        # makeRecord + handle is access.info() without the walk up the stack for the caller's
        # file and line, a fifth of the line's cost, and the same for every line
        access.handle(access.makeRecord(access.name, logging.INFO, __file__, 0, "%s %s %d",
                                        (scope["method"], quoted(scope["path"]), status), None,
                                        extra={"access": fields}))


def _surface(path: str) -> str | None:
    """The surface of a request no SurfaceRoute served (console pages, static files, /healthz)."""
    return "console" if path.startswith("/console") else None
