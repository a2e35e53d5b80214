"""A throttle on guessing keys: failed authentications counted per client address, in this
process or (with Redis) across the fleet."""

from __future__ import annotations

import math
import time

from pixelgate.errors import RateLimited
from pixelgate.services.redisconn import RedisLink, link


class AuthFailures:
    """A fixed-window count of failed credential checks (keys that did not verify) per client
    address. Past `limit` in a window, that address's further failures are answered 429 until
    the window ends: guessing keys should be slow. A key that verifies still passes (see
    services.auth), and console sign-in counts its failures there too.

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
            await self._redis.release()

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
