"""Stability AI's own API (v2beta Stable Image), served by Stability channels: code written for
Stability works unchanged with the base URL `<gateway>/stability` and the gateway's key as
`Authorization: Bearer <key>`.

  POST /stability/v2beta/stable-image/generate/{ultra,core,sd3}
  POST /stability/v2beta/stable-image/edit/{inpaint,outpaint,search-and-replace,search-and-recolor,
                                            remove-background,erase}
  POST /stability/v2beta/stable-image/upscale/{fast,conservative,creative}
       multipart/form-data with Stability's fields (ROUTES: the provider's table of each endpoint)
       -> `Accept: image/*` (the default): the image's bytes, headers finish-reason and seed;
          `Accept: application/json`: {"image": <base64>, "finish_reason": "SUCCESS", "seed"}
       -> the creative upscale (and any route asked with `Prefer: respond-async`): {"id"}
  GET  /stability/v2beta/results/{id}   202 {"id", "status": "in-progress"} while it runs, then the image
  Errors {"id", "name", "errors": ["<field>: <message>"]}: 400 bad_request, 401, 402, 403
  (content_moderation: a refused prompt or a filtered image, neither delivered nor billed), 404,
  413, 429, 5xx.

Field mapping: prompt -> prompt; seed (0: random) -> seed; output_format -> output_format;
aspect_ratio -> size; image -> images[0]; mask (white = edit) -> mask; sd3's model -> the model
(default sd3.5-large); ultra -> stable-image-ultra, core -> stable-image-core, every other route ->
its model stability-<route>; sd3's mode is checked here (the provider sends it from the image);
everything else -> extras, checked against the provider's options.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any, Iterator

import pybase64
from fastapi import APIRouter, Request, Response

from pixelgate.db.models import Task
from pixelgate.domain import masks
from pixelgate.domain.images import InputImage, load_image
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.errors import GatewayError, InvalidRequest, NotFound, UpstreamContentFiltered
from pixelgate.providers.stability_endpoints import CORE, ENDPOINTS, MAX_SEED, RATIOS, SD3_MODELS, ULTRA, Endpoint
from pixelgate.services.tasks import LIVE
from pixelgate.surfaces import _tasks
from pixelgate.surfaces._answers import StabilityError, StabilityImage, StabilityInProgress, StabilityJob
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import BINARY, GENERATING, Errors, body, ok
from pixelgate.surfaces._route import authenticated, surface_route
from pixelgate.surfaces.deps import ContextDep, ServicesDep, StorageDep, TasksDep
from pixelgate.surfaces._body import Form, form_body

PROVIDER = "stability"
PREFIX = "/stability/v2beta/stable-image/"
NAMES = {400: "bad_request", 401: "unauthorized", 402: "payment_required", 403: "forbidden", 404: "not_found",
         410: "gone", 413: "payload_too_large", 429: "rate_limit_exceeded", 500: "internal_error",
         502: "bad_gateway", 503: "service_unavailable", 504: "gateway_timeout"}
# route -> the model it serves (None: sd3's `model` field names it)
MODELS: dict[str, str | None] = {
    "generate/ultra": ULTRA, "generate/core": CORE, "generate/sd3": None,
    **{f"{group}/{op}": f"stability-{'upscale-' if group == 'upscale' else ''}{op}"
       for group, ops in (("edit", ("inpaint", "outpaint", "search-and-replace", "search-and-recolor",
                                    "remove-background", "erase")), ("upscale", ("fast", "conservative", "creative")))
       for op in ops},
}


def render_error(exc: GatewayError) -> Response:
    filtered = isinstance(exc, UpstreamContentFiltered) or exc.code == "content_policy_violation"
    status, name = (403, "content_moderation") if filtered else (exc.status, NAMES.get(exc.status, "error"))
    message = exc.message if not exc.field or exc.message.startswith(exc.field) else f"{exc.field}: {exc.message}"
    return JSONResponse({"id": secrets.token_hex(16), "name": name, "errors": [message]}, status_code=status)


router = APIRouter(route_class=surface_route("stability", render_error), tags=["Stability"])
ERRORS = Errors(StabilityError, notes={403: "The key may not use the model, or Stability's content moderation "
                                            "refused the prompt or filtered the image (name content_moderation)"})


def _image_answer(json_body: Any) -> dict[int, dict]:
    """200: the image's bytes (Accept: image/*, headers finish-reason and seed), or JSON."""
    json_schema = ok(json_body)[200]["content"]["application/json"]
    return {200: {"description": "The image: its bytes (Accept: image/*), or JSON (Accept: application/json)",
                  "content": {**{f"image/{fmt}": {"schema": BINARY} for fmt in ("png", "jpeg", "webp")},
                              "application/json": json_schema}}}


# A generating route answers JSON {"id"} when asked to answer at once (or for the creative upscale).
ANSWERS = _image_answer((StabilityImage, StabilityJob))
ANSWERS_OF = {**ANSWERS, **ERRORS(*GENERATING)}


# -- the route's fields --

