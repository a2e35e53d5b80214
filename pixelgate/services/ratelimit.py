"""Per-key rate limits: requests per minute and requests in flight.

With `redis_url` set, the counters live in Redis and so are shared by every worker and instance;
without it (the embedded default, one process) they live in this process.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

from pixelgate.errors import RateLimited
from pixelgate.services.auth import Principal


_GCRA = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local interval, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
if tat + interval - now > period then
  return tostring(tat + interval - now - period)
end
redis.call('SET', KEYS[1], tostring(tat + interval), 'EX', math.ceil(period) + 1)
return '0'
"""
"""GCRA in one atomic step on the Redis server's own clock (instances' clocks may differ)."""

PERIOD = 60.0


class RateLimiter:
    """Requests per minute by GCRA (the generic cell rate algorithm): a key may send its whole
    minute's allowance at once, then one more each 60/rpm seconds. Unlike counting per calendar
    minute, it never lets 2 x rpm through around a minute's turn. One number per key: the time
    at which its allowance will be whole again (its "theoretical arrival time")."""

    def __init__(self, redis_url: str | None = None) -> None:
        self._redis = None
        if redis_url:
            import redis.asyncio as redis

            self._redis = redis.from_url(redis_url)
            self._gcra = self._redis.register_script(_GCRA)
        self._arrival: dict[int, float] = {}
        self._in_flight: dict[int, int] = defaultdict(int)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def acquire(self, principal: Principal) -> bool:
        """Count one request against the key's limits or raise RateLimited (with Retry-After).
        Returns whether a concurrency slot was taken (release it with `release`)."""
        if principal.rate_limit_rpm:
            wait = await self._spend(principal.key_id, PERIOD / principal.rate_limit_rpm)
            if wait > 0:
                raise RateLimited(f"Rate limit reached: {principal.rate_limit_rpm} requests per minute for "
                                  "this key.", headers={"Retry-After": str(math.ceil(wait))})
        if not principal.max_concurrent:
            return False
        if await self._incr_flight(principal.key_id, 1) > principal.max_concurrent:
            await self._incr_flight(principal.key_id, -1)
            raise RateLimited(f"Too many requests in flight: at most {principal.max_concurrent} at once for "
                              "this key.", code="concurrency_limit_exceeded", headers={"Retry-After": "1"})
        return True

    async def release(self, principal: Principal) -> None:
        await self._incr_flight(principal.key_id, -1)

    async def _spend(self, key_id: int, interval: float) -> float:
        """Take one request's worth of the key's allowance; returns 0, or the seconds to wait."""
        if self._redis is not None:
            return float(await self._gcra(keys=[f"pixelgate:rpm:{key_id}"], args=[interval, PERIOD]))
        now = time.monotonic()
        arrival = max(self._arrival.get(key_id, now), now)
        if arrival + interval - now > PERIOD:
            return arrival + interval - now - PERIOD
        self._arrival[key_id] = arrival + interval
        if len(self._arrival) > 10_000:  # keys whose allowance is whole again need no entry
            self._arrival = {k: v for k, v in self._arrival.items() if v > now}
        return 0.0

    async def _incr_flight(self, key_id: int, delta: int) -> int:
        if self._redis is not None:
            name = f"pixelgate:inflight:{key_id}"
            async with self._redis.pipeline(transaction=True) as pipe:
                # the expiry heals a counter left high by a process that died mid-request
                count, _ = await pipe.incrby(name, delta).expire(name, 900).execute()
            return int(count)
        self._in_flight[key_id] += delta
        return self._in_flight[key_id]
