"""Ideogram's own API, as the second source document (001) describes it, served by Ideogram
channels. Key: `Api-Key: <key>` (or `Authorization: Bearer <key>`).

  Ideogram 4.0 (multipart, also JSON or url-encoded), model V4 (or ideogram-v4, V_4_0):
    POST /ideogram/v1/ideogram-v4/generate             text_prompt | json_prompt (| the legacy
         prompt): exactly one; resolution (one of 21 2K sizes), rendering_speed (TURBO, DEFAULT,
         QUALITY; FLASH is 400, as Ideogram answers it), seed. One image; the answer adds
         response_type "url".
  Ideogram 3.0 (multipart; generate also JSON or url-encoded), model V3 (or ideogram-v3, V_3):
    POST /ideogram/v1/ideogram-v3/generate             prompt, rendering_speed, num_images,
         aspect_ratio | resolution, magic_prompt, style_type, negative_prompt, seed,
         style_reference_images (repeatable file), style_preset, color_palette
    POST /ideogram/v1/ideogram-v3/remix                + image (file), image_weight
    POST /ideogram/v1/ideogram-v3/edit                 image, mask (black = edit), prompt, ...
    POST /ideogram/v1/ideogram-v3/reframe              image (square), resolution
    POST /ideogram/v1/ideogram-v3/replace-background   image, prompt, ...
  Legacy, model from the `model` field (V_1 ... V_2A_TURBO, default V_2):
    POST /ideogram/generate    JSON {"image_request": {...}}
    POST /ideogram/remix       multipart: image_request (a JSON string) + image_file
    POST /ideogram/edit        multipart: image_file, mask, prompt, model (V_2 | V_2_TURBO), ...
    POST /ideogram/upscale     multipart: image_request (JSON string: prompt, resemblance, detail,
                               magic_prompt_option, num_images, seed) + image_file
    POST /ideogram/describe    multipart: image_file (+ describe_model_version)
  -> {"created": "<ISO time>", "data": [{prompt, resolution, is_image_safe, seed, url,
      style_type}]} with the gateway's own URLs (upscale adds upscaled_resolution);
     describe: {"descriptions": [{"text"}]}.
  Errors {"error": "<message>"}: 400 (the message names the field), 401, 403, 404, 413,
  422 (a safety refusal), 429, 502, 504.

Like the OpenAI API, asynchronous and idempotent (surfaces/_tasks.py): with `Prefer:
respond-async` every POST answers 202 with the task at once {"id", "object": "image.task",
"status", "polling_url"}, and GET /ideogram/tasks/{id} answers 202 while it runs, then exactly
what the synchronous call would have answered (or its error); an `Idempotency-Key` makes a
repeat answer the first request's images, charged once. A `webhook` field (the gateway's own,
beside the others) runs the request as a task and is told when it ends: {status, error, result},
`result` being that same answer.

Every rule of the document is checked before anything is spent, by the models of `forms`; the
engine's own checks name the internal fields, which `_native_names` renames back. Field mapping:

  prompt, text_prompt -> prompt    num_images -> n             seed -> seed
  aspect_ratio (16x9, ASPECT_16_9) -> size     resolution (1280x720, RESOLUTION_1280_720) -> size
  image, image_file -> images[0]   mask -> mask (convention "black", sent as PNG)
  style_reference_images -> style_images
  rendering_speed, magic_prompt, magic_prompt_option, magic_prompt_version, style_type,
  negative_prompt, image_weight, resemblance, detail, style_preset, color_palette,
  describe_model_version, json_prompt -> extras (checked again against the ideogram provider's
  Options)
  model (legacy) -> model; 3.0 routes -> V3; the 4.0 route -> V4; upscale and describe (no model field upstream) ->
  the first Ideogram model a channel serves (SERVICE_MODELS).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from typing import Any, Iterator

from fastapi import APIRouter, Request, Response

from pixelgate.db.models import Task
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.errors import (GatewayError, InvalidRequest, ModelNotFound, NoChannelAvailable, NotFound,
                              UpstreamContentFiltered)
from pixelgate.providers.ideogram import V3_IDS, V4_IDS
from pixelgate.services.tasks import LIVE, aware
from pixelgate.surfaces import _tasks
from pixelgate.surfaces._answers import IdeogramDescribed, IdeogramError, IdeogramImages, ImageTask
from pixelgate.surfaces._body import json_body, media_type, parse, form_body
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import BINARY, GENERATING, Errors, body, form, json, ok, schema_of
from pixelgate.surfaces._route import surface_route
from pixelgate.surfaces.deps import ContextDep, PrincipalDep, ServicesDep
from pixelgate.surfaces.ideogram import forms
from pixelgate.surfaces.ideogram.images import checked, checked_mask, checked_style_images

PROVIDER = "ideogram"


def render_error(exc: GatewayError) -> Response:
    """{"error": "<message>"}, Ideogram's one error shape; the message always names the field,
    since the shape has no place of its own for it."""
    # Ideogram answers a safety refusal with 422 {"error": ...}; the gateway's class says 400.
    status = 422 if isinstance(exc, UpstreamContentFiltered) else exc.status
    message = exc.message
    if exc.field and f"'{exc.field}'" not in message:
        message = f"'{exc.field}': {message}"
    return JSONResponse({"error": message}, status_code=status)


router = APIRouter(route_class=surface_route("ideogram", render_error), tags=["Ideogram"])
ERRORS = Errors(IdeogramError, notes={422: "The vendor's safety system refused the prompt or image"})
TASK = ok(ImageTask, 202, "With Prefer: respond-async: the task, running")
IMAGES = {**ok(IdeogramImages, description="The images, with the gateway's own URLs"), **TASK,
          **ERRORS(422, *GENERATING)}

EXTRAS = ("rendering_speed", "magic_prompt", "magic_prompt_option", "magic_prompt_version", "style_type",
          "negative_prompt", "image_weight", "resemblance", "detail", "style_preset", "color_palette",
          "describe_model_version", "json_prompt")
V3_MODELS = ("V3", *sorted(V3_IDS - {"V3"}))
V4_MODELS = ("V4", *sorted(V4_IDS - {"V4"}))
"""The 3.0 (4.0) routes' model: V3 (V4), or another name of it where a channel lists only that."""
SERVICE_MODELS = ("V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO", "V_1", "V_1_TURBO", *V3_MODELS)
"""Upscale and describe name no model: the first of these an Ideogram channel serves does it."""


