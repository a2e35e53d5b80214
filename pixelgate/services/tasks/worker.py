"""The worker every process runs: it claims due tasks by lease and advances each on its own (so
one slow vendor delays no other task): runs a synchronous model's work, polls vendor jobs,
fails what was interrupted or ran past its deadline; and now and then releases dead holds."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from pixelgate import wirejson
from pixelgate.db.models import Task
from pixelgate.domain.request import ImageRequest
from pixelgate.domain.result import Finished, Pending, Submitted, UpstreamImage
from pixelgate.errors import GatewayError, LeaseLost, UpstreamError
from pixelgate.services.engine import Engine, RequestContext
from pixelgate.services.leases import now
from pixelgate.services.supervisor import supervise
from pixelgate.services.tasks.snapshot import request_from_snapshot
from pixelgate.services.tasks.store import TaskStore, answer, aware, facts, stored

log = logging.getLogger("pixelgate.tasks")

MAX_RUNS = 5
"""Starts of a synchronous task's work: a request that kills its process each time is failed. Five,
not fewer: in a fleet where one instance keeps crashing for other reasons, that instance may take
up an orphaned task several times before a healthy one does."""
MAX_WORKING = 256
"""Tasks one process works on at once (each is mostly waiting on a vendor)."""
SWEEP_SECONDS = 10.0
"""How often (at most; or once a lease) each process releases holds whose request died."""


class TaskWorker:
    def __init__(self, store: TaskStore, engine: Engine, poll_interval: float) -> None:
        self._store = store
        self._engine = engine
        self._poll_interval = poll_interval
        self.loop_task: asyncio.Task | None = None
        self._working: set[asyncio.Task] = set()
        self._stopping = False
        self._swept = 0.0

    def start(self) -> None:
        self.loop_task = supervise("tasks", self._round, until=lambda: self._stopping)

    async def close(self) -> None:
        self._stopping = True
        jobs = [j for j in [self.loop_task, *self._working] if j is not None]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)

    def spawn(self, task: Task, token: str) -> None:
        """Work on a task this process holds, beside everything else."""
        job = asyncio.create_task(self._work(task, token))
        self._working.add(job)
        job.add_done_callback(self._working.discard)

    async def _round(self) -> None:
        busy = await self.tick()
        await asyncio.sleep(0.02 if busy else self._poll_interval)

    async def tick(self) -> bool:
        """One round: start work on every due task this process could claim, and now and then
        sweep dead holds."""
        if time.monotonic() - self._swept > min(SWEEP_SECONDS, self._store.leases.length.total_seconds()):
            self._swept = time.monotonic()
            if released := await self._engine.billing.release_abandoned():
                log.info("released %d holds whose request died", released)
        claimed = await self._store.claim_due(MAX_WORKING - len(self._working))
        for task, token in claimed:
            self.spawn(task, token)
        return bool(claimed)

    async def _work(self, task: Task, token: str) -> None:
        try:
            async with self._store.leased(task.id, token):
                await self._advance(task, token)
        except LeaseLost:
            log.info("task %s was taken over by another worker", task.id)
        except Exception:
            log.exception("task %s: round failed; its lease will run out and it is tried again", task.id)

    async def _advance(self, task: Task, token: str) -> None:
        finish = self._store.finish
        if task.status == "starting":
            # its submitting request died between writing the intent and recording the vendor's
            # answer: that client got no task, so none is charged
            await finish(task.id, token, "failed", error={
                "code": "task_interrupted", "message": "The submission was interrupted (the gateway restarted)."})
        elif aware(task.deadline_at) < now():
            await finish(task.id, token, "failed", error={
                "code": "task_deadline_exceeded", "message": "The task did not finish before its deadline."})
        elif task.request.get("sync") and not task.jobs:
            await self._run_sync(task, token)
        elif not any(j["id"] for j in task.jobs):  # a row from before tasks were resumable
            await finish(task.id, token, "failed", error={
                "code": "task_interrupted", "message": "The task was interrupted (the gateway restarted while it ran)."})
        else:
            await self._poll(task, token)

    async def _run_sync(self, task: Task, token: str) -> None:
        """The work of a synchronous model, on whichever worker claimed it: again after a crash."""
        runs = task.runs + 1
        if runs > MAX_RUNS:
            await self._store.finish(task.id, token, "failed", error={
                "code": "task_interrupted", "message": f"The task was interrupted {MAX_RUNS} times."})
            return
        await self._store.write(task.id, token, status="running", runs=runs, started_at=task.started_at or now())
        ctx = RequestContext(request_id=task.request_id, surface=task.surface, base_url=task.origin or "")
        try:
            req = await request_from_snapshot(task.request, self._engine.storage)
            result = await self._engine.produce(await self._engine.route_for(req), req, ctx)
        except GatewayError as exc:
            await self._store.finish(task.id, token, "failed", error=_error(exc), channel=ctx.channel)
            return
        jobs = [{"id": None, "poll_url": None, "images": [stored(i) for i in result.images]}]
        meta = {**(task.meta or {}), "answer": answer(result.meta),
                **({"token_usage": result.meta["token_usage"]} if "token_usage" in result.meta else {})}
        await self._store.finish(task.id, token, "succeeded", jobs=jobs, channel=ctx.channel, meta=meta)

    async def _poll(self, task: Task, token: str) -> None:
        """Poll the task's unfinished jobs once; finish it when all are done."""
        req = await request_from_snapshot(task.request)
        ctx = RequestContext(request_id=task.request_id, surface=task.surface, base_url=task.origin or "",
                             channel=task.channel)  # its images may come from that channel's hosts only
        jobs = [dict(j) for j in task.jobs]
        meta = dict(task.meta or {})
        progress: list[float] = []
        try:
            for job in jobs:
                if job["images"] is not None:
                    progress.append(1.0)
                    continue
                outcome = await self._engine.poll(task.channel, req, Submitted(job["id"], job["poll_url"]),
                                                  live=True)
                meta.update(facts(outcome))
                if isinstance(outcome, Pending) and outcome.preview is not None:
                    meta.update(await self._preview(outcome.preview, meta.get("preview"), req, ctx))
                if isinstance(outcome, Finished):
                    meta.setdefault("answer", answer(outcome.meta))
                    job["images"] = [stored(i) for i in await self._engine.deliver(outcome, req, ctx)]
                    progress.append(1.0)
                else:
                    progress.append(outcome.progress or 0.0)
        except UpstreamError as exc:
            if not exc.retry_elsewhere:  # a hiccup (5xx, 429) is polled again; anything else is final
                await self._store.finish(task.id, token, "failed", jobs=jobs, error=_error(exc), meta=meta)
                return
        except GatewayError as exc:
            await self._store.finish(task.id, token, "failed", jobs=jobs, error=_error(exc), meta=meta)
            return
        if all(j["images"] is not None for j in jobs):
            await self._store.finish(task.id, token, "succeeded", jobs=jobs, meta=meta)
            return
        # a hiccup on the first job leaves no fresh progress: keep what we knew
        done = round(sum(progress) / len(progress), 3) if progress else task.progress
        await self._store.hand_back(task, token, event=_status_event(task, meta, done),
                                    jobs=jobs, progress=done, meta=meta)

    async def _preview(self, image: UpstreamImage, kept: dict | None, req: ImageRequest,
                       ctx: RequestContext) -> dict:
        """A look at the unfinished image, stored by the gateway (vendor URLs expire and name the
        upstream) when it is new; best effort: the job itself is what matters."""
        source = hashlib.sha256((image.url or wirejson.as_text(image.b64 or "")).encode()).hexdigest()[:16]
        if kept and kept.get("source") == source:
            return {}
        try:
            image_stored = (await self._engine.deliver(Finished([image]), req, ctx))[0]
        except GatewayError as exc:
            log.info("task preview not stored: %s", exc.message)
            return {}
        return {"preview": {"id": image_stored.id, "format": image_stored.format, "source": source}}


def _status_event(task: Task, meta: dict, progress: float | None) -> str | None:
    """The event to announce for a change of the vendor's status (and progress) while the task
    runs, for tasks whose webhook_events ask for "status" (the midjourney-proxy notifyHook); the
    outcome itself is the "completed" event."""
    if not task.webhook_url or "status" not in (task.webhook_events or []):
        return None
    event = _event_name(meta.get("status"), progress)
    if event is None or event == _event_name((task.meta or {}).get("status"), task.progress):
        return None
    return event


def _event_name(status: Any, progress: float | None) -> str | None:
    if not isinstance(status, str) or not status:
        return None
    return f"{status}:{round((progress or 0) * 100)}"[:16]  # WebhookDelivery.event is 16 wide


def _error(exc: GatewayError) -> dict:
    return {"code": exc.code, "message": exc.message, "status": exc.status}
