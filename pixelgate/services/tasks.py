"""Asynchronous work: tasks, exact when a process is killed at any line, across instances.

The Task row is the source of truth, and every change to it is a conditional UPDATE:

  starting  the intent, written with the request's hold in ONE transaction before any vendor
            call; the submitting request holds its lease and calls the vendor. The client has
            not been answered yet: if the process dies here, the lease runs out and whoever
            finds the row fails it and releases the hold (the client saw an error and retries).
  pending   accepted and answered. A synchronous model run as a task starts here: its request
            (input images in storage) is on the row, and any worker runs it, again after a
            crash (at most MAX_RUNS times).
  running   vendor jobs recorded on the row; any worker polls them, one at a time by lease.
  succeeded / failed / canceled
            the outcome, its settlement (the ledger) and its webhook (an outbox row) are written
            in ONE transaction: there is no moment at which a task is finished but unbilled,
            billed twice, or finished unannounced.

A worker claims a task by setting `lease_until` and a fresh `lease_token`; every write it
makes while it works is conditional on that token (a fence) and the lease is renewed while the
work runs. A worker that stalls past its lease and was taken over writes nothing (LeaseLost).

Crash windows that remain, by design: a vendor that accepted a job in the instant before the
process died holding a `starting` row has a job nobody follows (the operator may pay for it;
the client is not charged). Images stored before the outcome was written are left unreferenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
import time
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, AsyncIterator

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate import wirejson
from pixelgate.db.models import Task, WebhookDelivery
from pixelgate.domain.images import InputImage
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import Finished, Pending, Submitted, UpstreamImage
from pixelgate.domain.prices import token_usage
from pixelgate.errors import GatewayError, LeaseLost, NotFound, UpstreamError
from pixelgate.services import idempotency
from pixelgate.services.billing import Quote
from pixelgate.services.engine import Engine, RequestContext, merge
from pixelgate.services.supervisor import supervise
from pixelgate.services.webhooks import WebhookSender, new_delivery

log = logging.getLogger("pixelgate.tasks")

LIVE = ("starting", "pending", "running")
TERMINAL = ("succeeded", "failed", "canceled")
MAX_RUNS = 5
"""Starts of a synchronous task's work: a request that kills its process each time is failed. Five,
not fewer: in a fleet where one instance keeps crashing for other reasons, that instance may take
up an orphaned task several times before a healthy one does."""
MAX_WORKING = 256
"""Tasks one process works on at once (each is mostly waiting on a vendor)."""
SWEEP_SECONDS = 10.0
"""How often (at most; or once a lease) each process releases holds whose request died."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite drops the zone
        return value.replace(tzinfo=timezone.utc)
    return value


def new_task_id() -> str:
    return "task_" + secrets.token_hex(12)


_IMAGE_FIELDS = ("images", "mask", "style_images")


