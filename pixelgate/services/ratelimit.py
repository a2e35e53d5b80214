"""Per-key rate limits: requests per minute and requests in flight.

With `redis_url` set, the counters live in Redis and so are shared by every worker and instance;
without it (the embedded default, one process) they live in this process.
"""

from __future__ import annotations

import time
from collections import defaultdict

from pixelgate.errors import RateLimited
from pixelgate.services.auth import Principal


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        self._redis = None
        if redis_url:
            import redis.asyncio as redis

            self._redis = redis.from_url(redis_url)
        self._windows: dict[tuple[int, int], int] = defaultdict(int)
        self._in_flight: dict[int, int] = defaultdict(int)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def acquire(self, principal: Principal) -> bool:
        """Count one request against the key's limits or raise RateLimited (with Retry-After).
        Returns whether a concurrency slot was taken (release it with `release`)."""
        if principal.rate_limit_rpm:
            minute = int(time.time() // 60)
            count = await self._incr_window(principal.key_id, minute)
            if count > principal.rate_limit_rpm:
                retry = max(1, 60 - int(time.time()) % 60)
                raise RateLimited(f"Rate limit reached: {principal.rate_limit_rpm} requests per minute for "
                                  "this key.", headers={"Retry-After": str(retry)})
        if not principal.max_concurrent:
            return False
        if await self._incr_flight(principal.key_id, 1) > principal.max_concurrent:
            await self._incr_flight(principal.key_id, -1)
            raise RateLimited(f"Too many requests in flight: at most {principal.max_concurrent} at once for "
                              "this key.", code="concurrency_limit_exceeded", headers={"Retry-After": "1"})
        return True

    async def release(self, principal: Principal) -> None:
        await self._incr_flight(principal.key_id, -1)

    async def _incr_window(self, key_id: int, minute: int) -> int:
        if self._redis is not None:
            name = f"pixelgate:rpm:{key_id}:{minute}"
            async with self._redis.pipeline(transaction=True) as pipe:
                count, _ = await pipe.incr(name).expire(name, 120).execute()
            return int(count)
        self._windows[(key_id, minute)] += 1
        if len(self._windows) > 10_000:
            for stale in [k for k in self._windows if k[1] < minute]:
                del self._windows[stale]
        return self._windows[(key_id, minute)]

    async def _incr_flight(self, key_id: int, delta: int) -> int:
        if self._redis is not None:
            name = f"pixelgate:inflight:{key_id}"
            async with self._redis.pipeline(transaction=True) as pipe:
                # the expiry heals a counter left high by a process that died mid-request
                count, _ = await pipe.incrby(name, delta).expire(name, 900).execute()
            return int(count)
        self._in_flight[key_id] += delta
        return self._in_flight[key_id]
