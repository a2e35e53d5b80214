"""The predictions and tasks API of the first source document.

  POST /models/{vendor}/{model}/predictions   {"input": {...}, "webhook"?: url}
      synchronous models:  the finished prediction {id, model, status, output, created_at, ...}
      asynchronous ones:   at once {"output": [{"taskId", "polling_url"}], "id", "status"}
  GET  /tasks/{id}                            the task: status, progress, output, error
  POST /tasks/{id}/cancel

`Prefer: respond-async` runs any model as a task; `Prefer: wait[=seconds]` waits (at most 60 s)
for an asynchronous one. Errors: {"error": {"message", "type", "param", "code"}}, the field named
as `input.<name>` for input fields.
"""

from __future__ import annotations

import contextlib
import re
import time
from datetime import datetime
from typing import Any, Iterator

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from pixelgate.db.models import Task
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import ImageResult
from pixelgate.errors import GatewayError, InvalidRequest
from pixelgate.providers.base import EDIT, GENERATE
from pixelgate.services.tasks import aware
from pixelgate.surfaces._answers import OpenAIError, Prediction, Submitted
from pixelgate.services import idempotency
from pixelgate.surfaces import _tasks
from pixelgate.surfaces._body import JsonBody, parse
from pixelgate.surfaces._route import openai_error, surface_route, task_cost
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import CANCELING, GENERATING, Errors, body, json, ok, schema_of
from pixelgate.surfaces.deps import ContextDep, PrincipalDep, ServicesDep

TOP_LEVEL = {"model", "input", "webhook", "webhook_events_filter", "id"}
MAX_WAIT = 60.0

# The vendor segment of a model path names a namespace; where it names a provider, channels of
# that provider are preferred for the model.
VENDOR_PROVIDERS = {"openai": "openai", "bfl": "bfl", "black-forest-labs": "bfl", "ideogram": "ideogram",
                    "ideogram-ai": "ideogram", "doubao": "ark", "bytedance": "ark", "volcengine": "ark",
                    "qwen": "dashscope", "alibaba": "dashscope", "dashscope": "dashscope",
                    "qianfan": "qianfan", "baidu": "qianfan", "google": "google",
                    "midjourney": "midjourney", "sandbox": "sandbox", "stability": "stability",
                    "stability-ai": "stability", "stabilityai": "stability", "comfyui": "comfyui",
                    "automatic1111": "automatic1111", "a1111": "automatic1111", "azure": "azure-openai",
                    "azure-openai": "azure-openai", "vertex": "vertex", "vertex-ai": "vertex", "bedrock": "bedrock",
                    "aws": "bedrock", "amazon": "bedrock"}


@contextlib.contextmanager
def input_fields() -> Iterator[None]:
    """Errors raised while handling `input` name their field as `input.<name>`."""
    try:
        yield
    except GatewayError as exc:
        if exc.field and exc.field not in TOP_LEVEL and not exc.field.startswith("input"):
            exc.field = "input." + exc.field
        raise


router = APIRouter(route_class=surface_route("predictions", openai_error), tags=["Predictions"])
ERRORS = Errors(OpenAIError)


class CommonInput(BaseModel):
    """The input fields every model shares; anything else is a vendor field (request.extras)."""

    model_config = ConfigDict(extra="allow")

    prompt: StrictStr | None = None
    size: StrictStr | None = None
    image: StrictStr | list[StrictStr] | None = None
    mask: StrictStr | None = None
    n: StrictInt = 1
    quality: StrictStr | None = None
    seed: StrictInt | None = None
    style: StrictStr | None = None
    background: StrictStr | None = None
    output_format: StrictStr | None = None
    output_compression: StrictInt | None = None
    moderation: StrictStr | None = None
    input_fidelity: StrictStr | None = None
    response_format: StrictStr | None = None


PREDICTION = {"type": "object", "properties": {"input": schema_of(CommonInput),
                                              "webhook": {"type": "string", "format": "uri"}}, "required": ["input"]}
"""The body, as the document shows it."""

DELIVERY = {"url": Delivery.URL, "b64_json": Delivery.B64, "base64_json": Delivery.B64}


async def to_request(services, model: str, data: Any, provider: str | None) -> tuple[ImageRequest, dict]:
    """The body's `input` as an ImageRequest (input images fetched and checked); errors name
    the input's own fields (input_fields() adds the `input.`)."""
    if not isinstance(data, dict):
        raise InvalidRequest("The body must have an 'input' object.", field="input", code="missing_required_parameter")
    fields = parse(CommonInput, data)
    extras = dict(fields.model_extra or {})
    if extras.pop("stream", False):
        raise InvalidRequest("Streaming is not offered by the predictions API; use POST "
                             "/v1/images/generations with stream=true.", field="stream", code="unsupported_parameter")
    if fields.response_format is not None and fields.response_format not in DELIVERY:
        raise InvalidRequest(f"Invalid value: '{fields.response_format}'. Supported values are: 'url', "
                             "'b64_json' and 'base64_json'.", field="response_format")
    images = fields.image if isinstance(fields.image, list) else [fields.image] if fields.image else []
    fetcher = services.fetcher
    req = ImageRequest(
        operation=Operation.GENERATE, model=model, prompt=fields.prompt, n=fields.n, size=fields.size,
        quality=fields.quality, style=fields.style, background=fields.background,
        output_format=fields.output_format, output_compression=fields.output_compression,
        moderation=fields.moderation, input_fidelity=fields.input_fidelity, seed=fields.seed,
        delivery=DELIVERY.get(fields.response_format), extras=extras, provider=provider,
        images=[await fetcher.image(v, "image" if len(images) == 1 else f"image[{i}]") for i, v in enumerate(images)])
    if fields.mask:
        req.mask = await fetcher.image(fields.mask, "mask")
    # The predictions API names no operation: input images make it an edit where the model
    # edits, and a model that only edits is always asked to edit (so a missing image is named).
    operations = (await services.directory.route(model, provider)).capabilities.operations
    if EDIT in operations and (req.images or GENERATE not in operations):
        req.operation = Operation.EDIT
    return req, data