def fields_of(route: str) -> tuple[dict[str, Any], set[str]]:
    """The route's fields (name -> kind: "text", "file", "int", "number" or an enum) and the
    required ones, from the provider's table of the endpoint it serves."""
    model = MODELS[route] or SD3_MODELS[0]
    endpoint: Endpoint = ENDPOINTS[model]
    spec: dict[str, Any] = {"output_format": endpoint.formats}
    if endpoint.prompt != "none":
        spec["prompt"] = "text"
    if endpoint.seed:
        spec["seed"] = "int"
    if route != "generate/core":
        spec["image"] = "file"
    if endpoint.mask:
        spec["mask"] = "file"
    for name in endpoint.fields:
        spec[name] = {"aspect_ratio": RATIOS}.get(name, "number" if name in ("strength", "cfg_scale") else
                                                  "int" if name in ("grow_mask", "left", "right", "up", "down")
                                                  else "text")
    if endpoint.creativity:
        spec["creativity"] = "number"
    if route == "generate/sd3":
        spec |= {"model": SD3_MODELS, "mode": ("text-to-image", "image-to-image")}
    required = {"prompt"} if endpoint.prompt == "required" else set()
    required |= set(endpoint.required) | ({"image"} if not route.startswith("generate/") else set())
    return spec, required


def _check(body: Form, route: str) -> dict[str, Any]:
    spec, required = fields_of(route)
    files = body.grouped()
    # Stability's own examples send an empty `none` part to force multipart
    files.pop("none", None)
    if body.fields.get("none") == "":
        del body.fields["none"]
    for name in [*body.fields, *files]:
        if name not in spec:
            raise InvalidRequest(f"{name}: unknown field for {route}", field=name, code="unknown_parameter")
    for name in sorted(required):
        if not body.fields.get(name) and not files.get(name):
            raise InvalidRequest(f"{name}: is required", field=name, code="missing_required_parameter")
    p: dict[str, Any] = {}
    for name, uploads in files.items():
        if spec[name] != "file" or len(uploads) > 1:
            raise InvalidRequest(f"{name}: must be {'one file' if spec[name] == 'file' else 'a text value'}",
                                 field=name)
        p[name] = uploads[0]
    for name, value in body.fields.items():
        kind = spec[name]
        if kind == "file":
            raise InvalidRequest(f"{name}: must be a file", field=name)
        if isinstance(kind, tuple) and value not in kind:
            raise InvalidRequest(f"{name}: must be one of {', '.join(kind)}", field=name)
        p[name] = value
    seed = p.get("seed", "0")
    if not seed.isdigit() or not 0 <= int(seed) <= MAX_SEED:
        raise InvalidRequest(f"seed: must be an integer from 0 to {MAX_SEED}", field="seed")
    return p


def _mode(route: str, p: dict[str, Any]) -> None:
    """sd3's mode, and Ultra's image-to-image: an image needs a strength, and keeps its shape."""
    image, strength = "image" in p, "strength" in p
    mode = p.get("mode", "image-to-image" if route == "generate/ultra" and image else "text-to-image")
    if mode == "image-to-image" and not (image and strength):
        raise InvalidRequest(f"{'strength' if image else 'image'}: is required in image-to-image mode",
                             field="strength" if image else "image", code="missing_required_parameter")
    if mode == "text-to-image" and image:
        raise InvalidRequest("image: is not taken in text-to-image mode (set mode to image-to-image)", field="image")


async def _mask(upload, image: InputImage) -> InputImage:
    mask = await load_image(await upload.read(), "mask", upload.filename)
    if (mask.width, mask.height) != (image.width, image.height):
        raise InvalidRequest(f"mask: must be the same size as the image ({image.width}x{image.height}); got "
                             f"{mask.width}x{mask.height}", field="mask", code="invalid_image")
    # Any format and greyscale, as Stability takes them, as the two-tone PNG the engine checks.
    data = await asyncio.to_thread(lambda: masks.render(masks.edit_region(mask.data, "white"), "white"))
    return InputImage(data, "png", mask.width, mask.height, False, "mask.png")


async def _request(request: Request, route: str) -> tuple[ImageRequest, dict[str, Any]]:
    body = await form_body(request)
    p = _check(body, route)
    if route in ("generate/sd3", "generate/ultra"):
        _mode(route, p)
    extras = {k: v for k, v in p.items() if k not in ("prompt", "seed", "output_format", "image", "mask", "model",
                                                      "mode", "aspect_ratio")}
    req = ImageRequest(operation=Operation.EDIT if "image" in p else Operation.GENERATE,
                       model=MODELS[route] or p.get("model", SD3_MODELS[0]), prompt=p.get("prompt"),
                       seed=int(p["seed"]) or None if "seed" in p else None, size=p.get("aspect_ratio"),
                       output_format=p.get("output_format", "png"), mask_convention="white", delivery=Delivery.B64,
                       provider=PROVIDER, extras=extras)
    if "image" in p:
        upload = p["image"]
        req.images.append(await load_image(await upload.read(), "image", upload.filename))
    if "mask" in p:
        req.mask = await _mask(p["mask"], req.images[0])
    return req, {k: v for k, v in p.items() if k not in ("image", "mask")}


