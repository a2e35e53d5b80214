"""One Redis connection per process, shared by the rate limiters and the invalidation channel,
with a short timeout and a circuit breaker.

Redis is an optimisation here, never a dependency: every user has an answer for "Redis failed"
(let the request through, let the cache expire). So a Redis that is slow or silent must cost a
request at most one short timeout: each call is bounded by `timeout`, and after a failure Redis
is skipped for `pause` seconds, after which one call probes it (the others still skip) and its
outcome closes the breaker or opens it again. Without this, a Redis that accepts connections
and never answers held every request for seconds, once per Redis call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Awaitable, Callable, TypeVar

if TYPE_CHECKING:  # redis-py is imported only by a gateway that uses Redis (~7 MB per worker)
    import redis.asyncio as redis

log = logging.getLogger("pixelgate.redis")

T = TypeVar("T")
PAUSE_SECONDS = 5.0


class RedisLink:
    def __init__(self, url: str, timeout: float = 0.5, pause: float = PAUSE_SECONDS, own: bool = False) -> None:
        self.timeout = timeout
        self.pause = pause
        self.own = own
        """Made by one user for itself (`link` of a URL), which `release` closes; the process's
        shared link is closed once, by whoever made it (app.py), after all its users stopped."""
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # redis-py retries a timed-out call itself, with backoff: the breaker decides instead
        self.client = redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                     retry=Retry(NoBackoff(), 0))
        self._skip_until = 0.0
        """While monotonic time is before this, Redis is skipped (the breaker is open)."""
        self._probing = False

    def available(self) -> bool:
        """Whether to call Redis now; when a pause ends, the first caller is the probe."""
        if time.monotonic() < self._skip_until or self._probing:
            return False
        if self._skip_until:
            self._probing = True
        return True

    async def run(self, call: Callable[[redis.Redis], Awaitable[T]], fallback: T, what: str) -> T:
        """`call(client)` within the timeout; `fallback` if it fails or the breaker is open."""
        if not self.available():
            return fallback
        try:
            async with asyncio.timeout(self.timeout * 2):  # connect, then answer
                result = await call(self.client)
        except asyncio.CancelledError:  # the request went away: a probe it was makes way for another
            self._probing = False
            raise
        except Exception as exc:  # any failure: the caller has a way on without Redis
            self._trip(what, exc)
            return fallback
        self._recovered()
        return result

    async def ping(self) -> None:
        """Raises if Redis does not answer within the timeout (a readiness check: no breaker)."""
        try:
            async with asyncio.timeout(self.timeout * 2):
                await self.client.ping()
        except Exception as exc:
            self._trip("ping", exc)
            from redis.exceptions import TimeoutError as RedisTimeout

            if isinstance(exc, RedisTimeout):  # redis-py's own, not the builtin
                raise TimeoutError(str(exc)) from exc
            raise
        self._recovered()

    def _trip(self, what: str, exc: BaseException) -> None:
        if not self._skip_until or self._probing:  # logged once per outage, not once per request
            log.warning("Redis failed (%s: %s); serving without it for %g s", what,
                        str(exc) or exc.__class__.__name__, self.pause)
        self._skip_until = time.monotonic() + self.pause
        self._probing = False

    def _recovered(self) -> None:
        if self._skip_until:
            log.info("Redis answers again")
        self._skip_until, self._probing = 0.0, False

    async def aclose(self) -> None:
        await self.client.aclose()

    async def release(self) -> None:
        """A user is done with the link: closed if it was its own."""
        if self.own:
            await self.aclose()


def link(redis_url: "RedisLink | str | None", timeout: float = 0.5) -> RedisLink | None:
    """A link of its own for a URL (a test, the CLI), or the process's shared one given."""
    return RedisLink(redis_url, timeout, own=True) if isinstance(redis_url, str) else redis_url
