"""RequestContext: what one client request did (its key, model, channel attempts, stored images,
cost), gathered as it runs for its request-log row, and the cleanups to run when it is over."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Awaitable, Callable

from pixelgate.db.models import RequestLog
from pixelgate.errors import GatewayError
from pixelgate.providers.base import Channel
from pixelgate.services.auth import Principal
from pixelgate.services.billing import Quote

log = logging.getLogger("pixelgate.engine")


@dataclass(slots=True, weakref_slot=True)
class RequestContext:
    """What one client request did, for its log row."""

    request_id: str
    surface: str
    base_url: str
    principal: Principal | None = None
    operation: str | None = None
    model: str | None = None
    channel: str | None = None
    images_requested: int = 0
    images_delivered: int = 0
    attempts: list[dict] = field(default_factory=list)
    stored: list[dict] = field(default_factory=list)
    cost: Decimal | None = None
    quote: Quote | None = None
    held: bool = False
    keeper: asyncio.Task | None = None
    """Renews the hold's lease while the request runs (see Engine.hold)."""
    replayed: bool = False
    """An Idempotency-Key repeat: answered with the first request's task, charged nothing."""
    answer_carries_bytes: bool = False
    """A synchronous answer with base64 images: the gateway keeps no copy (unless keep_images
    is `all`, and then writes it in the background instead of delaying the answer)."""
    started: float = field(default_factory=time.perf_counter)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Run once the request is over (a stream: once it ends): release limits and holds."""

    async def finish(self) -> None:
        while self.cleanups:
            await self.cleanups.pop()()

    def attempt(self, channel: Channel, error: GatewayError | None, since: float) -> None:
        entry: dict[str, Any] = {"channel": channel.name, "ms": round((time.perf_counter() - since) * 1000, 1)}
        if error is not None:
            entry.update(error=error.code, status=error.status, message=error.message[:300])
            if error.status >= 500:  # the vendor failed us (the message names the cause, secrets redacted)
                log.warning("channel %s failed: %s: %s", channel.name, error.code, error.message[:300],
                            extra={"request_id": self.request_id})
        self.attempts.append(entry)

    def rows(self, status: int, error: GatewayError | None = None) -> list[tuple[type, dict]]:
        """The request's log row and its stored images' rows, as plain values for a bulk insert."""
        now = datetime.now(timezone.utc)
        log = dict(
            id=self.request_id, key_id=self.principal.key_id if self.principal else None,
            surface=self.surface, operation=self.operation, model=self.model, channel=self.channel,
            status=status, error_code=error.code if error else None,
            error=error.message[:2000] if error else None, images_requested=self.images_requested,
            images_delivered=self.images_delivered,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 2), attempts=self.attempts, cost=self.cost,
            created_at=now)
        log["images"] = self.stored or None
        return [(RequestLog, log)]
