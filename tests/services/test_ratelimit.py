"""Rate limits, in one process and shared through the real Redis (PIXELGATE_TEST_REDIS, else 127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from pixelgate.errors import RateLimited
from pixelgate.services import ratelimit
from pixelgate.services.auth import Principal
from pixelgate.services.ratelimit import RateLimiter
from tests.conftest import REDIS_URL


def principal(**limits) -> Principal:
    return Principal(key_id=secrets.randbelow(2**31), name="t", is_admin=False, allowed_models=None,
                     expires_at=None, **limits)


@pytest.fixture(params=["process", "redis"])
def limiters(request):
    """Two limiters, as two workers would have: shared only through Redis."""
    url = REDIS_URL if request.param == "redis" else None
    return request.param, url


def run(coro):
    return asyncio.run(coro)


async def _attempts(limiter: RateLimiter, who: Principal, count: int) -> list[float]:
    """0 for each request let through, else its Retry-After."""
    out = []
    for _ in range(count):
        try:
            await limiter.acquire(who)
            out.append(0)
        except RateLimited as exc:
            out.append(float(exc.headers["Retry-After"]))
    return out


def test_a_minute_allowance_is_spent_then_refills_one_by_one(limiters, monkeypatch):
    kind, url = limiters
    monkeypatch.setattr(ratelimit, "PERIOD", 0.6)  # a "minute" of 0.6 s: rpm 3 refills one each 0.2 s

    async def scenario():
        limiter, who = RateLimiter(url), principal(rate_limit_rpm=3)
        first = await _attempts(limiter, who, 4)
        assert first[:3] == [0, 0, 0] and first[3] >= 1  # Retry-After: whole seconds, at least 1
        await asyncio.sleep(0.25)
        assert await _attempts(limiter, who, 2) == [0, 1]  # one came back, not a whole new minute
        await limiter.close()

    run(scenario())


def test_no_burst_of_twice_the_limit_around_a_minute_turn(limiters):
    """Counting per calendar minute lets 2 x rpm through in a second across the turn; GCRA not."""
    kind, url = limiters

    async def scenario():
        limiter, who = RateLimiter(url), principal(rate_limit_rpm=5)
        assert (await _attempts(limiter, who, 10)).count(0) == 5
        retry = await _attempts(limiter, who, 1)
        assert 1 <= retry[0] <= 12  # the next one in 60 / 5 s
        await limiter.close()

    run(scenario())


def test_workers_sharing_redis_share_the_allowance_and_the_slots():
    async def scenario():
        one, two = RateLimiter(REDIS_URL), RateLimiter(REDIS_URL)
        paced = principal(rate_limit_rpm=4)
        results = await asyncio.gather(*(_attempts(limiter, paced, 1) for limiter in (one, two) * 3))
        assert sum(r == [0] for r in results) == 4
        busy = principal(max_concurrent=2)
        first = await one.acquire(busy)
        assert await _attempts(two, busy, 2) == [0, 1]
        await one.release(first)  # a slot freed by one worker is free for the other
        assert await _attempts(two, busy, 2) == [0, 1]
        await one.close()
        await two.close()

    run(scenario())


def test_a_process_limiter_is_its_own():
    async def scenario():
        one, two, who = RateLimiter(None), RateLimiter(None), principal(rate_limit_rpm=1)
        assert await _attempts(one, who, 1) == [0] and await _attempts(two, who, 1) == [0]
        assert (await _attempts(one, who, 1))[0] > 0

    run(scenario())


def test_the_slots_of_a_dead_holder_free_themselves_and_a_live_one_keeps_its_own(limiters):
    kind, url = limiters

    async def scenario():
        dead = RateLimiter(url, namespace="t" + secrets.token_hex(4), slot_seconds=0.6)
        # in one process the "dead" holder is a request that leaked its slot
        live = RateLimiter(url, namespace=dead._namespace, slot_seconds=0.6) if url else dead
        who = principal(max_concurrent=2)
        await dead.acquire(who)  # taken, never released: its process was killed
        kept = await live.acquire(who)
        assert await _attempts(live, who, 1) == [1]
        for _ in range(4):  # the live request renews its slot as it runs
            await asyncio.sleep(0.25)
            await live.renew(kept)
        # the dead slot expired; the live one did not
        assert await _attempts(live, who, 2) == [0, 1]
        await dead.close()
        if live is not dead:
            await live.close()

    run(scenario())


def test_namespaces_keep_fleets_sharing_one_redis_apart():
    async def scenario():
        blue, green = RateLimiter(REDIS_URL, "blue" + secrets.token_hex(3)), RateLimiter(REDIS_URL, "green" + secrets.token_hex(3))
        who = principal(rate_limit_rpm=1, max_concurrent=1)
        first, second = await _attempts(blue, who, 2)
        assert first == 0 and second > 0 and (await _attempts(green, who, 1)) == [0]
        await blue.close()
        await green.close()

    run(scenario())


def test_redis_down_lets_requests_through():
    async def scenario():
        limiter = RateLimiter("redis://127.0.0.1:1/0")  # nothing listens there
        who = principal(rate_limit_rpm=1, max_concurrent=1)
        assert await _attempts(limiter, who, 3) == [0, 0, 0]
        await limiter.close()

    run(scenario())
