"""Asynchronous work: tasks, the poller that follows them, and their webhooks.

The Task row is the source of truth. Submitting writes it; a poller loop in every worker claims
due tasks by lease (one conditional UPDATE, the same on SQLite and PostgreSQL), polls the vendor,
stores finished images at once and writes the outcome exactly once, by a conditional update from
a live status. A process killed at any point leaves a row whose lease runs out, and any worker of
any instance picks it up again: nothing is lost, nothing is finished twice.

Webhooks are rows too (one per task and event, unique), sent by the same loop with retries and
backoff, signed per the Standard Webhooks scheme with the key's own secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

import orjson
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate import wirejson
from pixelgate.db.models import ApiKey, Task, WebhookDelivery
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import Finished, Pending, Submitted, UpstreamImage
from pixelgate.errors import GatewayError, InvalidRequest, NotFound, UpstreamError
from pixelgate.services.engine import Engine, RequestContext
from pixelgate.services.fetch import Fetcher

log = logging.getLogger("pixelgate.tasks")

LIVE = ("pending", "running")
TERMINAL = ("succeeded", "failed", "canceled")
WEBHOOK_TRIES = 9
"""A failed webhook is retried after 1, 2, 4, ... 128 times `webhook_retry_seconds`, then given up."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite drops the zone
        return value.replace(tzinfo=timezone.utc)
    return value


def new_task_id() -> str:
    return "task_" + secrets.token_hex(12)


def request_snapshot(req: ImageRequest) -> dict:
    """What a task keeps of its request: enough to read the vendor's answer and deliver it."""
    return {"operation": req.operation.value, "model": req.model, "prompt": req.prompt, "n": req.n,
            "size": req.size, "output_format": req.output_format,
            "output_compression": req.output_compression, "delivery": (req.delivery or Delivery.URL).value,
            "seed": req.seed, "extras": req.extras}