# -- reading the body --

async def _fields(request: Request, model: type[forms.Form], json_ok: bool = False,
                  wrapped: bool = False) -> dict[str, Any]:
    """The body checked as `model`: the fields given (files as UploadFiles). `json_ok`: a JSON
    body is taken too; `wrapped`: the text fields come inside `image_request`."""
    if json_ok and media_type(request) == "application/json":
        data, files = await json_body(request), {}
    else:
        posted = await form_body(request)
        data, files = posted.fields, posted.grouped()
    if wrapped:  # the gateway's `webhook` may sit beside image_request or inside it
        envelope = parse(forms.Envelope, data)
        data = envelope.image_request | ({"webhook": envelope.webhook} if envelope.webhook else {})
    for name in set(data) & set(files):
        raise InvalidRequest(f"Parameter '{name}' was given as text and as a file.", field=name)
    return parse(model, {**data, **files}).given()


# -- into the one internal request --

def _request(op: Operation, model: str, p: dict[str, Any]) -> ImageRequest:
    size = p.get("resolution") or p.get("aspect_ratio")
    prompt = p.get("prompt", p.get("text_prompt"))  # 4.0's text_prompt; its legacy name is prompt
    return ImageRequest(operation=op, model=model, prompt=prompt, n=p.get("num_images", 1), seed=p.get("seed"),
                        size=forms.RATIO_ALIASES.get(size, size), mask_convention="black",
                        delivery=Delivery.URL, provider=PROVIDER, extras={k: p[k] for k in EXTRAS if k in p})


