"""The worker every process runs: it claims due tasks by lease and advances each on its own (so
one slow vendor delays no other task): runs a synchronous model's work, polls vendor jobs,
fails what was interrupted or ran past its deadline; and now and then releases dead holds.

Once a vendor has finished, its images are never given up to an image store that fails (down,
hung, timing out): the task stays running, what the vendor made is kept on its job ("made":
base64, since vendor URLs expire and are fetched at once), and storing is tried again at doubling
waits by whichever worker claims the task next, without asking the vendor again, until
task_store_retry_seconds have passed since the first failure. Then the task fails
(storage_unavailable), charged nothing. It is charged once, when its images are stored."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from pixelgate import wirejson
from pixelgate.db.models import Task
from pixelgate.domain.request import ImageRequest
from pixelgate.domain.result import Finished, Pending, Submitted, UpstreamImage
from pixelgate.errors import GatewayError, LeaseLost, UpstreamError
from pixelgate.services.delivery import ImagesNotStored
from pixelgate.services.engine import Engine, RequestContext
from pixelgate.services.leases import now
from pixelgate.services.supervisor import supervise
from pixelgate.services.tasks.snapshot import request_from_snapshot, task_context
from pixelgate.services.tasks.store import TaskStore, answer, aware, facts, finished_from, made, stored, storing

log = logging.getLogger("pixelgate.tasks")

MAX_RUNS = 5
"""Starts of a synchronous task's work: a request that kills its process each time is failed. Five,
not fewer: in a fleet where one instance keeps crashing for other reasons, that instance may take
up an orphaned task several times before a healthy one does."""
MAX_WORKING = 256
"""Tasks one process works on at once (each is mostly waiting on a vendor)."""
SWEEP_SECONDS = 10.0
"""How often (at most; or once a lease) each process releases holds whose request died."""
STORE_RETRY_MAX_WAIT = 60.0
"""The longest wait between two tries at storing a task's images while the image store fails."""


class TaskWorker:
    def __init__(self, store: TaskStore, engine: Engine, poll_interval: float,
                 store_retry_seconds: float = 1800) -> None:
        self._store = store
        self._engine = engine
        self._poll_interval = poll_interval
        self._store_retry = timedelta(seconds=store_retry_seconds)
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
        elif storing(task):  # the vendor finished, the image store failed: bounded by its own limit
            await self._poll(task, token)
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
        ctx = task_context(task)
        try:
            req = await request_from_snapshot(task.request, self._engine.storage)
            result = await self._engine.produce(await self._engine.route_for(req), req, ctx)
        except ImagesNotStored as exc:  # the vendor answered, the store did not: its images are kept
            jobs = [{"id": None, "poll_url": None, "images": None, "made": await made(exc.made)}]
            meta = {**(task.meta or {}), **_answered(exc.made.meta)}
            await self._not_stored(task, token, exc, jobs, meta, progress=1.0, channel=ctx.channel)
            return
        except GatewayError as exc:
            await self._store.finish(task.id, token, "failed", error=_error(exc), channel=ctx.channel)
            return
        jobs = [{"id": None, "poll_url": None, "images": [stored(i) for i in result.images]}]
        meta = {**(task.meta or {}), **_answered(result.meta)}
        await self._store.finish(task.id, token, "succeeded", jobs=jobs, channel=ctx.channel, meta=meta)

    async def _poll(self, task: Task, token: str) -> None:
        """Poll the task's unfinished jobs once; finish it when all are done."""
        req = await request_from_snapshot(task.request)
        ctx = task_context(task)
        jobs = [dict(j) for j in task.jobs]
        meta = dict(task.meta or {})
        progress: list[float] = []
        unstored: ImagesNotStored | None = None
        try:
            for job in jobs:
                if job["images"] is not None:
                    progress.append(1.0)
                    continue
                if job.get("made") is not None:  # finished earlier; the store failed: the vendor is not asked again
                    outcome: Finished | Pending = finished_from(job["made"])
                else:
                    outcome = await self._engine.poll(task.channel, req, Submitted(job["id"], job["poll_url"]),
                                                      live=True)
                    meta.update(facts(outcome))
                    if isinstance(outcome, Pending) and outcome.preview is not None:
                        meta.update(await self._preview(outcome.preview, meta.get("preview"), req, ctx))
                if isinstance(outcome, Finished):
                    meta.setdefault("answer", answer(outcome.meta))
                    try:
                        job["images"] = [stored(i) for i in await self._engine.deliver(outcome, req, ctx)]
                        job.pop("made", None)
                    except ImagesNotStored as exc:
                        if job.get("made") is None:
                            job["made"] = await made(exc.made)
                        unstored = exc
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
            meta.pop("storing", None)
            await self._store.finish(task.id, token, "succeeded", jobs=jobs, meta=meta)
            return
        # a hiccup on the first job leaves no fresh progress: keep what we knew
        done = round(sum(progress) / len(progress), 3) if progress else task.progress
        if unstored is not None:
            await self._not_stored(task, token, unstored, jobs, meta, progress=done)
            return
        if not any(j.get("made") is not None for j in jobs):
            meta.pop("storing", None)
        await self._store.hand_back(task, token, event=_status_event(task, meta, done),
                                    jobs=jobs, progress=done, meta=meta)

    async def _not_stored(self, task: Task, token: str, exc: ImagesNotStored, jobs: list[dict], meta: dict,
                          **values: Any) -> None:
        """The image store failed after the vendor finished: keep what it made on the row (`jobs`)
        and try again after a doubling wait (at most STORE_RETRY_MAX_WAIT), until the bound has
        passed since the first failure; then fail the task, charged nothing (its hold released)."""
        moment = now()
        state = dict(meta.get("storing") or {"since": moment.isoformat(), "attempts": 0})
        state["attempts"] = int(state.get("attempts", 0)) + 1
        state["error"] = exc.message
        since = aware(datetime.fromisoformat(state["since"]))
        meta = {**meta, "storing": state}
        if moment - since >= self._store_retry:
            log.error("task %s: its images could not be stored for %s; failed, nothing charged",
                      task.id, _span(self._store_retry))
            await self._store.finish(task.id, token, "failed", jobs=jobs, meta=meta, error={
                "code": "storage_unavailable", "status": 503,
                "message": f"The images were made, but the image store was unavailable for "
                           f"{_span(self._store_retry)}: they could not be kept. Nothing was charged."}, **values)
            return
        wait = min(self._poll_interval * 2 ** min(state["attempts"] - 1, 30), STORE_RETRY_MAX_WAIT)
        wait *= random.uniform(0.8, 1.0)  # a fleet's stalled tasks do not all try the store at once
        wait = max(0.0, min(wait, (since + self._store_retry - moment).total_seconds()))  # the last try on time
        state["next_at"] = (moment + timedelta(seconds=wait)).isoformat()
        log.warning("task %s: its images could not be stored (try %d): %s; trying again in %.1f s",
                    task.id, state["attempts"], exc.message, wait)
        await self._store.hand_back(task, token, after=timedelta(seconds=wait), jobs=jobs, meta=meta, **values)

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


def _answered(meta: dict) -> dict:
    """What a task keeps of a synchronous vendor's answer (its facts, and its token usage)."""
    return {"answer": answer(meta), **({"token_usage": meta["token_usage"]} if "token_usage" in meta else {})}


def _span(length: timedelta) -> str:
    seconds = length.total_seconds()
    return f"{seconds / 60:g} minutes" if seconds >= 120 else f"{seconds:g} seconds"