def prefer(request: Request) -> tuple[bool, float | None]:
    """(respond-async asked, seconds to wait) from the Prefer header."""
    header = request.headers.get("prefer", "").lower()
    wait = None
    if m := re.search(r"\bwait(?:=(\d+(?:\.\d+)?))?", header):
        wait = min(float(m.group(1)) if m.group(1) else MAX_WAIT, MAX_WAIT)
    return "respond-async" in header, wait


@router.post("/models/{vendor}/{model:path}/predictions", summary="Create a prediction",
             responses={**ok(Prediction, description="Finished: a synchronous model, or one waited for"),
                        **ok(Submitted, 201, "Accepted as a task: poll it, or wait for the webhook"),
                        **ERRORS(*GENERATING)},
             openapi_extra=body(json(PREDICTION)))
async def create_prediction(vendor: str, model: str, request: Request, _: PrincipalDep, data: JsonBody,
                            services: ServicesDep, ctx: ContextDep) -> Response:
    unknown = set(data) - TOP_LEVEL
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidRequest(f"Unrecognized request argument supplied: {field}", field=field, code="unknown_parameter")
    webhook = await check_webhook(services, data.get("webhook"))
    provider = VENDOR_PROVIDERS.get(vendor.lower())
    route = await services.directory.route(model, provider)
    run_async, wait = prefer(request)
    key = idempotency.key_from(request.headers)
    synchronous = not (route.capabilities.asynchronous or run_async or webhook)
    with input_fields():
        req, client_input = await to_request(services, model, data.get("input"), provider)
        if synchronous and key is None:
            result = await services.engine.generate(req, ctx)
            return JSONResponse(render_sync(result, f"{vendor}/{model}", ctx.started))
        task = await services.tasks.submit(req, ctx, f"{vendor}/{model}", client_input, webhook,
                                           run_in_background=not route.capabilities.asynchronous,
                                           idempotency_key=key)
    if synchronous:  # a synchronous model asked with an Idempotency-Key: answered when done
        task = await _tasks.settled(services, task, ctx)
        return JSONResponse(await render_task(task, str(request.base_url), services))
    if wait:
        task = await services.tasks.wait(task.id, ctx.principal.key_id, wait)
        if task.status in ("succeeded", "failed", "canceled"):
            return JSONResponse(await render_task(task, str(request.base_url), services))
    return JSONResponse(submitted(task, str(request.base_url)), status_code=201)


check_webhook = _tasks.webhook


@router.get("/tasks/{task_id}", summary="Get a task", responses={**ok(Prediction), **ERRORS(401, 404)})
async def get_task(task_id: str, request: Request, caller: PrincipalDep, services: ServicesDep) -> Response:
    task = await services.tasks.get(task_id, caller.key_id)
    return JSONResponse(await render_task(task, str(request.base_url), services))


@router.post("/tasks/{task_id}/cancel", summary="Cancel a task", responses={**ok(Prediction), **ERRORS(*CANCELING)})
async def cancel_task(task_id: str, request: Request, caller: PrincipalDep, services: ServicesDep) -> Response:
    task = await services.tasks.cancel(task_id, caller.key_id)
    return JSONResponse(await render_task(task, str(request.base_url), services))


def submitted(task: Task, base_url: str) -> dict:
    return {"id": task.id, "status": task.status,
            "output": [{"taskId": task.id, "polling_url": f"{base_url.rstrip('/')}/tasks/{task.id}"}]}


def render_sync(result: ImageResult, model_path: str, started: float) -> dict:
    output = [{"url": i.url} if i.url else {"b64_json": i.b64} for i in result.images]
    now = datetime.now().astimezone().isoformat()
    return {"id": result.request_id, "model": model_path, "status": "succeeded", "output": output,
            "error": None, "created_at": now, "completed_at": now,
            "metrics": {"predict_time": round(time.perf_counter() - started, 3), "image_count": len(output)}}


async def output_items(task: Task, base_url: str, services) -> list[dict] | None:
    return None if task.output is None else await _tasks.images(task, base_url, services)


async def render_task(task: Task, base_url: str, services) -> dict:
    return {"id": task.id, "model": task.model_path, "status": task.status, "progress": task.progress,
            "output": await output_items(task, base_url, services), "error": task.error,
            "created_at": _iso(task.created_at), "started_at": _iso(task.started_at),
            "completed_at": _iso(task.completed_at),
            "metrics": {"predict_time": _seconds(task), "image_count": len(task.output or []), **task_cost(task)}}


def _iso(value: datetime | None) -> str | None:
    return aware(value).isoformat() if value is not None else None


def _seconds(task: Task) -> float | None:
    if task.started_at and task.completed_at:
        return round((aware(task.completed_at) - aware(task.started_at)).total_seconds(), 3)
    return None