async def _attach(req: ImageRequest, p: dict[str, Any], image_field: str) -> None:
    if image_field in p:
        req.images.append(await checked(p[image_field], image_field))
    if "mask" in p:
        req.mask = await checked_mask(p["mask"], req.images[0])
    if "style_reference_images" in p:
        req.style_images = await checked_style_images(p["style_reference_images"])


async def _served_model(services, ctx, candidates: tuple[str, ...], op: Operation) -> str:
    """The first candidate an Ideogram channel serves with `op`, preferring ones the key may use."""
    served = []
    for model in candidates:
        try:
            route = await services.directory.route(model, PROVIDER)
        except (NotFound, NoChannelAvailable):
            continue
        if op in route.capabilities.operations and any(c.provider == PROVIDER for c in route.channels):
            if ctx.principal.may_use(model):
                return model
            served.append(model)
    if served:
        return served[0]  # the engine answers 403 for it
    ctx.model = ctx.model or candidates[0]  # the request log (and usage by model) names what was asked
    raise ModelNotFound(f"No Ideogram channel is configured for {op.value}.", field="model")


@contextlib.contextmanager
def _native_names(names: dict[str, str]) -> Iterator[None]:
    """The engine's checks name the internal fields (n, size, image); say them as the client did."""
    try:
        yield
    except GatewayError as exc:
        if exc.field in names:
            exc.message = exc.message.replace(f"'{exc.field}'", f"'{names[exc.field]}'")
            exc.field = names[exc.field]
        raise


async def _run(request: Request, services, ctx, req: ImageRequest, p: dict[str, Any], image_field: str,
               **shape: Any) -> Response:
    """The answer, or (surfaces._tasks) a task: 202 at once with `Prefer: respond-async`, else
    waited for. `shape`: fields the answer adds to Ideogram's (4.0's response_type)."""
    names = {"n": "num_images", "size": "resolution" if "resolution" in p else "aspect_ratio",
             "image": image_field, "prompt": "prompt" if "prompt" in p else "text_prompt"}
    webhook = await _tasks.webhook(services, p.pop("webhook", None))
    with _native_names(names):
        if await _tasks.needs_task(request, services, req, webhook):
            given = {k: v for k, v in p.items() if k not in (image_field, "mask", "style_reference_images")}
            task = await _tasks.submit(request, services, req, ctx, given, webhook, meta={"shape": shape})
            if _tasks.prefers_async(request):
                return JSONResponse(_tasks.status(task, _polling_url(str(request.base_url), task.id)), status_code=202)
            task = await _tasks.settled(services, task, ctx)
            return JSONResponse(await render_task(task, str(request.base_url), services))
        result = await services.engine.generate(req, ctx)
    if req.operation is Operation.DESCRIBE:
        return JSONResponse(_described(result.meta))
    source = req.images[0] if req.operation is Operation.UPSCALE else None
    images = [(i.url, i.width, i.height, i.revised_prompt, i.details) for i in result.images]
    return JSONResponse({**render(images, result.meta, req.prompt, req.seed,
                                  (source.width, source.height) if source else None, result.created), **shape})


def _polling_url(base_url: str, task_id: str) -> str:
    return f"{base_url.rstrip('/')}/ideogram/tasks/{task_id}"


def _described(meta: dict) -> dict:
    return {"descriptions": [{"text": t} for t in meta.get("descriptions", [])]}


def render(images: list[tuple], meta: dict, prompt: str | None, seed: int | None, source: tuple | None,
           created: float) -> dict:
    """Ideogram's answer: `images` as (url, width, height, revised prompt, details), `meta` the
    vendor's facts (its withheld images), `source` the upscaled image's size."""
    data = []
    for url, width, height, revised, details in images:
        item: dict[str, Any] = {"prompt": revised or prompt or "", "resolution": f"{width}x{height}",
                                "is_image_safe": True, "seed": details.get("seed", seed), "url": url}
        if "style_type" in details:
            item["style_type"] = details["style_type"]
        if source:  # resolution is the input's, as Ideogram reports it
            item["upscaled_resolution"], item["resolution"] = item["resolution"], f"{source[0]}x{source[1]}"
        data.append(item)
    for unsafe in meta.get("withheld", []):  # as Ideogram lists them: no url, no error
        data.append({"prompt": unsafe.get("prompt", prompt or ""), "resolution": unsafe.get("resolution"),
                     "is_image_safe": False, "seed": unsafe.get("seed", seed), "url": None,
                     **({"style_type": unsafe["style_type"]} if "style_type" in unsafe else {})})
    return {"created": datetime.fromtimestamp(created, timezone.utc).isoformat(), "data": data}


