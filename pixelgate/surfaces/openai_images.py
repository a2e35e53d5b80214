"""The OpenAI Images API, wire-compatible with the official SDKs pointed here by base_url.

  POST /v1/images/generations   JSON            (also POST /images/generations, no /v1)
  POST /v1/images/edits         multipart: image | image[] (several), mask
  POST /v1/images/variations    multipart: image
  GET  /v1/models, /v1/models/{id}
  GET  /v1/images/tasks/{id}    202 {"id", "object": "image.task", "status", ...} while it runs, then
                                the answer the synchronous call would have given (or its error)
With `Prefer: respond-async` the three POSTs answer 202 with the task at once; an
`Idempotency-Key` makes a repeat answer the first request's images; `webhook` in the body gets the
task when it ends (surfaces._tasks).
Answers {"created", "data": [{"url" | "b64_json", "revised_prompt"?}], ...}; with stream=true,
server-sent events as OpenAI sends them. Errors: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from pixelgate import wirejson
from pixelgate.domain.images import load_image
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import ImageResult
from pixelgate.errors import GatewayError, InvalidRequest, ModelNotFound
from pixelgate.services import lifecycle
from pixelgate.services.engine import StreamCompleted
from pixelgate.services.tasks import LIVE, aware
from pixelgate.services.usage import usage
from pixelgate.surfaces._answers import ImageTask, ImagesResponse, ModelInfo, ModelList, OpenAIError, UsageReport
from pixelgate.surfaces import _tasks
from pixelgate.surfaces._body import JsonBody, form_body, json_body, media_type, parse
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import BINARY, GENERATING, Errors, body, form, json, ok, schema_of
from pixelgate.surfaces._route import format_amount, openai_error, surface_route
from pixelgate.surfaces.deps import ContextDep, DirectoryDep, PrincipalDep, ServicesDep, SettingsDep

NATIVE_ONLY_META = {"withheld", "descriptions", "usage_metadata", "token_usage"}
"""Vendor facts that only the vendor's own surface shows, in its own shape."""

ERRORS = Errors(OpenAIError)
IMAGES = {**ok(ImagesResponse, also={"text/event-stream": {"type": "string", "description": "with stream: true"}}),
          **ok(ImageTask, 202, "With Prefer: respond-async: the task, running"), **ERRORS(*GENERATING)}
router = APIRouter(route_class=surface_route("openai", openai_error), tags=["OpenAI Images"])
models_router = APIRouter(route_class=surface_route("openai", openai_error, logged=False), tags=["OpenAI Images"])

DEFAULT_MODEL = {Operation.GENERATE: "dall-e-2", Operation.EDIT: "gpt-image-1.5",
                 Operation.VARIATION: "dall-e-2"}
"""What OpenAI itself picks when the client names no model."""


