"""What the APIs call: submit a task (replaying an idempotent repeat), read it, wait for it
(woken at once when this process finishes it), list a key's recent ones, cancel one."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.db.models import Task, WebhookDelivery
from pixelgate.domain.request import ImageRequest
from pixelgate.domain.result import Finished, Submitted
from pixelgate.errors import GatewayError, NotFound
from pixelgate.services import idempotency
from pixelgate.services.delivery import ImagesNotStored
from pixelgate.services.engine import Engine, RequestContext, merge
from pixelgate.services.leases import now
from pixelgate.services.tasks.snapshot import request_snapshot
from pixelgate.services.tasks.store import LIVE, TERMINAL, TaskStore, answer, facts, made, new_task_id, stored
from pixelgate.services.tasks.worker import TaskWorker
from pixelgate.services.webhooks import WebhookSender


class TaskService:
    def __init__(self, sessions: async_sessionmaker, engine: Engine, webhooks: WebhookSender,
                 poll_interval: float, deadline_seconds: float, lease_seconds: float = 30,
                 store_retry_seconds: float = 1800) -> None:
        self._sessions = sessions
        self._engine = engine
        self.webhooks = webhooks
        self._deadline = timedelta(seconds=deadline_seconds)
        self.store = TaskStore(sessions, engine.billing, webhooks, lease_seconds, poll_interval)
        self.store.on_finish = self._finished
        self.worker = TaskWorker(self.store, engine, poll_interval, store_retry_seconds)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        """Requests of this process waiting for a task (wait), woken by its finish."""

    def start(self) -> None:
        self.worker.start()
        self.webhooks.start()

    async def close(self) -> None:
        await self.worker.close()
        await self.webhooks.close()

    # -- creating --

    async def submit(self, req: ImageRequest, ctx: RequestContext, model_path: str, client_input: dict,
                     webhook_url: str | None = None, webhook_events: list[str] | None = None,
                     run_in_background: bool = False, meta: dict | None = None,
                     idempotency_key: str | None = None) -> Task:
        """Validate, record the intent with its hold, then submit upstream. Asynchronous vendors
        answer with jobs that any worker then follows; a synchronous model asked to run
        asynchronously is answered at once and runs on any worker. `meta` starts Task.meta
        (facts the surface keeps); a vendor that answers with a job this key's tasks already
        follow returns that task instead. With `idempotency_key`, a repeat of a request this
        key already made returns the first one's task (ctx.replayed): see services.idempotency."""
        request_hash = None
        if idempotency_key is not None:
            request_hash = idempotency.fingerprint(req, ctx.surface)
            if (known := await self._replay(ctx, idempotency_key, request_hash)) is not None:
                return known
        route = await self._engine.prepare(req, ctx)  # refuse bad requests before anything is written
        token, moment = secrets.token_hex(16), now()
        storage = self._engine.storage if run_in_background else None
        snapshot = {**await request_snapshot(req, storage), "unit_price": str(ctx.quote.unit_price),
                    "quote": ctx.quote.snapshot(), "sync": run_in_background}
        task = Task(id=new_task_id(), key_id=ctx.principal.key_id, request_id=ctx.request_id,
                    surface=ctx.surface, model=ctx.model or req.model, model_path=model_path,
                    status="pending" if run_in_background else "starting", request=snapshot,
                    input=client_input, jobs=[], webhook_url=webhook_url, webhook_events=webhook_events,
                    created_at=moment, deadline_at=moment + self._deadline, next_poll_at=moment,
                    meta=dict(meta or {}), origin=ctx.base_url, runs=0, lease_token=token,
                    lease_until=moment + self.store.leases.length, idempotency_key=idempotency_key,
                    request_hash=request_hash)
        try:
            ctx.held = await self.store.intend(task, ctx.principal.account_id, ctx.quote.unit_price, req.n)
        except IntegrityError:  # a twin with the same key won the race: its task is the answer
            ctx.held = False  # the hold was rolled back with the row
            if idempotency_key is None or (known := await self._replay(ctx, idempotency_key, request_hash)) is None:
                raise
            return known
        if run_in_background:
            self.worker.spawn(task, token)
            return task
        try:
            async with self.store.leased(task.id, token):
                channel, outcomes = await self._engine.submit(route, req, ctx)
                if (known := await self._known_job(ctx, channel.name, outcomes)) is not None:
                    await self.store.abandon(task.id, token)
                    return known
                return await self._record_submission(task, token, req, ctx, channel.name, outcomes)
        except BaseException:
            await asyncio.shield(self.store.abandon(task.id, token))
            raise

    async def _replay(self, ctx: RequestContext, key: str, request_hash: str) -> Task | None:
        known = await idempotency.find(self._sessions, ctx.principal.key_id, key, request_hash)
        if known is not None:
            ctx.replayed, ctx.model, ctx.operation = True, known.model, known.request.get("operation")
            ctx.cost = Decimal(0)  # this request charges nothing: the first one pays, once
        return known

    async def _record_submission(self, task: Task, token: str, req: ImageRequest, ctx: RequestContext,
                                 channel: str, outcomes: list[Finished | Submitted]) -> Task:
        meta, jobs, finished = dict(task.meta or {}), [], []
        for outcome in outcomes:
            if isinstance(outcome, Submitted):
                jobs.append({"id": outcome.job_id, "poll_url": outcome.poll_url, "images": None})
                meta.update(facts(outcome))
            else:
                finished.append(outcome)
        if finished:  # a synchronous vendor (or a part that was): store its images now
            merged = merge(finished, len(finished))
            meta["answer"] = answer(merged.meta)
            if "token_usage" in merged.meta:
                meta["token_usage"] = merged.meta["token_usage"]
            try:
                images = await self._engine.deliver(merged, req, ctx)
                jobs.append({"id": None, "poll_url": None, "images": [stored(i) for i in images]})
            except ImagesNotStored as exc:  # the client gets its task: the worker stores them, as for a job
                jobs.append({"id": None, "poll_url": None, "images": None, "made": await made(exc.made)})
                meta["storing"] = {"since": now().isoformat(), "attempts": 1, "error": exc.message}
        values = dict(channel=channel, started_at=now(), jobs=jobs, meta=meta)
        if all(j["images"] is not None for j in jobs):
            ctx.cost = await self.store.finish(task.id, token, "succeeded", **values)
        else:
            await self.store.hand_back(task, token, status="running", **values)
        return await self.store.load(task.id)

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
            return next((t for t in recent if any(j["id"] in ids for j in t.jobs)), None)

    # -- reading --

    async def get(self, task_id: str, key_id: int) -> Task:
        """The task, to its owner only: to anyone else it does not exist."""
        task = await self.store.load(task_id)
        if task is None or task.key_id != key_id:
            raise NotFound(f"No task with id '{task_id}'.", field="id", code="task_not_found")
        return task

    async def wait(self, task_id: str, key_id: int, seconds: float) -> Task:
        """The task once it is finished, or as it is after `seconds`. Woken at once when this
        process finishes it; another instance's finish is seen at the next look (0.1 s)."""
        deadline = time.monotonic() + seconds
        finished = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(finished)
        try:
            while True:
                task = await self.get(task_id, key_id)
                if task.status in TERMINAL or time.monotonic() >= deadline:
                    return task
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), min(0.1, max(0.0, deadline - time.monotonic())))
        finally:
            waiting = self._waiters.get(task_id, set())
            waiting.discard(finished)
            if not waiting:
                self._waiters.pop(task_id, None)

    def _finished(self, task_id: str) -> None:
        for waiter in self._waiters.get(task_id, ()):
            waiter.set()

    async def recent(self, key_id: int, surface: str, live: bool = False, limit: int = 100) -> list[Task]:
        """The key's newest tasks made on one surface, only the unfinished ones if `live`."""
        query = select(Task).where(Task.key_id == key_id, Task.surface == surface)
        if live:
            query = query.where(Task.status.in_(LIVE))
        async with self._sessions() as session:
            return list((await session.execute(query.order_by(Task.created_at.desc()).limit(limit))).scalars())

    async def deliveries(self, task_id: str) -> list[WebhookDelivery]:
        return await self.webhooks.deliveries(task_id)

    async def webhook_secret(self, key_id: int) -> str:
        return await self.webhooks.secret(key_id)

    # -- canceling --

    async def cancel(self, task_id: str, key_id: int) -> Task:
        """Cancel a live task; a finished one is left as it is (as Replicate does).

        When the vendor can cancel its job, the gateway tells it first, holding the task's lease
        (so no poll sees the vendor's cancel and fails the task first); if the vendor refuses,
        the task runs on and the error is the answer. When it cannot (most vendors; or the work
        is a synchronous call under way), the task is canceled at once and the job's result, if
        it comes, is discarded. Either way a canceled task is charged nothing."""
        task = await self.get(task_id, key_id)
        if task.status in TERMINAL:
            return task
        channel = await self._engine.directory.channel(task.channel) if task.channel else None
        jobs = [Submitted(j["id"], j["poll_url"]) for j in task.jobs
                if j["id"] and j["images"] is None and j.get("made") is None]  # a job finished is not stopped
        if channel is None or not jobs or not self._engine.can_cancel(channel):
            note = "" if not jobs else " The vendor cannot stop the job; its result is discarded."
            await self.store.finish(task_id, None, "canceled", error={"code": "canceled",
                                                                      "message": "Canceled by the client." + note})
            return await self.get(task_id, key_id)
        token = await self.store.take_over(task_id)
        if token is None:
            return await self.get(task_id, key_id)  # it finished before it could be held
        try:
            async with self.store.leased(task_id, token):
                for job in jobs:
                    await self._engine.ask(channel.name, lambda p, c: p.build_cancel(job, c), lambda p, r: None)
        except GatewayError:
            await self.store.write(task_id, token, lease_token=None, lease_until=None)  # the task runs on
            raise
        await self.store.finish(task_id, token, "canceled", error={"code": "canceled", "message": "Canceled by the client."})
        return await self.get(task_id, key_id)
