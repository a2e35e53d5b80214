"""The Task row's writes, and nothing else writes it: the intent with its hold, changes fenced by
the worker's lease, and the outcome with its settlement and its webhook in one transaction."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, AsyncContextManager, Callable

import pybase64
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate import wirejson
from pixelgate.db.models import Task, WebhookDelivery
from pixelgate.domain.prices import token_usage
from pixelgate.domain.result import Finished, Pending, Submitted, UpstreamImage
from pixelgate.services.billing import Billing, Quote
from pixelgate.services.delivery import off_loop_if_large
from pixelgate.services.leases import Leases, now
from pixelgate.services.webhooks import WebhookSender, new_delivery

LIVE = ("starting", "pending", "running")
TERMINAL = ("succeeded", "failed", "canceled")


def aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite drops the zone
        return value.replace(tzinfo=timezone.utc)
    return value


def new_task_id() -> str:
    return "task_" + secrets.token_hex(12)


class TaskStore:
    def __init__(self, sessions: async_sessionmaker, billing: Billing, webhooks: WebhookSender,
                 lease_seconds: float, poll_interval: float) -> None:
        self._sessions = sessions
        self._billing = billing
        self._webhooks = webhooks
        self._poll_interval = timedelta(seconds=poll_interval)
        self.leases = Leases(sessions, Task, lease_seconds, Task.status.in_(LIVE), "Task")
        self.on_finish: Callable[[str], None] = lambda task_id: None
        """Told of each task this process finishes (the service wakes its waiters)."""

    async def load(self, task_id: str) -> Task | None:
        async with self._sessions() as session:
            return await session.get(Task, task_id)

    async def intend(self, task: Task, account_id: int | None, unit_price: Decimal, n: int) -> bool:
        """Write the intent with the request's hold in one transaction; whether anything was held.
        IntegrityError if a twin with the same idempotency key was written first."""
        async with self._sessions() as session, session.begin():
            session.add(task)
            return await self._billing.hold(account_id, task.request_id, unit_price, n, session=session)

    async def abandon(self, task_id: str, token: str) -> None:
        """The submission failed (the client gets the error): no task, no charge, one transaction."""
        async with self._sessions() as session, session.begin():
            task = await session.get(Task, task_id)
            if task is None or task.lease_token != token or task.status != "starting":
                return  # taken over (and failed) by another worker already
            await self._billing.settle(task.request_id, 0, session=session)
            await session.delete(task)

    # -- by lease --

    async def claim_due(self, room: int) -> list[tuple[Task, str]]:
        """Due tasks (oldest poll first, at most `room`) that this worker won."""
        if room <= 0:
            return []
        tasks, token = await self.leases.claim_due(lambda moment: (
            select(Task.id).where(Task.status.in_(LIVE), Task.next_poll_at <= moment, self.leases.free(moment))
            .order_by(Task.next_poll_at).limit(min(room, 64))))
        return [(task, token) for task in tasks]

    async def claim(self, task_id: str) -> str | None:
        return await self.leases.claim(task_id)

    async def take_over(self, task_id: str) -> str | None:
        """The task's lease, once its holder lets go (or its lease runs out); None if it finished."""
        deadline = time.monotonic() + self.leases.length.total_seconds() + 1
        while time.monotonic() < deadline:
            if (token := await self.leases.claim(task_id)) is not None:
                return token
            if (await self.load(task_id)).status in TERMINAL:
                return None
            await asyncio.sleep(0.02)
        return None

    def leased(self, task_id: str, token: str) -> AsyncContextManager[None]:
        """Hold the lease while the block runs (LeaseLost if another worker took the task over)."""
        return self.leases.renewing(task_id, token)

    async def write(self, task_id: str, token: str, **values: Any) -> None:
        """Change a live task this worker holds; LeaseLost if another worker took it over."""
        await self.leases.write(task_id, token, **values)

    async def hand_back(self, task: Task, token: str, event: str | None = None, after: timedelta | None = None,
                        **values: Any) -> None:
        """Let go of a task that waits on its vendor (or on the image store): write `values`,
        release the lease and set the next poll (after the poll interval, or `after`); with
        `event` (a change of the vendor's status), its webhook in the same transaction, once per
        event."""
        values.update(lease_until=None, lease_token=None, next_poll_at=now() + (after or self._poll_interval))
        async with self._sessions() as session, session.begin():
            await self.leases.write(task.id, token, session=session, **values)
            if event is not None and not await _announced(session, task.id, event):
                session.add(new_delivery(task, event))
        if event is not None:
            self._webhooks.wake()

    async def finish(self, task_id: str, token: str | None, status: str, *, jobs: list | None = None,
                     error: dict | None = None, **values: Any) -> Decimal | None:
        """Write the outcome, its settlement and its webhook in one transaction; returns the cost.
        Fenced by `token`; without one (a cancel), by the task being live, which fences out
        whoever holds it. LeaseLost if the task was taken over or already finished."""
        values.update(status=status, completed_at=now(), lease_until=None, lease_token=None, error=error)
        if jobs is not None:
            values["jobs"] = jobs
            if status == "succeeded":
                values["output"], values["progress"] = output(jobs), 1.0
        async with self._sessions() as session, session.begin():
            await self.leases.write(task_id, token, session=session, **values)
            task = await session.get(Task, task_id)
            if storing(task):  # what the vendor made, kept while the store was down, leaves the row
                task.jobs = [{k: v for k, v in job.items() if k != "made"} for job in task.jobs]
            delivered = len(task.output or []) if status == "succeeded" else 0
            quote = Quote.from_snapshot(task.request.get("quote") or task.request)
            charge = quote.charge(delivered, token_usage((task.meta or {}).get("token_usage")))
            charged = await self._billing.settle(task.request_id, delivered, session=session, charge=charge)
            task.cost = charged if charged is not None else charge
            wanted = task.webhook_url and (not task.webhook_events or "completed" in task.webhook_events)
            if wanted:
                session.add(new_delivery(task, "completed"))
            cost = task.cost
        if wanted:
            self._webhooks.wake()
        self.on_finish(task_id)
        return cost