def request_from_snapshot(data: dict) -> ImageRequest:
    return ImageRequest(operation=Operation(data["operation"]), model=data["model"], prompt=data["prompt"],
                        n=data["n"], size=data["size"], output_format=data["output_format"],
                        output_compression=data["output_compression"], delivery=Delivery(data["delivery"]),
                        seed=data["seed"], extras=data.get("extras") or {})


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class TaskService:
    def __init__(self, sessions: async_sessionmaker, engine: Engine, fetcher: Fetcher,
                 renderers: dict[str, Callable[[Task, str], dict]], poll_interval: float,
                 deadline_seconds: float, webhook_retry_seconds: float = 1.0, lease_seconds: float = 30) -> None:
        self._sessions = sessions
        self._engine = engine
        self._fetcher = fetcher
        self._renderers = renderers
        """surface name -> function(task, base_url) -> the body a client (or webhook) sees."""
        self._poll_interval = poll_interval
        self._deadline = timedelta(seconds=deadline_seconds)
        self._webhook_retry = webhook_retry_seconds
        self._lease = timedelta(seconds=lease_seconds)
        """How long a claimed task or webhook is this process's alone; a process that dies
        holding one delays it by at most this long."""
        self._loop_task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._stopping = False
        self.base_url = ""
        """Where webhook bodies point their links (set from the first request seen)."""

    # -- creating and reading --

    async def submit(self, req: ImageRequest, ctx: RequestContext, model_path: str, client_input: dict,
                     webhook_url: str | None = None, webhook_events: list[str] | None = None,
                     run_in_background: bool = False, meta: dict | None = None) -> Task:
        """Validate, submit upstream and record the task. Asynchronous vendors answer with jobs
        that the poller follows; a synchronous model asked to run asynchronously runs in the
        background of this process. `meta` starts Task.meta (facts the surface keeps); a vendor
        that answers with a job this key's tasks already follow returns that task instead."""
        self.base_url = self.base_url or ctx.base_url
        task = Task(id=new_task_id(), key_id=ctx.principal.key_id, request_id=ctx.request_id,
                    surface=ctx.surface, model=req.model, model_path=model_path, status="pending",
                    request=request_snapshot(req), input=client_input, jobs=[], webhook_url=webhook_url,
                    webhook_events=webhook_events, created_at=now(), deadline_at=now() + self._deadline,
                    next_poll_at=now(), meta=dict(meta or {}))
        if run_in_background:
            await self._engine.prepare(req, ctx)  # refuse bad requests now, not in the background
            await self._engine.hold(req, ctx)
            task.request = {**request_snapshot(req), "unit_price": str(ctx.quote.unit_price)}  # as prepared
            task.status, task.started_at, task.lease_until = "running", now(), now() + self._deadline
            await self._insert(task)
            job = asyncio.create_task(self._run_sync(task.id, req, ctx))
            self._background.add(job)
            job.add_done_callback(self._background.discard)
            return task
        channel, outcomes = await self._engine.start(req, ctx)
        if (known := await self._known_job(ctx, channel.name, outcomes)) is not None:
            return known
        task.request = {**request_snapshot(req), "unit_price": str(ctx.quote.unit_price)}  # as prepared
        task.channel, task.started_at = channel.name, now()
        jobs, finished = [], []
        for outcome in outcomes:
            if isinstance(outcome, Submitted):
                jobs.append({"id": outcome.job_id, "poll_url": outcome.poll_url, "images": None})
                task.meta.update(_facts(outcome))
            else:
                finished.append(outcome)
        if finished:  # a synchronous vendor (or a part that was): store its images now
            images = await self._engine.deliver(_merge(finished), req, ctx)
            jobs.append({"id": None, "poll_url": None, "images": [_stored(i) for i in images]})
        task.jobs = jobs
        task.status = "running" if any(j["images"] is None for j in jobs) else "succeeded"
        if task.status == "succeeded":
            task.output, task.completed_at = _output(jobs), now()
            task.cost = await self._engine.settle(ctx, len(task.output))
        await self._insert(task)
        if task.status == "succeeded":
            await self._queue_webhook(task)
        return task

    async def _insert(self, task: Task) -> None:
        async with self._sessions() as session, session.begin():
            session.add(task)

    async def get(self, task_id: str, key_id: int) -> Task:
        """The task, to its owner only: to anyone else it does not exist."""
        async with self._sessions() as session:
            task = await session.get(Task, task_id)
        if task is None or task.key_id != key_id:
            raise NotFound(f"No task with id '{task_id}'.", field="id", code="task_not_found")
        return task

    async def wait(self, task_id: str, key_id: int, seconds: float) -> Task:
        """The task once it is finished, or as it is after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            task = await self.get(task_id, key_id)
            if task.status in TERMINAL or time.monotonic() >= deadline:
                return task
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    async def recent(self, key_id: int, surface: str, live: bool = False, limit: int = 100) -> list[Task]:
        """The key's newest tasks made on one surface, only the unfinished ones if `live`."""
        query = select(Task).where(Task.key_id == key_id, Task.surface == surface)
        if live:
            query = query.where(Task.status.in_(LIVE))
        async with self._sessions() as session:
            return list((await session.execute(query.order_by(Task.created_at.desc()).limit(limit))).scalars())

    async def cancel(self, task_id: str, key_id: int) -> Task:
        task = await self.get(task_id, key_id)
        if task.status in TERMINAL:
            return task  # as Replicate does: cancelling a finished task leaves it unchanged
        channel = await self._engine.directory.channel(task.channel) if task.channel else None
        if channel is not None and not self._engine.can_cancel(channel):
            raise InvalidRequest(f"Tasks of model '{task.model}' cannot be canceled: the vendor does "
                                 "not allow it.", field="id", code="cancel_not_supported", status=409)
        jobs = [Submitted(j["id"], j["poll_url"]) for j in task.jobs if j["id"] and j["images"] is None]
        if channel is not None and jobs and not await self._cancel_jobs(task.id, channel.name, jobs):
            return await self.get(task_id, key_id)  # it finished before it could be held
        await self._finish(task.id, "canceled", error={"code": "canceled", "message": "Canceled by the client."})
        return await self.get(task_id, key_id)

    async def _cancel_jobs(self, task_id: str, channel: str, jobs: list[Submitted]) -> bool:
        """Tell the vendor, holding the task as a poller does (so no poll sees the vendor's cancel
        and fails the task first); False when the task finished before it could be held."""
        deadline = time.monotonic() + self._lease.total_seconds()  # a dead holder's lease runs out
        while not await self._lease_task(task_id, now()):
            async with self._sessions() as session:
                if (await session.get(Task, task_id)).status in TERMINAL or time.monotonic() > deadline:
                    return False
            await asyncio.sleep(0.02)
        try:
            for job in jobs:
                await self._engine.ask(channel, lambda p, c: p.build_cancel(job, c), lambda p, r: None)
        except BaseException:
            await self._release(task_id)  # the vendor did not cancel: the task runs on
            raise
        return True

    # -- the loop --

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="pixelgate-tasks")

    async def close(self) -> None:
        self._stopping = True
        for job in list(self._background):
            job.cancel()
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while not self._stopping:
            try:
                busy = await self.tick()
            except Exception:  # keep polling whatever one round did
                log.exception("task loop round failed")
                busy = False
            await asyncio.sleep(0.02 if busy else self._poll_interval)

    async def tick(self) -> bool:
        """One round: poll every due task this process could claim, send due webhooks."""
        due = await self._claim_tasks()
        await asyncio.gather(*(self._advance(t) for t in due))
        sent = await self._send_webhooks()
        return bool(due) or sent

    async def _claim_tasks(self) -> list[Task]:
        moment = now()
        async with self._sessions() as session:
            candidates = list((await session.execute(
                select(Task).where(Task.status.in_(LIVE), Task.next_poll_at <= moment,
                                   or_(Task.lease_until.is_(None), Task.lease_until < moment))
                .order_by(Task.next_poll_at).limit(64))).scalars())
        return [task for task in candidates if await self._lease_task(task.id, moment)]

    async def _lease_task(self, task_id: str, moment: datetime) -> bool:
        """Make a live task this process's alone for a lease, unless another holds it."""
        async with self._sessions() as session, session.begin():
            won = await session.execute(
                update(Task).where(Task.id == task_id, Task.status.in_(LIVE),
                                   or_(Task.lease_until.is_(None), Task.lease_until < moment))
                .values(lease_until=moment + self._lease))
        return won.rowcount == 1

    async def _release(self, task_id: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(update(Task).where(Task.id == task_id).values(lease_until=None))

    async def _advance(self, task: Task) -> None:
        """Poll the task's unfinished jobs once; finish it when all are done or it is overdue."""
        req = request_from_snapshot(task.request)
        ctx = RequestContext(request_id=task.request_id, surface=task.surface, base_url=self.base_url)
        if not any(j["id"] for j in task.jobs) or aware(task.deadline_at) < now():
            # nobody is working on it any more (its process died) or it is overdue
            reason = ("The task did not finish before its deadline." if task.jobs else
                      "The task was interrupted (the gateway restarted while it ran).")
            await self._finish(task.id, "failed", error={"code": "task_deadline_exceeded" if task.jobs
                                                         else "task_interrupted", "message": reason})
            return
        jobs = [dict(j) for j in task.jobs]
        meta = dict(task.meta or {})
        progress: list[float] = []
        try:
            for job in jobs:
                if job["images"] is not None:
                    progress.append(1.0)
                    continue
                outcome = await self._engine.poll(task.channel, req, Submitted(job["id"], job["poll_url"]))
                meta.update(_facts(outcome))
                if isinstance(outcome, Pending) and outcome.preview is not None:
                    meta.update(await self._preview(outcome.preview, meta.get("preview"), req, ctx))
                if isinstance(outcome, Finished):
                    job["images"] = [_stored(i) for i in await self._engine.deliver(outcome, req, ctx)]
                    progress.append(1.0)
                else:
                    progress.append(outcome.progress or 0.0)
        except UpstreamError as exc:
            if not exc.retry_elsewhere:  # a hiccup (5xx, 429) is polled again; anything else is final
                await self._finish(task.id, "failed", jobs=jobs, error=_error(exc))
                return
        except GatewayError as exc:
            await self._finish(task.id, "failed", jobs=jobs, error=_error(exc))
            return
        if all(j["images"] is not None for j in jobs):
            await self._keep_meta(task.id, meta)
            await self._finish(task.id, "succeeded", jobs=jobs)
            return
        # a hiccup on the first job leaves no fresh progress: keep what we knew
        done = round(sum(progress) / len(progress), 3) if progress else task.progress
        async with self._sessions() as session, session.begin():
            await session.execute(update(Task).where(Task.id == task.id, Task.status.in_(LIVE)).values(
                jobs=jobs, progress=done, lease_until=None,
                next_poll_at=now() + timedelta(seconds=self._poll_interval), meta=meta))
        await self._status_event(task, meta, done)

    async def _run_sync(self, task_id: str, req: ImageRequest, ctx: RequestContext) -> None:
        try:
            result = await self._engine.generate(req, ctx, bill=False)
        except GatewayError as exc:
            await self._finish(task_id, "failed", error=_error(exc))
            return
        jobs = [{"id": None, "poll_url": None, "images": [_stored(i) for i in result.images]}]
        await self._finish(task_id, "succeeded", jobs=jobs)

    async def _finish(self, task_id: str, status: str, jobs: list | None = None, error: dict | None = None) -> bool:
        """Write the outcome, once: only a live task can finish, so a second writer changes nothing."""
        values: dict[str, Any] = {"status": status, "completed_at": now(), "lease_until": None, "error": error}
        if jobs is not None:
            values["jobs"] = jobs
            if status == "succeeded":
                values["output"], values["progress"] = _output(jobs), 1.0
        async with self._sessions() as session, session.begin():
            won = await session.execute(update(Task).where(Task.id == task_id, Task.status.in_(LIVE)).values(**values))
        if won.rowcount != 1:
            return False
        async with self._sessions() as session:
            task = await session.get(Task, task_id)
        # Only the writer of the outcome settles, and the ledger settles a request once anyway.
        delivered = len(task.output or []) if status == "succeeded" else 0
        charged = await self._engine.billing.settle(task.request_id, delivered)
        cost = charged if charged is not None else Decimal(task.request.get("unit_price", "0")) * delivered
        async with self._sessions() as session, session.begin():
            await session.execute(update(Task).where(Task.id == task_id).values(cost=cost))
        await self._queue_webhook(task)
        return True

    # -- vendor facts (Task.meta) and status events --

    async def _known_job(self, ctx: RequestContext, channel: str, outcomes: list) -> Task | None:
        """The task of this key that already follows a job the vendor answered with. A vendor may
        answer a repeated request (Midjourney code 21) or a confirmation (its modal) with a job it
        already had (Submitted.meta["existing"]): the client gets that task, not a twin."""
        ids = {o.job_id for o in outcomes if isinstance(o, Submitted) and o.meta.get("existing")}
        if not ids:
            return None
        async with self._sessions() as session:
            recent = (await session.execute(
                select(Task).where(Task.key_id == ctx.principal.key_id, Task.channel == channel)
                .order_by(Task.created_at.desc()).limit(500))).scalars()
            found = next((t for t in recent if any(j["id"] in ids for j in t.jobs)), None)
        if found is not None:
            await self._engine.settle(ctx, 0)  # nothing new was made: release the hold
        return found

    async def _keep_meta(self, task_id: str, meta: dict) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(update(Task).where(Task.id == task_id, Task.status.in_(LIVE)).values(meta=meta))

    async def _preview(self, image: UpstreamImage, kept: dict | None, req: ImageRequest,
                       ctx: RequestContext) -> dict:
        """A look at the unfinished image, stored by the gateway (vendor URLs expire and name the
        upstream) when it is new; best effort: the job itself is what matters."""
        source = hashlib.sha256((image.url or wirejson.as_text(image.b64 or "")).encode()).hexdigest()[:16]
        if kept and kept.get("source") == source:
            return {}
        try:
            stored = (await self._engine.deliver(Finished([image]), req, ctx))[0]
        except GatewayError as exc:
            log.info("task preview not stored: %s", exc.message)
            return {}
        return {"preview": {"id": stored.id, "format": stored.format, "source": source}}

    async def _status_event(self, task: Task, meta: dict, progress: float) -> None:
        """A webhook per change of the vendor's status (and progress) while the task runs, for
        tasks whose webhook_events ask for "status" (the midjourney-proxy notifyHook); the
        outcome itself is the "completed" event. The body is the task as it is when sent."""
        if not task.webhook_url or "status" not in (task.webhook_events or []):
            return
        event = _event_name(meta.get("status"), progress)
        if event is None or event == _event_name((task.meta or {}).get("status"), task.progress):
            return
        try:
            async with self._sessions() as session, session.begin():
                session.add(WebhookDelivery(id="wh_" + secrets.token_hex(12), task_id=task.id, event=event,
                                            url=task.webhook_url, delivered=False, attempts=0, log=[],
                                            next_attempt_at=now()))
        except IntegrityError:
            pass  # this state was announced already (unique task_id, event)

    # -- webhooks --

    async def _queue_webhook(self, task: Task) -> None:
        if not task.webhook_url:
            return
        if task.webhook_events and "completed" not in task.webhook_events:
            return
        async with self._sessions() as session, session.begin():
            session.add(WebhookDelivery(id="wh_" + secrets.token_hex(12), task_id=task.id, event="completed",
                                        url=task.webhook_url, delivered=False, attempts=0, log=[],
                                        next_attempt_at=now()))

    async def _send_webhooks(self) -> bool:
        moment = now()
        async with self._sessions() as session:
            due = list((await session.execute(
                select(WebhookDelivery).where(WebhookDelivery.delivered.is_(False),
                                              WebhookDelivery.attempts < WEBHOOK_TRIES,
                                              WebhookDelivery.next_attempt_at <= moment,
                                              or_(WebhookDelivery.lease_until.is_(None),
                                                  WebhookDelivery.lease_until < moment))
                .limit(32))).scalars())
        for delivery in due:
            async with self._sessions() as session, session.begin():
                won = await session.execute(update(WebhookDelivery).where(
                    WebhookDelivery.id == delivery.id, WebhookDelivery.delivered.is_(False),
                    or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < moment))
                    .values(lease_until=moment + self._lease))
            if won.rowcount == 1:
                await self._deliver_webhook(delivery)
        return bool(due)

    async def _deliver_webhook(self, delivery: WebhookDelivery) -> None:
        async with self._sessions() as session:
            task = await session.get(Task, delivery.task_id)
            key = await session.get(ApiKey, task.key_id)
        secret = await self.webhook_secret(key.id) if key is not None else "whsec_"
        body = orjson.dumps(self._renderers[task.surface](task, self.base_url))
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": delivery.id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign(secret, delivery.id, timestamp, body)}
        status, error = None, None
        try:
            status = await self._fetcher.post(delivery.url, body, headers, "webhook")
        except GatewayError as exc:
            error = exc.message
        ok = status is not None and 200 <= status < 300
        attempts = delivery.attempts + 1
        entry = {"at": now().isoformat(), "status": status, "error": error}
        retry_in = self._webhook_retry * 2 ** (attempts - 1)
        async with self._sessions() as session, session.begin():
            await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(
                delivered=ok, attempts=attempts, last_status=status, last_error=error,
                log=[*(delivery.log or []), entry], lease_until=None,
                next_attempt_at=now() + timedelta(seconds=retry_in)))

    async def deliveries(self, task_id: str) -> list[WebhookDelivery]:
        async with self._sessions() as session:
            return list((await session.execute(
                select(WebhookDelivery).where(WebhookDelivery.task_id == task_id))).scalars())

    async def webhook_secret(self, key_id: int) -> str:
        """The key's signing secret, made on first use."""
        async with self._sessions() as session, session.begin():
            key = await session.get(ApiKey, key_id)
            if key.webhook_secret is None:
                key.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
            return key.webhook_secret


def _facts(outcome: Submitted | Pending | Finished) -> dict:
    """The vendor facts a task keeps: the outcome's meta and, when finished, its images' details."""
    facts = {k: v for k, v in outcome.meta.items() if k != "existing"}
    for image in outcome.images if isinstance(outcome, Finished) else ():
        facts.update(image.details)
    return facts


def _event_name(status: Any, progress: float | None) -> str | None:
    if not isinstance(status, str) or not status:
        return None
    return f"{status}:{round((progress or 0) * 100)}"[:16]  # WebhookDelivery.event is 16 wide


def _stored(image) -> dict:
    return {"id": image.id, "format": image.format, "revised_prompt": image.revised_prompt}


def _output(jobs: list[dict]) -> list[dict]:
    return [image for job in jobs for image in (job["images"] or [])]


def _merge(outcomes: list[Finished]) -> Finished:
    return Finished([image for f in outcomes for image in f.images], dict(outcomes[0].meta))


def _error(exc: GatewayError) -> dict:
    return {"code": exc.code, "message": exc.message, "status": exc.status}