class ImageFields(BaseModel):
    """The fields of the three endpoints. Anything else is a vendor option (request.extras),
    checked against the model later; strings from multipart forms are coerced."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | None = None
    n: int = Field(default=1)
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    response_format: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    input_fidelity: str | None = None
    stream: StrictBool | None = None
    partial_images: int | None = None
    user: str | None = None
    seed: int | None = None


class FormFields(ImageFields):
    stream: bool | None = None  # "true"/"false" arrive as text in multipart


RESPONSE_FORMATS = {None: None, "url": Delivery.URL, "b64_json": Delivery.B64,
                    "base64_json": Delivery.B64}  # the last as the first source document spells it


def to_request(fields: ImageFields, operation: Operation) -> ImageRequest:
    if fields.response_format not in RESPONSE_FORMATS:
        raise InvalidRequest(f"Invalid value: '{fields.response_format}'. Supported values are: "
                             "'url' and 'b64_json'.", field="response_format")
    return ImageRequest(
        operation=operation, model=fields.model or DEFAULT_MODEL[operation], prompt=fields.prompt,
        n=fields.n, size=fields.size, quality=fields.quality, style=fields.style,
        background=fields.background, output_format=fields.output_format,
        output_compression=fields.output_compression, moderation=fields.moderation,
        input_fidelity=fields.input_fidelity, seed=fields.seed, user=fields.user,
        delivery=RESPONSE_FORMATS[fields.response_format], stream=bool(fields.stream),
        partial_images=fields.partial_images, extras=dict(fields.model_extra or {}))


_IMAGE_REF = {"type": "object", "properties": {"image_url": {"type": "string"}}, "required": ["image_url"]}
_JSON_EDIT = {"type": "object", "properties": {**schema_of(ImageFields)["properties"], "mask": _IMAGE_REF,
                                               "images": {"type": "array", "items": _IMAGE_REF}},
              "required": ["images", "prompt"]}


@router.post("/v1/images/generations", summary="Create images", responses=IMAGES,
             openapi_extra=body(json(ImageFields)))
@router.post("/images/generations", include_in_schema=False)
async def generations(request: Request, _: PrincipalDep, data: JsonBody, services: ServicesDep,
                      ctx: ContextDep) -> Response:
    webhook = data.pop("webhook", None)
    req = to_request(parse(ImageFields, data), Operation.GENERATE)
    return await _answer(request, services, req, ctx, {**data, "webhook": webhook})


@router.post("/v1/images/edits", summary="Edit images (multipart, or JSON with image URLs)", responses=IMAGES,
             openapi_extra=body(form(FormFields, ("image", "prompt"), image=BINARY, mask=BINARY,
                                     **{"image[]": {"type": "array", "items": BINARY}}), json(_JSON_EDIT)))
async def edits(request: Request, _: PrincipalDep, services: ServicesDep, ctx: ContextDep) -> Response:
    if media_type(request) == "application/json":
        return await _json_edit(request, services, ctx)
    return await _multipart(request, services, ctx, Operation.EDIT)


async def _json_edit(request: Request, services, ctx) -> Response:
    """The JSON form of edits: images as {"image_url": URL or data URL} references."""
    data = await json_body(request)
    refs, mask_ref, webhook = data.pop("images", None), data.pop("mask", None), data.pop("webhook", None)
    req = to_request(parse(ImageFields, data), Operation.EDIT)
    if not isinstance(refs, list) or not refs:
        raise InvalidRequest("'images' must be a non-empty list of {\"image_url\": ...}.", field="images")
    for i, ref in enumerate(refs):
        req.images.append(await services.fetcher.image(_image_url(ref, f"images[{i}]"), f"images[{i}].image_url"))
    if mask_ref is not None:
        req.mask = await services.fetcher.image(_image_url(mask_ref, "mask"), "mask.image_url")
    return await _answer(request, services, req, ctx, {**data, "webhook": webhook})


def _image_url(ref: Any, field: str) -> str:
    if isinstance(ref, dict) and "file_id" in ref:
        raise InvalidRequest("File IDs are not supported here; send image_url (a URL or data URL).",
                             field=f"{field}.file_id", code="unsupported_parameter")
    if not isinstance(ref, dict) or not isinstance(ref.get("image_url"), str):
        raise InvalidRequest(f"'{field}' must be an object with an 'image_url' string.", field=field)
    return ref["image_url"]


@router.post("/v1/images/variations", summary="Create variations of an image", responses=IMAGES,
             openapi_extra=body(form(FormFields, ("image",), image=BINARY)))
async def variations(request: Request, _: PrincipalDep, services: ServicesDep, ctx: ContextDep) -> Response:
    return await _multipart(request, services, ctx, Operation.VARIATION)


async def _multipart(request: Request, services, ctx, operation: Operation) -> Response:
    posted = await form_body(request, "image")
    data = posted.fields
    webhook = data.pop("webhook", None)
    req = to_request(parse(FormFields, data), operation)
    for name, upload in posted.files:
        content = await upload.read()
        if name in ("image", "image[]"):
            req.images.append(await load_image(content, "image", upload.filename))
        elif name == "mask" and req.mask is None:
            req.mask = await load_image(content, "mask", upload.filename)
        else:
            raise InvalidRequest(f"Unexpected file field '{name}'.", field=name, code="unknown_parameter")
    return await _answer(request, services, req, ctx, {**data, "webhook": webhook})


async def _answer(request: Request, services, req: ImageRequest, ctx, fields: dict) -> Response:
    """The images, or (see surfaces._tasks) a task: 202 at once with `Prefer: respond-async`,
    else waited for and answered as the synchronous call would have been."""
    webhook = await _tasks.webhook(services, fields.pop("webhook", None))
    if await _tasks.needs_task(request, services, req, webhook):
        task = await _tasks.submit(request, services, req, ctx, fields, webhook)
        if _tasks.prefers_async(request):
            return JSONResponse(_tasks.status(task, _polling_url(request, task.id)), status_code=202)
        task = await _tasks.settled(services, task, ctx)
        return JSONResponse(await render_task(task, str(request.base_url), services))
    if req.stream:
        events = await services.engine.stream(req, ctx)
        request.state.log_deferred = True
        return StreamingResponse(_sse(services, events, req, ctx), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})
    ctx.answer_carries_bytes = True
    return JSONResponse(render_result(await services.engine.generate(req, ctx)))


def _polling_url(request: Request, task_id: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/v1/images/tasks/{task_id}"


async def render_task(task, base_url: str, services) -> dict:
    """A finished task's images as the synchronous call would have answered them."""
    data = await _tasks.images(task, base_url, services)
    for item, image in zip(data, task.output or []):
        if image.get("revised_prompt"):
            item["revised_prompt"] = image["revised_prompt"]
    answer = (task.meta or {}).get("answer") or {}
    return {"created": int(aware(task.completed_at or task.created_at).timestamp()), "data": data,
            **{k: v for k, v in answer.items() if k not in NATIVE_ONLY_META}}