async def request_snapshot(req: ImageRequest, storage=None) -> dict:
    """The request as the task keeps it: everything, so that any worker of any instance can run
    it again. Input images go to image storage (with `storage`) and are kept by id."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(ImageRequest):
        value = getattr(req, f.name)
        if f.name in _IMAGE_FIELDS:
            if storage is not None and value:
                many = value if isinstance(value, list) else [value]
                refs = [{"id": await storage.put(i.data), "format": i.format, "width": i.width, "height": i.height,
                         "has_alpha": i.has_alpha, "filename": i.filename} for i in many]
                data[f.name] = refs if isinstance(value, list) else refs[0]
            continue
        data[f.name] = value.value if hasattr(value, "value") else value
    return data


async def request_from_snapshot(data: dict, storage=None) -> ImageRequest:
    names = {f.name for f in dataclasses.fields(ImageRequest)}
    fields = {k: v for k, v in data.items() if k in names and k not in _IMAGE_FIELDS}
    fields["operation"] = Operation(data["operation"])
    fields["delivery"] = Delivery(data["delivery"]) if data.get("delivery") else None
    fields["extras"] = dict(data.get("extras") or {})
    req = ImageRequest(**fields)
    if storage is not None:
        async def load(ref: dict) -> InputImage:
            stored = await storage.get(ref["id"])
            if stored is None:
                raise GatewayError("An input image of this task is no longer in storage.", code="task_input_lost")
            return InputImage(stored, ref["format"], ref["width"], ref["height"], ref["has_alpha"], ref.get("filename"))

        req.images = [await load(r) for r in data.get("images") or []]
        req.style_images = [await load(r) for r in data.get("style_images") or []]
        req.mask = await load(data["mask"]) if data.get("mask") else None
    return req


class TaskService:
    def __init__(self, sessions: async_sessionmaker, engine: Engine, webhooks: WebhookSender,
                 poll_interval: float, deadline_seconds: float, lease_seconds: float = 30) -> None:
        self._sessions = sessions
        self._engine = engine
        self.webhooks = webhooks
        self._poll_interval = poll_interval
        self._deadline = timedelta(seconds=deadline_seconds)
        self._lease = timedelta(seconds=lease_seconds)
        """How long a claimed task is one worker's alone without renewal; a worker that dies
        holding one delays it by at most this long."""
        self._loop_task: asyncio.Task | None = None
        self._working: set[asyncio.Task] = set()
        self._stopping = False
        self._swept = 0.0
        self._waiters: dict[str, set[asyncio.Event]] = {}
        """Requests of this process waiting for a task (wait), woken by its finish."""

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
                    lease_until=moment + self._lease, idempotency_key=idempotency_key, request_hash=request_hash)
        try:
            async with self._sessions() as session, session.begin():
                session.add(task)
                ctx.held = await self._engine.billing.hold(ctx.principal.account_id, ctx.request_id,
                                                           ctx.quote.unit_price, req.n, session=session)
        except IntegrityError:  # a twin with the same key won the race: its task is the answer
            ctx.held = False  # the hold was rolled back with the row
            if idempotency_key is None or (known := await self._replay(ctx, idempotency_key, request_hash)) is None:
                raise
            return known
        if run_in_background:
            self._spawn(self._work(task, token))
            return task
        try:
            async with self._leased(task.id, token):
                channel, outcomes = await self._engine.submit(route, req, ctx)
                if (known := await self._known_job(ctx, channel.name, outcomes)) is not None:
                    await self._abandon(task.id, token)
                    return known
                return await self._record_submission(task, token, req, ctx, channel.name, outcomes)
        except BaseException:
            await asyncio.shield(self._abandon(task.id, token))
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
                meta.update(_facts(outcome))
            else:
                finished.append(outcome)
        if finished:  # a synchronous vendor (or a part that was): store its images now
            merged = merge(finished, len(finished))
            meta["answer"] = _answer(merged.meta)
            if "token_usage" in merged.meta:
                meta["token_usage"] = merged.meta["token_usage"]
            images = await self._engine.deliver(merged, req, ctx)
            jobs.append({"id": None, "poll_url": None, "images": [_stored(i) for i in images]})
        values = dict(channel=channel, started_at=now(), jobs=jobs, meta=meta)
        if all(j["images"] is not None for j in jobs):
            ctx.cost = await self._finish(task.id, token, "succeeded", **values)
        else:
            await self._write(task.id, token, status="running", lease_token=None, lease_until=None,
                              next_poll_at=now() + timedelta(seconds=self._poll_interval), **values)
        async with self._sessions() as session:
            return await session.get(Task, task.id)

    async def _abandon(self, task_id: str, token: str) -> None:
        """The submission failed (the client gets the error): no task, no charge, one transaction."""
        async with self._sessions() as session, session.begin():
            task = await session.get(Task, task_id)
            if task is None or task.lease_token != token or task.status != "starting":
                return  # taken over (and failed) by another worker already
            await self._engine.billing.settle(task.request_id, 0, session=session)
            await session.delete(task)

    # -- reading --

    async def get(self, task_id: str, key_id: int) -> Task:
        """The task, to its owner only: to anyone else it does not exist."""
        async with self._sessions() as session:
            task = await session.get(Task, task_id)
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
        jobs = [Submitted(j["id"], j["poll_url"]) for j in task.jobs if j["id"] and j["images"] is None]
        if channel is None or not jobs or not self._engine.can_cancel(channel):
            note = "" if not jobs else " The vendor cannot stop the job; its result is discarded."
            await self._finish(task_id, None, "canceled", error={"code": "canceled",
                                                                  "message": "Canceled by the client." + note})
            return await self.get(task_id, key_id)
        token = await self._take_over(task_id)
        if token is None:
            return await self.get(task_id, key_id)  # it finished before it could be held
        try:
            async with self._leased(task_id, token):
                for job in jobs:
                    await self._engine.ask(channel.name, lambda p, c: p.build_cancel(job, c), lambda p, r: None)
        except GatewayError:
            await self._write(task_id, token, lease_token=None, lease_until=None)  # the task runs on
            raise
        await self._finish(task_id, token, "canceled", error={"code": "canceled", "message": "Canceled by the client."})
        return await self.get(task_id, key_id)

    async def _take_over(self, task_id: str) -> str | None:
        """The task's lease, once its holder lets go (or its lease runs out); None if it finished."""
        deadline = time.monotonic() + self._lease.total_seconds() + 1
        while time.monotonic() < deadline:
            if (token := await self._claim(task_id)) is not None:
                return token
            async with self._sessions() as session:
                if (await session.get(Task, task_id)).status in TERMINAL:
                    return None
            await asyncio.sleep(0.02)
        return None

    # -- leases --

    async def _claim(self, task_id: str) -> str | None:
        token, moment = secrets.token_hex(16), now()
        async with self._sessions() as session, session.begin():
            won = await session.execute(
                update(Task).where(Task.id == task_id, Task.status.in_(LIVE),
                                   or_(Task.lease_until.is_(None), Task.lease_until < moment))
                .values(lease_until=moment + self._lease, lease_token=token))
        return token if won.rowcount == 1 else None

    async def _write(self, task_id: str, token: str, **values: Any) -> None:
        """Change a live task this worker holds; LeaseLost if another worker took it over."""
        async with self._sessions() as session, session.begin():
            won = await session.execute(update(Task).where(
                Task.id == task_id, Task.lease_token == token, Task.status.in_(LIVE)).values(**values))
        if won.rowcount != 1:
            raise LeaseLost(f"Task {task_id} was taken over by another worker.")

    @asynccontextmanager
    async def _leased(self, task_id: str, token: str) -> AsyncIterator[None]:
        """Renew the lease while the block runs; if it cannot be renewed (another worker took
        the task over), cancel the block and raise LeaseLost."""
        current = asyncio.current_task()
        lost = False

        async def renew() -> None:
            nonlocal lost
            while True:
                await asyncio.sleep(self._lease.total_seconds() / 3)
                try:
                    await self._write(task_id, token, lease_until=now() + self._lease)
                except LeaseLost:
                    lost = True
                    current.cancel()
                    return
                except Exception:  # the database may be back before the lease runs out
                    log.warning("could not renew the lease of %s", task_id, exc_info=True)

        keeper = asyncio.create_task(renew())
        try:
            yield
        except asyncio.CancelledError:
            if lost and current.uncancel() == 0:
                raise LeaseLost(f"Task {task_id} was taken over by another worker.") from None
            raise
        finally:
            keeper.cancel()

    # -- the loop --

    def start(self) -> None:
        self._loop_task = supervise("tasks", self._round, until=lambda: self._stopping)
        self.webhooks.start()

    async def close(self) -> None:
        self._stopping = True
        for job in [self._loop_task, *self._working]:
            if job is not None:
                job.cancel()
        await asyncio.gather(*[j for j in [self._loop_task, *self._working] if j is not None],
                             return_exceptions=True)
        await self.webhooks.close()

    def _spawn(self, work) -> None:
        job = asyncio.create_task(work)
        self._working.add(job)
        job.add_done_callback(self._working.discard)

    async def _round(self) -> None:
        busy = await self.tick()
        await asyncio.sleep(0.02 if busy else self._poll_interval)

    async def tick(self) -> bool:
        """One round: start work on every due task this process could claim (each runs on its
        own, so one slow vendor delays no other task), and now and then sweep dead holds."""
        if time.monotonic() - self._swept > min(SWEEP_SECONDS, self._lease.total_seconds()):
            self._swept = time.monotonic()
            if released := await self._engine.billing.release_abandoned():
                log.info("released %d holds whose request died", released)
        claimed = await self._claim_due(MAX_WORKING - len(self._working))
        for task, token in claimed:
            self._spawn(self._work(task, token))
        return bool(claimed)

    async def _claim_due(self, room: int) -> list[tuple[Task, str]]:
        if room <= 0:
            return []
        moment, token = now(), secrets.token_hex(16)
        async with self._sessions() as session:
            due = list((await session.execute(
                select(Task.id).where(Task.status.in_(LIVE), Task.next_poll_at <= moment,
                                      or_(Task.lease_until.is_(None), Task.lease_until < moment))
                .order_by(Task.next_poll_at).limit(min(room, 64)))).scalars())
        if not due:
            return []
        async with self._sessions() as session, session.begin():
            await session.execute(update(Task).where(
                Task.id.in_(due), Task.status.in_(LIVE),
                or_(Task.lease_until.is_(None), Task.lease_until < moment))
                .values(lease_until=moment + self._lease, lease_token=token))
        async with self._sessions() as session:
            mine = (await session.execute(select(Task).where(Task.id.in_(due), Task.lease_token == token))).scalars()
            return [(task, token) for task in mine]

    async def _work(self, task: Task, token: str) -> None:
        try:
            async with self._leased(task.id, token):
                await self._advance(task, token)
        except LeaseLost:
            log.info("task %s was taken over by another worker", task.id)
        except Exception:
            log.exception("task %s: round failed; its lease will run out and it is tried again", task.id)

    async def _advance(self, task: Task, token: str) -> None:
        if task.status == "starting":
            # its submitting request died between writing the intent and recording the vendor's
            # answer: that client got no task, so none is charged
            await self._finish(task.id, token, "failed", error={
                "code": "task_interrupted", "message": "The submission was interrupted (the gateway restarted)."})
        elif aware(task.deadline_at) < now():
            await self._finish(task.id, token, "failed", error={
                "code": "task_deadline_exceeded", "message": "The task did not finish before its deadline."})
        elif task.request.get("sync") and not task.jobs:
            await self._run_sync(task, token)
        elif not any(j["id"] for j in task.jobs):  # a row from before tasks were resumable
            await self._finish(task.id, token, "failed", error={
                "code": "task_interrupted", "message": "The task was interrupted (the gateway restarted while it ran)."})
        else:
            await self._poll(task, token)

    async def _run_sync(self, task: Task, token: str) -> None:
        """The work of a synchronous model, on whichever worker claimed it: again after a crash."""
        runs = task.runs + 1
        if runs > MAX_RUNS:
            await self._finish(task.id, token, "failed", error={
                "code": "task_interrupted", "message": f"The task was interrupted {MAX_RUNS} times."})
            return
        await self._write(task.id, token, status="running", runs=runs, started_at=task.started_at or now())
        ctx = RequestContext(request_id=task.request_id, surface=task.surface, base_url=task.origin or "")
        try:
            req = await request_from_snapshot(task.request, self._engine.storage)
            result = await self._engine.produce(await self._engine.route_for(req), req, ctx)
        except GatewayError as exc:
            await self._finish(task.id, token, "failed", error=_error(exc), channel=ctx.channel)
            return
        jobs = [{"id": None, "poll_url": None, "images": [_stored(i) for i in result.images]}]
        meta = {**(task.meta or {}), "answer": _answer(result.meta),
                **({"token_usage": result.meta["token_usage"]} if "token_usage" in result.meta else {})}
        await self._finish(task.id, token, "succeeded", jobs=jobs, channel=ctx.channel, meta=meta)

    async def _poll(self, task: Task, token: str) -> None:
        """Poll the task's unfinished jobs once; finish it when all are done."""
        req = await request_from_snapshot(task.request)
        ctx = RequestContext(request_id=task.request_id, surface=task.surface, base_url=task.origin or "")
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
                    meta.setdefault("answer", _answer(outcome.meta))
                    job["images"] = [_stored(i) for i in await self._engine.deliver(outcome, req, ctx)]
                    progress.append(1.0)
                else:
                    progress.append(outcome.progress or 0.0)
        except UpstreamError as exc:
            if not exc.retry_elsewhere:  # a hiccup (5xx, 429) is polled again; anything else is final
                await self._finish(task.id, token, "failed", jobs=jobs, error=_error(exc), meta=meta)
                return
        except GatewayError as exc:
            await self._finish(task.id, token, "failed", jobs=jobs, error=_error(exc), meta=meta)
            return
        if all(j["images"] is not None for j in jobs):
            await self._finish(task.id, token, "succeeded", jobs=jobs, meta=meta)
            return
        # a hiccup on the first job leaves no fresh progress: keep what we knew
        done = round(sum(progress) / len(progress), 3) if progress else task.progress
        announce = self._status_event(task, meta, done)
        async with self._sessions() as session, session.begin():
            won = await session.execute(update(Task).where(
                Task.id == task.id, Task.lease_token == token, Task.status.in_(LIVE)).values(
                jobs=jobs, progress=done, lease_until=None, lease_token=None, meta=meta,
                next_poll_at=now() + timedelta(seconds=self._poll_interval)))
            if won.rowcount != 1:
                raise LeaseLost(f"Task {task.id} was taken over by another worker.")
            if announce is not None and not await _announced(session, task.id, announce):
                session.add(new_delivery(task, announce))
        if announce is not None:
            self.webhooks.wake()

    async def _finish(self, task_id: str, token: str | None, status: str, *, jobs: list | None = None,
                      error: dict | None = None, **values: Any) -> Decimal | None:
        """Write the outcome, its settlement and its webhook in one transaction; returns the cost.
        Fenced by `token`; without one (a cancel), by the task being live, which fences out
        whoever holds it. LeaseLost if the task was taken over or already finished."""
        values.update(status=status, completed_at=now(), lease_until=None, lease_token=None, error=error)
        if jobs is not None:
            values["jobs"] = jobs
            if status == "succeeded":
                values["output"], values["progress"] = _output(jobs), 1.0
        fence = [Task.id == task_id, Task.status.in_(LIVE)] + ([Task.lease_token == token] if token else [])
        async with self._sessions() as session, session.begin():
            won = await session.execute(update(Task).where(*fence).values(**values)
                                        .execution_options(synchronize_session=False))
            if won.rowcount != 1:
                raise LeaseLost(f"Task {task_id} was taken over or finished by another worker.")
            task = await session.get(Task, task_id)
            delivered = len(task.output or []) if status == "succeeded" else 0
            quote = Quote.from_snapshot(task.request.get("quote") or task.request)
            charge = quote.charge(delivered, token_usage((task.meta or {}).get("token_usage")))
            charged = await self._engine.billing.settle(task.request_id, delivered, session=session, charge=charge)
            task.cost = charged if charged is not None else charge
            wanted = task.webhook_url and (not task.webhook_events or "completed" in task.webhook_events)
            if wanted:
                session.add(new_delivery(task, "completed"))
            cost = task.cost
        if wanted:
            self.webhooks.wake()
        for waiter in self._waiters.get(task_id, ()):
            waiter.set()
        return cost

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
            return next((t for t in recent if any(j["id"] in ids for j in t.jobs)), None)

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

    @staticmethod
    def _status_event(task: Task, meta: dict, progress: float | None) -> str | None:
        """The event to announce for a change of the vendor's status (and progress) while the
        task runs, for tasks whose webhook_events ask for "status" (the midjourney-proxy
        notifyHook); the outcome itself is the "completed" event."""
        if not task.webhook_url or "status" not in (task.webhook_events or []):
            return None
        event = _event_name(meta.get("status"), progress)
        if event is None or event == _event_name((task.meta or {}).get("status"), task.progress):
            return None
        return event


async def _announced(session, task_id: str, event: str) -> bool:
    found = await session.execute(select(WebhookDelivery.id).where(
        WebhookDelivery.task_id == task_id, WebhookDelivery.event == event))
    return found.first() is not None


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


def _answer(meta: dict) -> dict:
    """The vendor facts a synchronous answer carries beside its images (OpenAI's size, quality,
    usage...), kept so that an answer rendered from the task is the one the call would have made."""
    return {k: v for k, v in meta.items() if k not in ("existing", "token_usage")}


def _stored(image) -> dict:
    """An image on the task: where it is stored, and the facts its surface shows beside it (a
    task answered as the synchronous call would have been: Ideogram's resolution and seed)."""
    facts = {"width": image.width, "height": image.height, "details": image.details}
    return {"id": image.id, "format": image.format, "revised_prompt": image.revised_prompt,
            **{k: v for k, v in facts.items() if v}}


def _output(jobs: list[dict]) -> list[dict]:
    return [image for job in jobs for image in (job["images"] or [])]


def _error(exc: GatewayError) -> dict:
    return {"code": exc.code, "message": exc.message, "status": exc.status}
