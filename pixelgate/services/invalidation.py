"""Telling every worker and instance that keys, channels or prices changed.

Each process caches what it reads of them for `cache_seconds`. A change made anywhere (admin
API, console, CLI) forgets the cache of the process that made it at once, and with Redis is
published on `{redis_namespace}:invalidate`, so every other process forgets too, within
milliseconds. Without Redis, or while the subscription is down, `cache_seconds` is the bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from pixelgate.services.redisconn import RedisLink, link
from pixelgate.services.supervisor import supervise

log = logging.getLogger("pixelgate.invalidation")

TOPICS = ("keys", "channels", "prices")


class Invalidation:
    def __init__(self, redis: RedisLink | str | None, namespace: str) -> None:
        self._channel = f"{namespace}:invalidate"
        self._forget: dict[str, list[Callable[[], None]]] = {t: [] for t in TOPICS}
        self._redis = link(redis)
        self._listener: asyncio.Task | None = None

    def on(self, topic: str, forget: Callable[[], None]) -> None:
        """Call `forget` whenever `topic` changes, here or in any other process."""
        self._forget[topic].append(forget)

    async def changed(self, topic: str) -> None:
        """Something of `topic` changed: forget it here now, and tell the others."""
        self._run(topic)
        if self._redis is not None:  # if Redis fails, the others fall back to cache_seconds
            await self._redis.run(lambda r: r.publish(self._channel, topic), None, f"publishing a {topic} change")

    def _run(self, topic: str) -> None:
        for forget in self._forget.get(topic, ()):
            forget()

    def start(self) -> None:
        if self._redis is not None:
            # a lost subscription fails the round; caches expire by cache_seconds meanwhile
            self._listener = supervise("invalidation", self._listen)

    async def _listen(self) -> None:
        async with self._redis.client.pubsub() as pubsub:
            async with asyncio.timeout(self._redis.timeout * 2):
                await pubsub.subscribe(self._channel)
            # What changed while we were not listening is unknown: forget everything.
            for topic in TOPICS:
                self._run(topic)
            while True:
                # an explicit wait: the client's short socket timeout is for calls, not this
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=60)
                if message is not None and message.get("type") == "message":
                    self._run(message["data"].decode())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._redis is not None:
            await self._redis.release()
