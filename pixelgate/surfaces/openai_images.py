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
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.datastructures import UploadFile

from pixelgate import wirejson
from pixelgate.domain.images import load_image
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import ImageResult
from pixelgate.errors import GatewayError, InvalidRequest, ModelNotFound, PayloadTooLarge
from pixelgate.services import lifecycle
from pixelgate.services.engine import StreamCompleted
from pixelgate.services.tasks import LIVE, aware
from pixelgate.services.usage import usage
from pixelgate.surfaces._answers import ImageTask, ImagesResponse, ModelInfo, ModelList, OpenAIError, UsageReport
from pixelgate.surfaces import _tasks
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import GENERATING, Errors, ok
from pixelgate.surfaces._route import authenticate, context, format_amount, surface_route


def render_error(exc: GatewayError) -> Response:
    return JSONResponse({"error": {"message": exc.message, "type": exc.type, "param": exc.field,
                                   "code": exc.code}}, status_code=exc.status)


NATIVE_ONLY_META = {"withheld", "descriptions", "usage_metadata", "token_usage"}
"""Vendor facts that only the vendor's own surface shows, in its own shape."""

ERRORS = Errors(OpenAIError)
IMAGES = {**ok(ImagesResponse, also={"text/event-stream": {"type": "string", "description": "with stream: true"}}),
          **ok(ImageTask, 202, "With Prefer: respond-async: the task, running"), **ERRORS(*GENERATING)}
router = APIRouter(route_class=surface_route("openai", render_error), tags=["OpenAI Images"])
models_router = APIRouter(route_class=surface_route("openai", render_error, logged=False), tags=["OpenAI Images"])

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


def _fields(model: type[ImageFields], data: dict) -> ImageFields:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidRequest(f"Invalid type for '{field}': {err['msg'].lower()}.", field=field,
                             code="invalid_type") from None


MAX_JSON_DEPTH = 32
"""No request of any surface nests deeper; a 1,000-deep prompt would only reach code that
recurses (repr, validation, orjson's encoder limit of 255) and fail there as a 500."""