async def render_task(task: Task, base_url: str, services) -> dict:
    """A finished task as the synchronous call would have answered it, from the task's images
    and the facts it kept (Task.meta["answer"], and each image's size and details)."""
    meta, snapshot = task.meta or {}, task.request
    answer = meta.get("answer") or {}
    if snapshot["operation"] == Operation.DESCRIBE.value:
        return _described(answer)
    urls = await _tasks.images(task, base_url, services)
    images = [(u["url"], i.get("width"), i.get("height"), i.get("revised_prompt"), i.get("details") or {})
              for u, i in zip(urls, task.output or [])]
    source = (snapshot.get("images") or [None])[0] if snapshot["operation"] == Operation.UPSCALE.value else None
    created = aware(task.completed_at or task.created_at).timestamp()
    return {**render(images, answer, snapshot.get("prompt"), snapshot.get("seed"),
                     (source["width"], source["height"]) if source else None, created), **meta.get("shape", {})}


async def render_webhook(task: Task, base_url: str, services) -> dict:
    """A task's webhook: its status and, once it succeeded, the answer itself."""
    return await _tasks.webhook_body(task, _polling_url(base_url, task.id), lambda: render_task(task, base_url, services))


@router.get("/ideogram/tasks/{task_id}", summary="A task (Prefer: respond-async)",
            responses={**ok((IdeogramImages, IdeogramDescribed)), **ok(ImageTask, 202, "Still running"),
                       **ERRORS(422, *GENERATING)})
async def get_task(task_id: str, request: Request, caller: PrincipalDep, services: ServicesDep) -> Response:
    """202 with the status while the task runs; then exactly the synchronous answer, or its error."""
    task = await services.tasks.get(task_id, caller.key_id)
    if task.status in LIVE:
        return JSONResponse(_tasks.status(task, _polling_url(str(request.base_url), task.id)), status_code=202)
    _tasks.raise_failure(task)
    return JSONResponse(await render_task(task, str(request.base_url), services))


# -- Ideogram 4.0 --

@router.post("/ideogram/v1/ideogram-v4/generate", summary="Ideogram 4.0: generate", responses=IMAGES,
             openapi_extra=body(form(forms.V4Generate), json(forms.V4Generate)))
async def v4_generate(request: Request, _: PrincipalDep, services: ServicesDep, ctx: ContextDep) -> Response:
    p = await _fields(request, forms.V4Generate, json_ok=True)
    req = _request(Operation.GENERATE, await _served_model(services, ctx, V4_MODELS, Operation.GENERATE), p)
    return await _run(request, services, ctx, req, p, "image", response_type="url")


# -- Ideogram 3.0 --

async def _v3(request: Request, services, ctx, op: Operation, model: type[forms.Form]) -> Response:
    p = await _fields(request, model, json_ok=op is Operation.GENERATE)
    req = _request(op, await _served_model(services, ctx, V3_MODELS, op), p)
    await _attach(req, p, "image")
    if op is Operation.REFRAME and req.images[0].width != req.images[0].height:
        raise InvalidRequest(f"The image to reframe must be square; got {req.images[0].width}x"
                             f"{req.images[0].height}.", field="image", code="invalid_image")
    return await _run(request, services, ctx, req, p, "image")


def _v3_route(path: str, summary: str, op: Operation, model: type[forms.Form]) -> None:
    async def endpoint(request: Request, _: PrincipalDep, services: ServicesDep, ctx: ContextDep) -> Response:
        return await _v3(request, services, ctx, op, model)
    endpoint.__name__ = f"v3_{op.value}"
    extra = body(form(model), json(model)) if op is Operation.GENERATE else body(form(model))
    router.add_api_route(f"/ideogram/v1/ideogram-v3/{path}", endpoint, methods=["POST"], summary=summary,
                         responses=IMAGES, openapi_extra=extra)


