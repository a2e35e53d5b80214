"""Limits every surface shares, enforced below the routes: the body size while it streams in,
and a per-address throttle on failed authentication.

Both raise GatewayErrors where a route can render them in its own shape: the body limit from
inside `receive()` (so `request.body()`, `request.form()` and python-multipart raise it where
the route reads the body), the throttle from `SurfaceRoute` before the key is looked up. What
escapes a route (a page that does not catch it) is answered here in a plain JSON shape."""

from __future__ import annotations

import math
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelgate.errors import GatewayError, PayloadTooLarge, RateLimited
from pixelgate.services.redisconn import RedisLink, link

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


class AuthFailures:
    """A fixed-window count of failed credential checks (keys that did not verify) per client
    address. Past `limit` in a window, that address's further failures are answered 429 until
    the window ends: guessing keys should be slow. A key that verifies still passes (see
    services.auth), and console sign-in counts its failures here too: `check(address)` before
    answering one, `failed(address)` to count it.

    In this process without Redis; with `redis_url`, counted in Redis under `namespace`, shared
    by every worker and instance. Redis down: the throttle steps aside (logged) rather than
    refusing everyone."""

    def __init__(self, limit: int, window: float = 60.0, redis: RedisLink | str | None = None,
                 namespace: str = "pixelgate") -> None:
        self.limit = limit
        self.window = window
        self._namespace = namespace
        self._counts: dict[str, tuple[int, int]] = {}  # address -> (window number, failures)
        self._redis = link(redis) if limit else None

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _window(self) -> tuple[int, float]:
        now = time.time()
        number = int(now // self.window)
        return number, (number + 1) * self.window - now

    async def check(self, address: str) -> None:
        """RateLimited if `address` has used up its failures in this window."""
        if not self.limit:
            return
        number, left = self._window()
        if self._redis is not None:  # Redis failed: not throttled
            failures = int(await self._redis.run(lambda r: r.get(self._key(address, number)), 0,
                                                 "authentication failure throttle") or 0)
        else:
            seen = self._counts.get(address)
            failures = seen[1] if seen and seen[0] == number else 0
        if failures >= self.limit:
            raise RateLimited(f"Too many requests with an unknown API key from this address; try again "
                              f"in {math.ceil(left)} s.", code="too_many_auth_failures",
                              headers={"Retry-After": str(math.ceil(left))})

    async def failed(self, address: str) -> None:
        if not self.limit:
            return
        number, _ = self._window()
        if self._redis is not None:  # Redis failed: not counted
            key = self._key(address, number)
            await self._redis.run(lambda r: r.pipeline(transaction=True).incr(key)
                                  .expire(key, math.ceil(self.window) + 1).execute(), None,
                                  "counting an authentication failure")
            return
        seen = self._counts.get(address)
        self._counts[address] = (number, (seen[1] if seen and seen[0] == number else 0) + 1)
        if len(self._counts) > 100_000:  # addresses of past windows need no entry
            self._counts = {a: c for a, c in self._counts.items() if c[0] == number}

    def _key(self, address: str, number: int) -> str:
        return f"{self._namespace}:authfail:{address}:{number}"