@contextlib.contextmanager
def _native_names() -> Iterator[None]:
    """The engine's checks name the internal fields; say them as Stability's client did."""
    try:
        yield
    except GatewayError as exc:
        if exc.field == "size":
            exc.field, exc.message = "aspect_ratio", exc.message.replace("'size'", "'aspect_ratio'")
        raise


def _accept(request: Request) -> str:
    accept = request.headers.get("accept", "image/*").split(",")[0].split(";")[0].strip().lower()
    if accept in ("", "*/*") or accept.startswith("image/"):
        return "image/*"
    if accept != "application/json":
        raise InvalidRequest(f"accept: must be image/* or application/json, got '{accept}'", field="accept")
    return accept


def image_answer(data: bytes, fmt: str, seed: int, accept: str) -> Response:
    if accept == "application/json":
        return JSONResponse({"image": pybase64.b64encode(data).decode(), "finish_reason": "SUCCESS", "seed": seed})
    return Response(data, media_type=f"image/{fmt}", headers={"finish-reason": "SUCCESS", "seed": str(seed)})


async def _task_image(task: Task, accept: str, storage) -> Response:
    _tasks.raise_failure(task)
    item = (task.output or [{}])[0]
    data = await storage.get(item["id"]) if item.get("id") else None
    if data is None:
        raise NotFound(f"id: the result of '{task.id}' is no longer stored", field="id", code="image_expired")
    return image_answer(data, item.get("format", "png"), item.get("seed", task.request.get("seed") or 0), accept)


async def _generate(request: Request, route: str, ctx, services) -> Response:
    engine, storage = services.engine, services.storage
    await authenticated(request)
    accept = _accept(request)
    req, client_input = await _request(request, route)
    with _native_names():
        if await _tasks.needs_task(request, services, req, None):
            task = await _tasks.submit(request, services, req, ctx, client_input, None)
            if _tasks.prefers_async(request) or ENDPOINTS[req.model].asynchronous:
                return JSONResponse({"id": task.id})
            return await _task_image(await _tasks.settled(services, task, ctx), accept, storage)
        ctx.answer_carries_bytes = True
        result = await engine.generate(req, ctx)
    image = result.images[0]
    data = await asyncio.to_thread(pybase64.b64decode, image.b64)
    return image_answer(data, image.format, image.details.get("seed", req.seed or 0), accept)


def request_body(route: str) -> dict:
    """A route's multipart body, for the OpenAPI document."""
    kinds = {"text": {"type": "string"}, "file": BINARY, "int": {"type": "string", "pattern": "^[0-9]+$"},
             "number": {"type": "string", "pattern": r"^[0-9]*\.?[0-9]+$"}}
    spec, required = fields_of(route)
    props = {n: kinds[k] if isinstance(k, str) else {"type": "string", "enum": list(k)} for n, k in spec.items()}
    schema: dict[str, Any] = {"type": "object", "properties": props, "required": sorted(required)}
    return {"multipart/form-data": {"schema": schema}}


def _route(route: str, summary: str) -> None:
    async def endpoint(request: Request, ctx: ContextDep, services: ServicesDep) -> Response:
        return await _generate(request, route, ctx, services)

    endpoint.__name__ = "stability_" + route.replace("/", "_").replace("-", "_")
    router.post(PREFIX + route, summary=summary, responses=ANSWERS_OF,
                openapi_extra=body(request_body(route)))(endpoint)


for _name, _summary in (("generate/ultra", "Stable Image Ultra"), ("generate/core", "Stable Image Core"),
                        ("generate/sd3", "Stable Diffusion 3.5 (text-to-image or image-to-image)"),
                        ("edit/inpaint", "Inpaint (mask: white = redraw)"), ("edit/outpaint", "Outpaint"),
                        ("edit/search-and-replace", "Search and replace"),
                        ("edit/search-and-recolor", "Search and recolor"),
                        ("edit/remove-background", "Remove the background"), ("edit/erase", "Erase"),
                        ("upscale/fast", "Fast upscale (4x)"), ("upscale/conservative", "Conservative upscale"),
                        ("upscale/creative", "Creative upscale (asynchronous: poll the results)")):
    _route(_name, _summary)


@router.get("/stability/v2beta/results/{job_id}", summary="The result of an asynchronous request",
            responses={**_image_answer(StabilityImage), **ok(StabilityInProgress, 202, "Still running"), **ERRORS(401, 404, 502, 503, 504)})
async def result(job_id: str, request: Request, tasks: TasksDep, storage: StorageDep) -> Response:
    ctx = await authenticated(request)
    accept = _accept(request)
    try:
        task = await tasks.get(job_id, ctx.principal.key_id)
    except NotFound:
        raise NotFound(f"id: no generation found for '{job_id}'", field="id") from None
    if not task.model_path.startswith(f"{PROVIDER}/") and task.model not in ENDPOINTS:
        raise NotFound(f"id: no generation found for '{job_id}'", field="id")
    if task.status in LIVE:
        return JSONResponse({"id": task.id, "status": "in-progress"}, status_code=202)
    return await _task_image(task, accept, storage)