async def render_webhook(task, base_url: str, services) -> dict:
    """A task's webhook: its status and, once it succeeded, the answer itself."""
    return await _tasks.webhook_body(task, f"{base_url.rstrip('/')}/v1/images/tasks/{task.id}",
                                     lambda: render_task(task, base_url, services))


@router.get("/v1/images/tasks/{task_id}", summary="An image task (Prefer: respond-async)",
            responses={**ok(ImagesResponse), **ok(ImageTask, 202, "Still running"), **ERRORS(*GENERATING)})
async def image_task(task_id: str, request: Request, caller: PrincipalDep, services: ServicesDep) -> Response:
    """202 with the status while the task runs; then exactly the synchronous answer, or its error."""
    task = await services.tasks.get(task_id, caller.key_id)
    if task.status in LIVE:
        return JSONResponse(_tasks.status(task, _polling_url(request, task.id)), status_code=202)
    _tasks.raise_failure(task)
    return JSONResponse(await render_task(task, str(request.base_url), services))


def render_result(result: ImageResult) -> dict:
    data = []
    for image in result.images:
        item: dict[str, Any] = {"url": image.url} if image.url is not None else {"b64_json": image.b64}
        if image.revised_prompt:
            item["revised_prompt"] = image.revised_prompt
        data.append(item)
    return {"created": result.created, "data": data,
            **{k: v for k, v in result.meta.items() if k not in NATIVE_ONLY_META}}


async def _sse(services, events: AsyncIterator, req: ImageRequest, ctx) -> AsyncIterator[bytes]:
    family = "image_edit" if req.operation is Operation.EDIT else "image_generation"
    status, error = 200, None
    try:
        async for event in events:
            if isinstance(event, StreamCompleted):
                payload = {"type": f"{family}.completed", "b64_json": event.image.b64, **event.meta}
                if event.image.url:
                    payload["url"] = event.image.url
            else:
                payload = {"type": f"{family}.partial_image", "b64_json": event.b64,
                           "partial_image_index": event.index, **event.meta}
            yield b"event: " + payload["type"].encode() + b"\ndata: " + wirejson.dumps(payload) + b"\n\n"
    except GatewayError as exc:
        status, error = exc.status, exc
        body = {"type": "error", "error": {"message": exc.message, "type": exc.type,
                                           "param": exc.field, "code": exc.code}}
        yield b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
    finally:
        await ctx.finish()
        services.log_request(ctx, status, error)
    if ctx.cost is not None:  # the headers left before the images: an SSE comment, which clients skip
        yield f": pixelgate-cost {format_amount(ctx.cost)} {services.engine.billing.currency}\n\n".encode()


@models_router.get("/v1/usage", summary="The key's own usage", responses={**ok(UsageReport), **ERRORS(400, 401)})
async def own_usage(caller: PrincipalDep, services: ServicesDep, group_by: str = "model", days: int = 30) -> Response:
    """The calling key's spend and images."""
    await services.records.flush()
    report = await usage(services.sessions, group_by, caller.key_id, days)
    return JSONResponse({"currency": services.engine.billing.currency, **report})


@models_router.get("/v1/models", summary="List models", responses={**ok(ModelList), **ERRORS(401)})
async def list_models(caller: PrincipalDep, directory: DirectoryDep, settings: SettingsDep) -> Response:
    data = [m for m in await _models(directory, settings) if caller.may_use(m["id"])]
    return JSONResponse({"object": "list", "data": data})


async def _models(directory, settings) -> list[dict]:
    return lifecycle.model_list(await directory.models(), settings.retired_models)


@models_router.get("/v1/models/{model_id:path}", summary="Get a model",
                   responses={**ok(ModelInfo), **ERRORS(401, 404)})
async def get_model(model_id: str, caller: PrincipalDep, directory: DirectoryDep, settings: SettingsDep) -> Response:
    for model in await _models(directory, settings):
        if model["id"] == model_id and caller.may_use(model_id):
            return JSONResponse(model)
    raise ModelNotFound(f"The model '{model_id}' does not exist.", field="model")
