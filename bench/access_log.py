"""What the access log costs a request: pixelgate.access.AccessLog around an ASGI app that answers
at once, against the bare app, with the line written to /dev/null in each format (and with the
access lines switched off by log_level). Prints microseconds per request; no sockets, one core.

    .venv/bin/python bench/access_log.py
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

from pixelgate import logs
from pixelgate.access import AccessLog
from pixelgate.services.auth import Principal
from pixelgate.services.engine import RequestContext

N = 50_000


async def app(scope, receive, send) -> None:
    """A route's work as the middleware sees it: the context left in request.state, one answer."""
    scope["state"]["ctx"] = RequestContext(
        "req_0123456789abcdef01234567", "openai", "http://x/", principal=Principal(3, "web app", False, None, None),
        model="gpt-image-1", channel="openai", images_delivered=1, cost=Decimal("0.042"))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def per_request(asgi) -> float:
    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        pass

    started = time.perf_counter()
    for _ in range(N):
        await asgi({"type": "http", "method": "POST", "path": "/v1/images/generations", "state": {}}, receive, send)
    return (time.perf_counter() - started) / N * 1e6


async def main() -> None:
    bare = min([await per_request(app) for _ in range(3)])
    print(f"bare app: {bare:.2f} us per request")
    with open("/dev/null", "w") as sink:
        for fmt, level in (("text", "info"), ("json", "info"), ("text", "warning")):
            logs.configure(level, fmt, sink)
            wrapped = min([await per_request(AccessLog(app, "USD")) for _ in range(3)])
            print(f"access log {fmt}, log_level {level}: +{wrapped - bare:.2f} us per request")
    logging.getLogger("pixelgate").handlers.clear()


if __name__ == "__main__":
    asyncio.run(main())