async def _announced(session, task_id: str, event: str) -> bool:
    found = await session.execute(select(WebhookDelivery.id).where(
        WebhookDelivery.task_id == task_id, WebhookDelivery.event == event))
    return found.first() is not None


# -- what the row keeps: jobs (each with its stored images), output, and vendor facts (meta) --

def stored(image) -> dict:
    """An image on the task: where it is stored, and the facts its surface shows beside it (a
    task answered as the synchronous call would have been: Ideogram's resolution and seed,
    Stability's seed)."""
    seed = image.details.get("seed")
    facts = {"width": image.width, "height": image.height, "details": image.details}
    return {"id": image.id, "format": image.format, "revised_prompt": image.revised_prompt,
            **({"seed": seed} if isinstance(seed, int) else {}), **{k: v for k, v in facts.items() if v}}


def output(jobs: list[dict]) -> list[dict]:
    return [image for job in jobs for image in (job["images"] or [])]


# -- what the vendor made, kept on a job while the image store cannot take it (job["made"]) --

async def made(finished: Finished) -> dict:
    """The vendor's finished answer as the row keeps it until its images are stored: each image
    as base64 (delivery has fetched any URL already: they expire), with the vendor's facts."""
    images = []
    for image in finished.images:
        b64, url = None, image.url
        if image.b64 is not None:
            b64, url = wirejson.as_text(image.b64), None
        elif image.data is not None:
            b64 = (await off_loop_if_large(len(image.data), pybase64.b64encode, image.data)).decode()
            url = None
        images.append({"b64": b64, "url": url, "revised_prompt": image.revised_prompt, "details": image.details})
    return {"images": images, "meta": finished.meta}


def finished_from(kept: dict) -> Finished:
    """What made() kept, as the vendor's answer again."""
    return Finished([UpstreamImage(b64=i.get("b64"), url=i.get("url") if not i.get("b64") else None,
                                   revised_prompt=i.get("revised_prompt"), details=dict(i.get("details") or {}))
                     for i in kept["images"]], dict(kept.get("meta") or {}))


def storing(task: Task) -> bool:
    """Whether the vendor finished images of the task that wait for the image store."""
    return any(job.get("made") is not None for job in task.jobs or [])


def facts(outcome: Submitted | Pending | Finished) -> dict:
    """The vendor facts a task keeps: the outcome's meta and, when finished, its images' details."""
    kept = {k: v for k, v in outcome.meta.items() if k != "existing"}
    for image in outcome.images if isinstance(outcome, Finished) else ():
        kept.update(image.details)
    return kept


def answer(meta: dict) -> dict:
    """The vendor facts a synchronous answer carries beside its images (OpenAI's size, quality,
    usage...), kept so that an answer rendered from the task is the one the call would have made."""
    return {k: v for k, v in meta.items() if k not in ("existing", "token_usage")}
