"""SurfaceRoute: renders every GatewayError raised while serving a route in the surface's own
error shape, and writes the request log row. Dependencies and body validation run inside the
route handler, so auth and validation failures get the surface's shape too."""

from __future__ import annotations

import logging
import secrets
from decimal import Decimal
from typing import Callable

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from pixelgate.db.session import as_unavailable, unavailable
from pixelgate.errors import GatewayError, InvalidRequest
from pixelgate.logs import REQUEST_ID
from pixelgate.services.auth import Principal, presented_token
from pixelgate.services.engine import RequestContext
from pixelgate.surfaces._json import JSONResponse

log = logging.getLogger("pixelgate")

ErrorRenderer = Callable[[GatewayError], Response]


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def context(request: Request) -> RequestContext:
    return request.state.ctx


async def authenticate(request: Request) -> Principal:
    """The calling key's principal; a key that does not verify counts against the client's
    address (services.auth: the guessing throttle). Kept on the request's context, for its log.
    The URL's `?key=` counts only on a route made with key_in_query (Gemini's)."""
    query = request.query_params if getattr(request.scope.get("route"), "key_in_query", False) else None
    principal = await request.app.state.services.keys.authenticate(
        presented_token(request.headers, query), request.client.host if request.client else "")
    if (ctx := getattr(request.state, "ctx", None)) is not None:
        ctx.principal = principal
    return principal


async def authenticated(request: Request) -> RequestContext:
    """The request's context, its caller authenticated (authenticate)."""
    await authenticate(request)
    return request.state.ctx


def openai_error(exc: GatewayError) -> Response:
    """OpenAI's error shape, which the predictions, files and admin APIs answer too."""
    return JSONResponse({"error": {"message": exc.message, "type": exc.type, "param": exc.field,
                                   "code": exc.code}}, status_code=exc.status)


def surface_route(surface: str, render_error: ErrorRenderer, logged: bool = True,
                  key_in_query: bool = False) -> type[APIRoute]:
    """The route class of a surface's routes; `key_in_query`: its clients may send the key as
    `?key=` (authenticate)."""
    class SurfaceRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                request_id = new_request_id()
                REQUEST_ID.set(request_id)  # on every line logged while it is served
                ctx = RequestContext(request_id=request_id, surface=surface, base_url=str(request.base_url))
                request.state.ctx = ctx
                error: GatewayError | None = None
                try:
                    response = await _run(handler, request)
                except GatewayError as exc:
                    error = exc
                except RequestValidationError as exc:
                    error = _validation_error(exc)
                except Exception as exc:  # last resort: log it, answer 500 in our shape
                    error = as_unavailable(exc)  # a database that dropped us: 503, not our fault
                    if error is None:
                        log.exception("unhandled error in %s %s", request.method, request.url.path)
                        error = GatewayError(f"Internal error ({exc.__class__.__name__}); request id {request_id}.")
                if error is not None:
                    response = render_error(error)
                    response.headers.update(error.headers)
                response.headers["x-request-id"] = request_id
                if ctx.replayed:  # Stripe's name for an answer an Idempotency-Key repeat got
                    response.headers["idempotent-replayed"] = "true"
                _cost_headers(response, ctx, request.app.state.services.engine.billing.currency)
                if not getattr(request.state, "log_deferred", False):  # a stream does this when it ends
                    await ctx.finish()
                    if logged:
                        request.app.state.services.log_request(ctx, response.status_code, error)
                return response

            return handle

    SurfaceRoute.key_in_query = key_in_query  # read by authenticate, from the matched route
    return SurfaceRoute


async def _run(handler: Callable, request: Request) -> Response:
    """The route's answer; a read (GET) whose database connection dropped under it runs once
    more on a fresh one, since it changed nothing."""
    try:
        return await handler(request)
    except Exception as exc:
        if request.method not in ("GET", "HEAD") or not unavailable(exc):
            raise
    return await handler(request)


def _cost_headers(response: Response, ctx: RequestContext, currency: str) -> None:
    """What the request cost the client (marked up, in the gateway's currency); for a task
    still running, the most it can cost (its hold)."""
    if ctx.cost is not None:
        response.headers["x-pixelgate-cost"] = format_amount(ctx.cost)
        response.headers["x-pixelgate-currency"] = currency
    elif ctx.quote is not None and ctx.images_requested and response.status_code < 400:
        response.headers["x-pixelgate-cost-limit"] = format_amount(ctx.quote.unit_price * ctx.images_requested)
        response.headers["x-pixelgate-currency"] = currency


def format_amount(amount: Decimal) -> str:
    return format(Decimal(amount).normalize(), "f")


def task_cost(task) -> dict:
    """A task's cost as its renderings show it: null until it is finished."""
    return {"cost": format_amount(task.cost) if task.cost is not None else None}


def _validation_error(exc: RequestValidationError) -> InvalidRequest:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or None
    return InvalidRequest(f"Invalid value for '{field}': {err.get('msg')}." if field else str(err.get("msg")),
                          field=field)
