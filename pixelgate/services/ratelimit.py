"""Per-key rate limits: requests per minute and requests in flight.

With `redis_url` set, the counters live in Redis (under `redis_namespace`) and so are shared by
every worker and instance; without it (the embedded default, one process) they live in this
process. If Redis cannot be reached or does not answer in time, requests are let through (and
the failure logged; see services/redisconn.py): a limiter must not turn an outage of its own
store into an outage of the gateway.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass

from pixelgate.errors import RateLimited
from pixelgate.services.auth import Principal
from pixelgate.services.redisconn import RedisLink, link

_GCRA = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local interval, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
if tat + interval - now > period + 0.000001 then  -- not refused by a rounding error
  return tostring(tat + interval - now - period)
end
redis.call('SET', KEYS[1], tostring(tat + interval), 'EX', math.ceil(period) + 1)
return '0'
"""
"""GCRA in one atomic step on the Redis server's own clock (instances' clocks may differ)."""

_TAKE_SLOT = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
return 1
"""
"""A request's slot is a member of the key's sorted set, scored by when it expires: slots whose
holder died (and so never released or renewed them) fall out by themselves."""

_RENEW_SLOT = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local ttl = tonumber(ARGV[1])
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[2]) == 1 then
  redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
  return 1
end
return 0
"""

PERIOD = 60.0


@dataclass(frozen=True, slots=True)
class Slot:
    """One request's place among the key's `max_concurrent`."""

    key_id: int
    member: str


class RateLimiter:
    """Requests per minute by GCRA (the generic cell rate algorithm): a key may send its whole
    minute's allowance at once, then one more each 60/rpm seconds. Unlike counting per calendar
    minute, it never lets 2 x rpm through around a minute's turn. One number per key: the time
    at which its allowance will be whole again (its "theoretical arrival time").

    Requests in flight by slots, one per request, each with an expiry (`slot_seconds`) that the
    request renews while it runs: a killed instance's slots free themselves."""

    def __init__(self, redis: RedisLink | str | None = None, namespace: str = "pixelgate",
                 slot_seconds: float = 60) -> None:
        self._redis = link(redis)
        self._namespace = namespace
        self.slot_seconds = slot_seconds
        if self._redis is not None:
            self._gcra = self._redis.client.register_script(_GCRA)
            self._take = self._redis.client.register_script(_TAKE_SLOT)
            self._renew = self._redis.client.register_script(_RENEW_SLOT)
        self._arrival: dict[int, float] = {}
        self._slots: dict[int, dict[str, float]] = {}

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.release()

    async def acquire(self, principal: Principal) -> Slot | None:
        """Count one request against the key's limits or raise RateLimited (with Retry-After).
        Returns the request's concurrency slot, if the key has a limit: `release` it at the end."""
        if principal.rate_limit_rpm:
            wait = await self._spend(principal.key_id, PERIOD / principal.rate_limit_rpm)
            if wait > 0:
                raise RateLimited(f"Rate limit reached: {principal.rate_limit_rpm} requests per minute for "
                                  "this key.", headers={"Retry-After": str(math.ceil(wait))})
        if not principal.max_concurrent:
            return None
        slot = Slot(principal.key_id, secrets.token_hex(8))
        if not await self._take_slot(slot, principal.max_concurrent):
            raise RateLimited(f"Too many requests in flight: at most {principal.max_concurrent} at once for "
                              "this key.", code="concurrency_limit_exceeded", headers={"Retry-After": "1"})
        return slot

    async def release(self, slot: Slot) -> None:
        if self._redis is not None:  # if Redis fails, the slot expires by itself
            await self._redis.run(lambda r: r.zrem(self._key("slots", slot.key_id), slot.member), None,
                                  "releasing a concurrency slot")
            return
        self._slots.get(slot.key_id, {}).pop(slot.member, None)

    async def renew(self, slot: Slot) -> None:
        """The request holding the slot is still running: keep it for another `slot_seconds`."""
        if self._redis is not None:
            await self._redis.run(lambda r: self._renew(keys=[self._key("slots", slot.key_id)],
                                                        args=[self.slot_seconds, slot.member]),
                                  None, "renewing a concurrency slot")
            return
        held = self._slots.get(slot.key_id, {})
        if slot.member in held:
            held[slot.member] = time.monotonic() + self.slot_seconds

    def _key(self, kind: str, key_id: int) -> str:
        return f"{self._namespace}:{kind}:{key_id}"

    async def _take_slot(self, slot: Slot, limit: int) -> bool:
        if self._redis is not None:  # Redis failed: the limit is not enforced for this request
            return bool(await self._redis.run(lambda r: self._take(keys=[self._key("slots", slot.key_id)],
                                                                   args=[limit, self.slot_seconds, slot.member]),
                                              1, "concurrency limit"))
        now = time.monotonic()
        held = {m: t for m, t in self._slots.get(slot.key_id, {}).items() if t > now}
        if len(held) >= limit:
            self._slots[slot.key_id] = held
            return False
        held[slot.member] = now + self.slot_seconds
        self._slots[slot.key_id] = held
        return True

    async def _spend(self, key_id: int, interval: float) -> float:
        """Take one request's worth of the key's allowance; returns 0, or the seconds to wait."""
        if self._redis is not None:  # Redis failed: the limit is not enforced for this request
            return float(await self._redis.run(lambda r: self._gcra(keys=[self._key("rpm", key_id)],
                                                                    args=[interval, PERIOD]), 0, "rate limit"))
        now = time.monotonic()
        arrival = max(self._arrival.get(key_id, now), now)
        if arrival + interval - now > PERIOD + 1e-9:  # a whole allowance is no rounding error away
            return arrival + interval - now - PERIOD
        self._arrival[key_id] = arrival + interval
        if len(self._arrival) > 10_000:  # keys whose allowance is whole again need no entry
            self._arrival = {k: v for k, v in self._arrival.items() if v > now}
        return 0.0