for _path, _summary, _op, _model in (
        ("generate", "Ideogram 3.0: generate", Operation.GENERATE, forms.V3Generate),
        ("remix", "Ideogram 3.0: remix an image", Operation.REMIX, forms.V3Remix),
        ("edit", "Ideogram 3.0: edit inside a mask", Operation.EDIT, forms.V3Edit),
        ("reframe", "Ideogram 3.0: reframe a square image", Operation.REFRAME, forms.V3Reframe),
        ("replace-background", "Ideogram 3.0: replace the background", Operation.REPLACE_BACKGROUND,
         forms.V3ReplaceBackground)):
    _v3_route(_path, _summary, _op, _model)


# -- legacy --

def _wrapped(model: type[forms.Form], json_ok: bool = False) -> dict:
    """The document's body of a legacy route whose text fields travel in image_request."""
    schema = schema_of(model)
    files = {k: v for k, v in schema["properties"].items() if v == BINARY}
    text = {"type": "object", "properties": {k: v for k, v in schema["properties"].items() if k not in files},
            "required": sorted(set(schema.get("required", ())) - set(files))}
    if json_ok:
        return body(json({"type": "object", "properties": {"image_request": text}, "required": ["image_request"]}))
    return body(form(None, ("image_request", *sorted(set(files) & set(schema.get("required", ())))),
                     image_request={"type": "string", "description": "a JSON object: " + ", ".join(
                         sorted(text["properties"]))}, **files))


async def _legacy(request: Request, services, ctx, op: Operation, model: type[forms.Form],
                  wrapped: bool) -> Response:
    p = await _fields(request, model, json_ok=op is Operation.GENERATE, wrapped=wrapped)
    if op in (Operation.UPSCALE, Operation.DESCRIBE):
        name = await _served_model(services, ctx, SERVICE_MODELS, op)
        if name in V3_IDS and "magic_prompt_option" in p:  # 3.0's name for it
            p["magic_prompt"] = p.pop("magic_prompt_option")
    else:
        name = p.get("model", "V_2")
    req = _request(op, name, p)
    await _attach(req, p, "image_file")
    return await _run(request, services, ctx, req, p, "image_file")


def _legacy_route(paths: tuple[str, ...], summary: str, op: Operation, model: type[forms.Form],
                  wrapped: bool) -> None:
    async def endpoint(request: Request, _: PrincipalDep, services: ServicesDep, ctx: ContextDep) -> Response:
        return await _legacy(request, services, ctx, op, model, wrapped)
    endpoint.__name__ = f"legacy_{op.value}"
    extra = _wrapped(model, json_ok=op is Operation.GENERATE) if wrapped else body(form(model))
    responses = {**ok(IdeogramDescribed), **TASK, **ERRORS(422, *GENERATING)} if op is Operation.DESCRIBE else IMAGES
    for i, path in enumerate(paths):
        router.add_api_route(path, endpoint, methods=["POST"], summary=summary, responses=responses,
                             openapi_extra=extra, include_in_schema=i == 0)


for _paths, _summary, _op, _model, _in_request in (
        (("/ideogram/generate",), "Legacy: generate", Operation.GENERATE, forms.LegacyGenerate, True),
        (("/ideogram/remix",), "Legacy: remix an image", Operation.REMIX, forms.LegacyRemix, True),
        (("/ideogram/edit", "/ideogram/eidt"), "Legacy: edit inside a mask", Operation.EDIT, forms.LegacyEdit,
         False),  # /eidt: the URL of the document's own example
        (("/ideogram/upscale",), "Legacy: upscale an image", Operation.UPSCALE, forms.LegacyUpscale, True),
        (("/ideogram/describe",), "Legacy: describe an image", Operation.DESCRIBE, forms.LegacyDescribe, False)):
    _legacy_route(_paths, _summary, _op, _model, _in_request)
