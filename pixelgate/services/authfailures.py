"""A throttle on guessing keys: failed authentications counted per client address, in this
process or (with Redis) across the fleet."""

from __future__ import annotations

import math
import time

from pixelgate.errors import RateLimited
from pixelgate.services.redisconn import RedisLink, link


class AuthFailures:
    """A sliding-window count of failed credential checks (keys that did not verify) per client
    address. Past `limit` in the last `window` seconds, that address's further failures are
    answered 429: guessing keys should be slow. The window slides (the previous fixed window's
    count, weighted by how much of it is still inside the last `window` seconds, plus this
    one's), so the turn of a minute does not hand a guesser a fresh allowance. A key that
    verifies still passes (see services.auth), and console sign-in counts its failures there too.

    In this process without Redis; with `redis_url`, counted in Redis under `namespace`, shared
    by every worker and instance. Redis down: the throttle steps aside (logged) rather than
    refusing everyone."""

    def __init__(self, limit: int, window: float = 60.0, redis: RedisLink | str | None = None,
                 namespace: str = "pixelgate") -> None:
        self.limit = limit
        self.window = window
        self._namespace = namespace
        self._counts: dict[str, dict[int, int]] = {}  # address -> {window number: failures}
        self._redis = link(redis) if limit else None

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.release()

    def _window(self) -> tuple[int, float]:
        """This fixed window's number, and how far into it we are (0 to 1)."""
        position = time.time() / self.window
        return int(position), position - int(position)

    async def check(self, address: str) -> None:
        """RateLimited if `address` has used up its failures in the last window."""
        if not self.limit:
            return
        number, into = self._window()
        if self._redis is not None:  # Redis failed: not throttled
            counts = await self._redis.run(
                lambda r: r.mget(self._key(address, number - 1), self._key(address, number)), None,
                "authentication failure throttle")
            previous, current = (int(c or 0) for c in counts) if counts else (0, 0)
        else:
            seen = self._counts.get(address, {})
            previous, current = seen.get(number - 1, 0), seen.get(number, 0)
        # The previous window's failures still inside the last `window` seconds, rounded up:
        # the turn of a minute lets through no extra guess.
        if math.ceil(previous * (1 - into) - 1e-9) + current >= self.limit:
            if current >= self.limit or not previous:
                wait = (1 - into) * self.window
            else:  # until enough of the previous window has slid out
                wait = ((previous - (self.limit - current - 1)) / previous - into) * self.window
            wait = max(1, math.ceil(min(wait, self.window)))
            raise RateLimited(f"Too many requests with an unknown API key from this address; try again "
                              f"in {wait} s.", code="too_many_auth_failures", headers={"Retry-After": str(wait)})

    async def failed(self, address: str) -> None:
        if not self.limit:
            return
        number, _ = self._window()
        if self._redis is not None:  # Redis failed: not counted
            key = self._key(address, number)
            await self._redis.run(lambda r: r.pipeline(transaction=True).incr(key)
                                  .expire(key, math.ceil(2 * self.window) + 1).execute(), None,
                                  "counting an authentication failure")
            return
        seen = self._counts.setdefault(address, {})
        seen[number] = seen.get(number, 0) + 1
        for old in [n for n in seen if n < number - 1]:
            del seen[old]
        if len(self._counts) > 100_000:  # addresses with nothing in the last two windows need no entry
            self._counts = {a: c for a, c in self._counts.items() if max(c) >= number - 1}

    def _key(self, address: str, number: int) -> str:
        return f"{self._namespace}:authfail:{address}:{number}"