def check_depth(data: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """InvalidRequest if `data` nests containers deeper than `limit`, or holds a NUL character
    (PostgreSQL stores no text with one: the insert would fail after the work was done); the
    field is the path of object keys to the offence (image_request.prompt)."""
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > limit:
            raise InvalidRequest(f"The request nests deeper than {limit} levels" + (f" in '{path}'." if path else "."),
                                 field=path or None, code="invalid_json")
        if isinstance(value, dict):
            for k, v in value.items():
                stack.append((k, depth, path))
                stack.append((v, depth + 1, f"{path}.{k}" if path else str(k)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1, path) for v in value)
        elif isinstance(value, str) and "\x00" in value:
            raise InvalidRequest("Text may not contain NUL (\\u0000) characters" + (f": '{path}'." if path else "."),
                                 field=path or None, code="invalid_value")


async def _json_body(request: Request) -> dict:
    body = await request.body()
    if len(body) > request.app.state.services.settings.max_body_bytes:
        raise PayloadTooLarge("The request body is too large.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("We could not parse the JSON body of your request. The OpenAI API "
                             "expects a JSON payload.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    check_depth(data)
    return data


async def _form_body(request: Request) -> tuple[dict, list[tuple[str, UploadFile]]]:
    if int(request.headers.get("content-length") or 0) > request.app.state.services.settings.max_body_bytes:
        raise PayloadTooLarge("The request body is too large.")
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise InvalidRequest("This endpoint takes multipart/form-data with the image as a file.",
                             field="image", code="invalid_content_type")
    try:
        form = await request.form(max_files=40, max_fields=100)
    except GatewayError:  # the body limit, raised while the body streams in (surfaces/_limits.py)
        raise
    except Exception as exc:  # python-multipart reports malformed bodies with assorted types
        raise InvalidRequest(f"Malformed multipart body: {exc}.", code="invalid_multipart") from None
    fields: dict[str, Any] = {}
    files: list[tuple[str, UploadFile]] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append((name, value))
        elif name in fields:
            raise InvalidRequest(f"Parameter '{name}' was given more than once.", field=name)
        else:
            fields[name] = value
    return fields, files


async def _authenticate(request: Request):
    ctx = context(request)
    ctx.principal = await authenticate(request)
    return ctx


@router.post("/v1/images/generations", summary="Create images", responses=IMAGES)
@router.post("/images/generations", include_in_schema=False)
async def generations(request: Request) -> Response:
    ctx = await _authenticate(request)
    data = await _json_body(request)
    webhook = data.pop("webhook", None)
    req = to_request(_fields(ImageFields, data), Operation.GENERATE)
    return await _answer(request, req, ctx, {**data, "webhook": webhook})


@router.post("/v1/images/edits", summary="Edit images (multipart, or JSON with image URLs)", responses=IMAGES)
async def edits(request: Request) -> Response:
    if request.headers.get("content-type", "").startswith("application/json"):
        return await _json_edit(request)
    return await _multipart(request, Operation.EDIT)


async def _json_edit(request: Request) -> Response:
    """The JSON form of edits: images as {"image_url": URL or data URL} references."""
    ctx = await _authenticate(request)
    data = await _json_body(request)
    refs, mask_ref, webhook = data.pop("images", None), data.pop("mask", None), data.pop("webhook", None)
    req = to_request(_fields(ImageFields, data), Operation.EDIT)
    if not isinstance(refs, list) or not refs:
        raise InvalidRequest("'images' must be a non-empty list of {\"image_url\": ...}.", field="images")
    fetcher = request.app.state.services.fetcher
    for i, ref in enumerate(refs):
        req.images.append(await fetcher.image(_image_url(ref, f"images[{i}]"), f"images[{i}].image_url"))
    if mask_ref is not None:
        req.mask = await fetcher.image(_image_url(mask_ref, "mask"), "mask.image_url")
    return await _answer(request, req, ctx, {**data, "webhook": webhook})


def _image_url(ref: Any, field: str) -> str:
    if isinstance(ref, dict) and "file_id" in ref:
        raise InvalidRequest("File IDs are not supported here; send image_url (a URL or data URL).",
                             field=f"{field}.file_id", code="unsupported_parameter")
    if not isinstance(ref, dict) or not isinstance(ref.get("image_url"), str):
        raise InvalidRequest(f"'{field}' must be an object with an 'image_url' string.", field=field)
    return ref["image_url"]


@router.post("/v1/images/variations", summary="Create variations of an image", responses=IMAGES)
async def variations(request: Request) -> Response:
    return await _multipart(request, Operation.VARIATION)


async def _multipart(request: Request, operation: Operation) -> Response:
    ctx = await _authenticate(request)
    data, files = await _form_body(request)
    webhook = data.pop("webhook", None)
    fields = _fields(FormFields, data)
    req = to_request(fields, operation)
    for name, upload in files:
        content = await upload.read()
        if name in ("image", "image[]"):
            req.images.append(await load_image(content, "image", upload.filename))
        elif name == "mask" and req.mask is None:
            req.mask = await load_image(content, "mask", upload.filename)
        else:
            raise InvalidRequest(f"Unexpected file field '{name}'.", field=name, code="unknown_parameter")
    return await _answer(request, req, ctx, {**data, "webhook": webhook})


async def _answer(request: Request, req: ImageRequest, ctx, fields: dict) -> Response:
    """The images, or (see surfaces._tasks) a task: 202 at once with `Prefer: respond-async`,
    else waited for and answered as the synchronous call would have been."""
    engine = request.app.state.services.engine
    webhook = await _tasks.webhook(request, fields.pop("webhook", None))
    if await _tasks.needs_task(request, req, webhook):
        task = await _tasks.submit(request, req, ctx, fields, webhook)
        if _tasks.prefers_async(request):
            return JSONResponse(_tasks.status(task, _polling_url(request, task.id)), status_code=202)
        task = await _tasks.settled(request, task, ctx)
        return JSONResponse(await render_task(task, str(request.base_url), request.app.state.services))
    if req.stream:
        events = await engine.stream(req, ctx)
        request.state.log_deferred = True
        return StreamingResponse(_sse(request, events, req, ctx), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})
    ctx.answer_carries_bytes = True
    return JSONResponse(render_result(await engine.generate(req, ctx)))


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
    done = task.status == "succeeded"
    return {**_tasks.status(task, f"{base_url.rstrip('/')}/v1/images/tasks/{task.id}"), "error": task.error,
            "result": await render_task(task, base_url, services) if done else None}


@router.get("/v1/images/tasks/{task_id}", summary="An image task (Prefer: respond-async)",
            responses={**ok(ImagesResponse), **ok(ImageTask, 202, "Still running"), **ERRORS(*GENERATING)})
async def image_task(task_id: str, request: Request) -> Response:
    """202 with the status while the task runs; then exactly the synchronous answer, or its error."""
    ctx = await _authenticate(request)
    services = request.app.state.services
    task = await services.tasks.get(task_id, ctx.principal.key_id)
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


async def _sse(request: Request, events: AsyncIterator, req: ImageRequest, ctx) -> AsyncIterator[bytes]:
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
        request.app.state.services.log_request(ctx, status, error)
    if ctx.cost is not None:  # the headers left before the images: an SSE comment, which clients skip
        currency = request.app.state.services.engine.billing.currency
        yield f": pixelgate-cost {format_amount(ctx.cost)} {currency}\n\n".encode()


@models_router.get("/v1/usage", summary="The key's own usage", responses={**ok(UsageReport), **ERRORS(400, 401)})
async def own_usage(request: Request, group_by: str = "model", days: int = 30) -> Response:
    """The calling key's spend and images."""
    ctx = await _authenticate(request)
    services = request.app.state.services
    await services.records.flush()
    report = await usage(services.sessions, group_by, ctx.principal.key_id, days)
    return JSONResponse({"currency": services.engine.billing.currency, **report})


@models_router.get("/v1/models", summary="List models", responses={**ok(ModelList), **ERRORS(401)})
async def list_models(request: Request) -> Response:
    ctx = await _authenticate(request)
    data = [m for m in await _models(request) if ctx.principal.may_use(m["id"])]
    return JSONResponse({"object": "list", "data": data})


async def _models(request: Request) -> list[dict]:
    services = request.app.state.services
    return lifecycle.model_list(await services.directory.models(), services.settings.retired_models)


@models_router.get("/v1/models/{model_id:path}", summary="Get a model",
                   responses={**ok(ModelInfo), **ERRORS(401, 404)})
async def get_model(model_id: str, request: Request) -> Response:
    ctx = await _authenticate(request)
    for model in await _models(request):
        if model["id"] == model_id and ctx.principal.may_use(model_id):
            return JSONResponse(model)
    raise ModelNotFound(f"The model '{model_id}' does not exist.", field="model")
