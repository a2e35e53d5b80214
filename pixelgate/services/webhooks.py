"""Webhook delivery: its own loop and a bounded pool of senders, never inside task polling.

A webhook is a row (WebhookDelivery), written in the same transaction as the task change it
announces (an outbox), so a task never finishes unannounced and is never announced twice. The
sender claims due rows by lease (services.leases: a token fences its result write), sends each with the fetch
timeout, and retries with doubling waits. A receiver that never answers holds one sender for
at most that timeout; the other deliveries, and every task, go on meanwhile.

Receivers are kept apart by origin (scheme://host:port), across the fleet: one origin has at
most `per_destination` deliveries in flight, and an origin that failed (no answer, 5xx, 429) is
tried again only after its own doubling wait, one delivery at a time (a probe), until one gets
through. So a dead receiver delays its own webhooks, not everyone's; its deliveries keep their
ids and their tries, and are sent when it is back.

Bodies are signed per the Standard Webhooks scheme with the key's own secret, and rendered when
sent, from the task as it is then, with links built from public_base_url or the task's stored
origin (never from whichever Host header a process saw last).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from datetime import datetime, timedelta
from typing import Awaitable, Callable

import orjson
from sqlalchemy import Select, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.db.models import ApiKey, Task, WebhookDelivery, WebhookDestination
from pixelgate.errors import GatewayError, LeaseLost
from pixelgate.services.fetch import Fetcher, origin
from pixelgate.services.leases import Leases, now
from pixelgate.services.supervisor import supervise

log = logging.getLogger("pixelgate.webhooks")

WEBHOOK_TRIES = 9
"""A failed webhook is retried after 1, 2, 4, ... 128 times `webhook_retry_seconds`, then given up."""
SENDERS = 16
"""Deliveries in flight at once per process: a stalled receiver occupies one of them."""

Renderer = Callable[[Task, str], Awaitable[dict]]


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def new_delivery(task: Task, event: str) -> WebhookDelivery:
    """The outbox row for one event of a task; add it in the transaction that makes the event."""
    return WebhookDelivery(id="wh_" + secrets.token_hex(12), task_id=task.id, event=event, url=task.webhook_url,
                           origin=origin(task.webhook_url), delivered=False, attempts=0, log=[], next_attempt_at=now())


class WebhookSender:
    def __init__(self, sessions: async_sessionmaker, fetcher: Fetcher, renderers: dict[str, Renderer],
                 retry_seconds: float, send_timeout: float, poll_interval: float,
                 per_destination: int) -> None:
        self._sessions = sessions
        self._fetcher = fetcher
        self._renderers = renderers
        """surface name -> async function(task, base_url) -> the body the client's API shows."""
        self._retry = retry_seconds
        self._leases = Leases(sessions, WebhookDelivery, send_timeout + 10, WebhookDelivery.delivered.is_(False),
                              "Webhook delivery")
        """Longer than one send can take, so no other worker sends the same row meanwhile."""
        self._poll_interval = poll_interval
        self._share = per_destination
        self._slots = asyncio.Semaphore(SENDERS)
        self._sending: set[asyncio.Task] = set()
        self._loop: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._loop = supervise("webhooks", self._round)

    def wake(self) -> None:
        """A delivery was just written: look now rather than at the next interval."""
        self._wake.set()

    async def close(self) -> None:
        for job in [self._loop, *self._sending]:
            if job is not None:
                job.cancel()
        await asyncio.gather(*[j for j in [self._loop, *self._sending] if j is not None], return_exceptions=True)

    async def _round(self) -> None:
        if not await self.tick():
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            except TimeoutError:
                pass

    async def tick(self) -> int:
        """Claim as many due deliveries as there are free senders, and start sending them."""
        free = SENDERS - len(self._sending)
        if free <= 0:
            await asyncio.wait(self._sending, return_when=asyncio.FIRST_COMPLETED)
            return 1
        mine, token = await self._leases.claim_due(lambda moment: self._due(moment, free))
        for delivery in mine:
            job = asyncio.create_task(self._send(delivery, token))
            self._sending.add(job)
            job.add_done_callback(self._sending.discard)
        return len(mine)

    def _due(self, moment: datetime, limit: int) -> Select:
        """Ids of due deliveries, oldest first, each origin within its share: `per_destination`
        in flight (leased, by any worker) at once, and for a failed origin none before its
        retry_at, then one. Workers claiming in the same instant may overshoot a share a little;
        the lease still gives each delivery to one sender."""
        sent, failed = WebhookDelivery, WebhookDestination
        leased = (select(sent.origin, func.count().label("n"))
                  .where(sent.delivered.is_(False), sent.lease_until >= moment).group_by(sent.origin).subquery())
        place = (func.row_number().over(partition_by=sent.origin, order_by=sent.next_attempt_at)
                 + func.coalesce(leased.c.n, 0))
        ranked = (select(sent.id, sent.next_attempt_at, place.label("place"),
                         case((failed.origin.is_(None), self._share), else_=1).label("share"))
                  .outerjoin(leased, leased.c.origin == sent.origin)
                  .outerjoin(failed, failed.origin == sent.origin)
                  .where(sent.delivered.is_(False), sent.attempts < WEBHOOK_TRIES, sent.next_attempt_at <= moment,
                         self._leases.free(moment),
                         or_(failed.retry_at.is_(None), failed.retry_at <= moment))
                  .subquery())
        return (select(ranked.c.id).where(ranked.c.place <= ranked.c.share)
                .order_by(ranked.c.next_attempt_at).limit(limit))

    async def _send(self, delivery: WebhookDelivery, token: str) -> None:
        async with self._slots:
            try:
                await self._deliver(delivery, token)
            except LeaseLost:
                log.info("webhook %s was taken over by another worker", delivery.id)
            except Exception:
                log.exception("webhook %s failed", delivery.id)
        self.wake()  # its origin's share has room again

    async def _deliver(self, delivery: WebhookDelivery, token: str) -> None:
        async with self._sessions() as session:
            task = await session.get(Task, delivery.task_id)
            key = await session.get(ApiKey, task.key_id) if task is not None else None
        attempts = delivery.attempts + 1
        if task is None or key is None or not key.webhook_secret:
            # Nothing to sign with (the key was deleted): an unsigned body would be forged-looking
            # to a careful receiver and trusted by a careless one. Give up instead.
            await self._record(delivery, token, ok=False, status=None, attempts=WEBHOOK_TRIES,
                               error="the task's API key no longer exists")
            return
        body = orjson.dumps(await self._renderers[task.surface](task, task.origin or ""))
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": delivery.id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign(key.webhook_secret, delivery.id, timestamp, body)}
        status, error, started = None, None, now()
        try:
            status = await self._fetcher.post(delivery.url, body, headers, "webhook")
        except GatewayError as exc:
            error = exc.message
        ok = status is not None and 200 <= status < 300
        if delivery.origin is not None:  # before the lease ends, so no send to a failed origin slips in between
            await self._judge(delivery.origin, started, status)
        await self._record(delivery, token, ok=ok, status=status, attempts=attempts, error=error)

    async def _record(self, delivery: WebhookDelivery, token: str, *, ok: bool, status: int | None,
                      attempts: int, error: str | None) -> None:
        entry = {"at": now().isoformat(), "status": status, "error": error}
        await self._leases.write(delivery.id, token, delivered=ok, attempts=attempts, last_status=status,
                                 last_error=error, log=[*(delivery.log or []), entry], lease_until=None,
                                 lease_token=None, next_attempt_at=now() + self._wait(attempts))

    def _wait(self, failures: int) -> timedelta:
        """After the n-th failure: 1, 2, 4, ... 128 times webhook_retry_seconds."""
        return timedelta(seconds=self._retry * 2 ** (min(failures, WEBHOOK_TRIES - 1) - 1))

    async def _judge(self, destination: str, started: datetime, status: int | None) -> None:
        """Close or open an origin's circuit by its answer to a send begun at `started`: no answer,
        5xx and 429 count against it, any other answer shows it is there."""
        known = WebhookDestination
        if status is not None and status < 500 and status != 429:
            async with self._sessions() as session, session.begin():
                await session.execute(delete(known).where(known.origin == destination))
            return
        moment = now()
        try:
            async with self._sessions() as session, session.begin():
                failures = (await session.execute(
                    select(known.failures).where(known.origin == destination))).scalar()
                if failures is None:
                    session.add(known(origin=destination, failures=1, failed_at=moment,
                                      retry_at=moment + self._wait(1)))
                else:  # a send begun before the last failure overlapped it: counted already
                    await session.execute(update(known).where(
                        known.origin == destination, known.failures == failures, known.failed_at < started)
                        .values(failures=failures + 1, failed_at=moment, retry_at=moment + self._wait(failures + 1)))
        except IntegrityError:
            pass  # another sender recorded this origin's failure in the same instant

    async def deliveries(self, task_id: str) -> list[WebhookDelivery]:
        async with self._sessions() as session:
            return list((await session.execute(
                select(WebhookDelivery).where(WebhookDelivery.task_id == task_id))).scalars())

    async def secret(self, key_id: int) -> str:
        """The key's signing secret, made on first use."""
        async with self._sessions() as session, session.begin():
            key = await session.get(ApiKey, key_id)
            if key.webhook_secret is None:
                key.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
            return key.webhook_secret
