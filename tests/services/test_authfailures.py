"""The throttle on guessing keys slides: the turn of a minute gives a guesser no fresh allowance."""

from __future__ import annotations

import asyncio

import pytest

from pixelgate.errors import RateLimited
from pixelgate.services import authfailures
from pixelgate.services.authfailures import AuthFailures


@pytest.mark.parametrize("redis_url", [None, "redis://127.0.0.1:6379/0"])
def test_the_window_slides_across_the_turn_of_a_minute(monkeypatch, redis_url):
    clock = [6_000_000 * 60 + 59.5]  # half a second before a minute turns
    monkeypatch.setattr(authfailures.time, "time", lambda: clock[0])

    async def scenario() -> None:
        throttle = AuthFailures(10, 60.0, redis_url, namespace=f"pg-test-{id(clock)}")
        try:
            for _ in range(10):
                await throttle.check("10.0.0.1")
                await throttle.failed("10.0.0.1")
            with pytest.raises(RateLimited):
                await throttle.check("10.0.0.1")
            clock[0] += 1.0  # the next minute: a fixed window would start again from 0
            with pytest.raises(RateLimited) as refused:
                await throttle.check("10.0.0.1")
            assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
            await throttle.check("10.0.0.2")  # another address is not held back
            clock[0] += 58.0  # nearly all of those failures have slid out of the last minute
            await throttle.check("10.0.0.1")
        finally:
            await throttle.close()

    asyncio.run(scenario())
