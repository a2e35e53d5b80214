"""A request of an API whose answer is the images themselves (OpenAI's, Ideogram's) run as a
durable task, when it must outlive its connection:

- the model's vendor is asynchronous: its job is on a task row before the vendor is called, so a
  crash anywhere leaves it to another instance to follow (not orphaned, not paid for twice);
- the client sent `Prefer: respond-async`: answered 202 with the task at once;
- the client sent an `Idempotency-Key`: a repeat finds the first request's task;
- the body names a `webhook`.

Otherwise the request takes the engine's fast path. A task waited for is answered exactly as the
synchronous call would have been, from the task's stored images.
"""

from __future__ import annotations

import asyncio

import pybase64
from fastapi import Request

from pixelgate.db.models import Task
from pixelgate.domain.request import Delivery, ImageRequest
from pixelgate.errors import GatewayError, InvalidRequest, ModelNotFound, NotFound, UpstreamTimeout
from pixelgate.services import idempotency
from pixelgate.services.engine import RequestContext
from pixelgate.services.storage import file_name
from pixelgate.services.tasks import LIVE, aware


async def webhook(services, value) -> str | None:
    """The body's webhook URL, checked as any URL the gateway will call."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("'webhook' must be a URL.", field="webhook")
    await services.fetcher.check_destination(value, "webhook")
    return value


def prefers_async(request: Request) -> bool:
    return "respond-async" in request.headers.get("prefer", "").lower()


async def is_asynchronous(services, req: ImageRequest) -> bool:
    """Whether the model's vendor answers with a job (a retired model's successor never does)."""
    try:
        route = await services.directory.route(req.model, req.provider)
    except ModelNotFound:
        return False  # a retired model, or none: the engine says which when it prepares
    return route.capabilities.asynchronous


async def needs_task(request: Request, services, req: ImageRequest, webhook: str | None) -> bool:
    if req.stream:  # a stream is its connection; it cannot be replayed or resumed
        return False
    return bool(prefers_async(request) or webhook or idempotency.key_from(request.headers)
                or await is_asynchronous(services, req))


async def submit(request: Request, services, req: ImageRequest, ctx: RequestContext, client_input: dict,
                 webhook: str | None, meta: dict | None = None) -> Task:
    return await services.tasks.submit(
        req, ctx, req.model, client_input, webhook, run_in_background=not await is_asynchronous(services, req),
        meta=meta, idempotency_key=idempotency.key_from(request.headers))


async def settled(services, task: Task, ctx: RequestContext) -> Task:
    """The task once finished, for a client waiting on its connection; its failure raised as the
    error the synchronous call would have answered."""
    task = await services.tasks.wait(task.id, ctx.principal.key_id, services.settings.async_wait_seconds)
    if task.status in LIVE:
        raise UpstreamTimeout(
            f"The task {task.id} did not finish within {services.settings.async_wait_seconds:g} s; it goes on: "
            "ask again with the same Idempotency-Key, or poll its task.", code="job_deadline_exceeded")
    if not ctx.replayed:  # a repeat delivers the first one's images: it made and pays for none
        ctx.cost, ctx.images_delivered = task.cost, len(task.output or [])
    raise_failure(task)
    return task


def raise_failure(task: Task) -> None:
    if task.status != "succeeded":
        error = task.error or {}
        raise GatewayError(error.get("message") or f"The task ended {task.status}.",
                           code=error.get("code") or task.status, status=error.get("status") or 502)


async def images(task: Task, base_url: str, services) -> list[dict]:
    """The task's images as the request asked for them: signed links, or base64 read back."""
    as_b64 = task.request.get("delivery") == Delivery.B64.value
    items = []
    for image in task.output or []:
        if as_b64:
            data = await services.storage.get(image["id"])
            if data is None:  # the image outlived its retention: say so rather than answer ""
                raise NotFound(f"The images of task '{task.id}' are no longer stored.", code="image_expired")
            items.append({"b64_json": (await asyncio.to_thread(pybase64.b64encode, data)).decode()})  # MBs: off the loop
        else:
            items.append({"url": services.signer.url(base_url, file_name(image["id"], image["format"]))})
    return items


async def webhook_body(task: Task, polling_url: str, render) -> dict:
    """A task's webhook on an API that answers images: its status and, once it succeeded, `result`,
    the answer the synchronous call would have given (`render()`)."""
    done = task.status == "succeeded"
    return {**status(task, polling_url), "error": task.error, "result": await render() if done else None}


def status(task: Task, polling_url: str) -> dict:
    """A task still running (or just accepted), as the 202 answers show it."""
    return {"id": task.id, "object": "image.task", "status": task.status, "progress": task.progress,
            "created_at": int(aware(task.created_at).timestamp()), "polling_url": polling_url}
