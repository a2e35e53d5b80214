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

Every rule of the document is checked here, before anything is spent; the engine's own checks
name the internal fields, which `_native_names` renames back. Field mapping:

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

import asyncio
import contextlib
import io
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import orjson
from fastapi import APIRouter, Request, Response
from PIL import Image
from starlette.datastructures import UploadFile

from pixelgate.domain import masks
from pixelgate.domain.images import InputImage, load_image
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import ImageResult
from pixelgate.errors import (GatewayError, InvalidRequest, ModelNotFound, NoChannelAvailable, NotFound,
                              PayloadTooLarge, UpstreamContentFiltered)
from pixelgate.providers.ideogram import (LEGACY_RATIOS, LEGACY_RESOLUTIONS, MAX_SEED, STYLE_PRESETS,
                                          V3_IDS, V3_RATIOS, V3_RESOLUTIONS, V4_IDS, V4_RESOLUTIONS)
from pixelgate.surfaces._answers import IdeogramDescribed, IdeogramError, IdeogramImages
from pixelgate.surfaces._route import surface_route
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import GENERATING, Errors, ok
from pixelgate.surfaces._body import check_depth
from pixelgate.surfaces.deps import principal


async def _authenticate(request: Request):
    await principal(request)
    return request.state.ctx

PROVIDER = "ideogram"
MB = 1024 * 1024


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
IMAGES = {**ok(IdeogramImages, description="The images, with the gateway's own URLs"), **ERRORS(422, *GENERATING)}


# -- the document's vocabulary --

@dataclass(frozen=True)
class Int:
    lo: int
    hi: int


TEXT, FILE, FILES, OBJECT = "text", "file", "files", "object"
MAGIC = ("AUTO", "ON", "OFF")
SPEEDS = ("TURBO", "DEFAULT", "QUALITY")
V3_STYLES = ("AUTO", "GENERAL", "REALISTIC", "DESIGN")
LEGACY_STYLES = ("AUTO", "GENERAL", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME")
LEGACY_MODELS = ("V_1", "V_1_TURBO", "V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO")
EDIT_MODELS = ("V_2", "V_2_TURBO")
RATIO_ALIASES = {"SPECT_16_10": "ASPECT_16_10"}  # the document's own spelling, kept working
SEED, NUM, WEIGHT = Int(0, MAX_SEED), Int(1, 8), Int(1, 100)

_V3_ALL = {"rendering_speed": SPEEDS, "num_images": NUM, "seed": SEED, "style_reference_images": FILES,
           "style_preset": STYLE_PRESETS, "color_palette": OBJECT}
_V3_GEN = {**_V3_ALL, "prompt": TEXT, "aspect_ratio": V3_RATIOS, "resolution": V3_RESOLUTIONS,
           "magic_prompt": MAGIC, "style_type": V3_STYLES, "negative_prompt": TEXT}
# operation -> (fields, required). Edit's aspect_ratio and negative_prompt and replace-background's
# style_type are in the document but not in Ideogram's endpoints: accepted, checked, not sent.
V3: dict[Operation, tuple[dict[str, Any], set[str]]] = {
    Operation.GENERATE: (_V3_GEN, {"prompt"}),
    Operation.REMIX: ({**_V3_GEN, "image": FILE, "image_weight": WEIGHT}, {"prompt", "image"}),
    Operation.EDIT: ({**_V3_ALL, "prompt": TEXT, "image": FILE, "mask": FILE, "aspect_ratio": V3_RATIOS,
                      "magic_prompt": MAGIC, "style_type": V3_STYLES, "negative_prompt": TEXT},
                     {"prompt", "image", "mask"}),
    Operation.REFRAME: ({**_V3_ALL, "image": FILE, "resolution": V3_RESOLUTIONS}, {"image", "resolution"}),
    Operation.REPLACE_BACKGROUND: ({**_V3_ALL, "prompt": TEXT, "image": FILE, "magic_prompt": MAGIC,
                                    "style_type": V3_STYLES}, {"prompt", "image"}),
}
_LEGACY_REQ = {"prompt": TEXT, "aspect_ratio": LEGACY_RATIOS + tuple(RATIO_ALIASES), "model": LEGACY_MODELS,
               "magic_prompt_option": MAGIC, "magic_prompt_version": ("V_0", *(f"V_0_{i}" for i in range(1, 9))),
               "seed": SEED, "style_type": LEGACY_STYLES, "negative_prompt": TEXT, "num_images": NUM,
               "resolution": LEGACY_RESOLUTIONS, "color_palette": OBJECT}
# operation -> (fields, required, how the text fields travel: "request" inside image_request, a
# JSON object or a JSON string part; "form" as plain multipart parts). Files are always parts.
LEGACY: dict[Operation, tuple[dict[str, Any], set[str], str]] = {
    Operation.GENERATE: (_LEGACY_REQ, {"prompt"}, "request"),
    Operation.REMIX: ({**_LEGACY_REQ, "image_weight": WEIGHT, "image_file": FILE}, {"prompt", "image_file"},
                      "request"),
    Operation.EDIT: ({"prompt": TEXT, "model": LEGACY_MODELS, "magic_prompt_option": MAGIC, "num_images": NUM,
                      "seed": SEED, "style_type": LEGACY_STYLES, "image_file": FILE, "mask": FILE},
                     {"prompt", "model", "image_file", "mask"}, "form"),
    Operation.UPSCALE: ({"prompt": TEXT, "resemblance": WEIGHT, "detail": WEIGHT, "magic_prompt_option": MAGIC,
                         "magic_prompt_version": _LEGACY_REQ["magic_prompt_version"], "num_images": NUM,
                         "seed": SEED, "image_file": FILE}, {"image_file"}, "request"),
    Operation.DESCRIBE: ({"describe_model_version": ("V_2", "V_3"), "image_file": FILE}, {"image_file"}, "form"),
}
# Which legacy model may send what (document and Ideogram's reference): a field -> the models
# that take it.
LEGACY_MODEL_RULES = {
    "style_type": ("V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO"),
    "negative_prompt": ("V_1", "V_1_TURBO", "V_2", "V_2_TURBO"),
    "resolution": ("V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO"),
    "color_palette": ("V_2", "V_2_TURBO"),
}
# 4.0's generate: FLASH is in the enum, but Ideogram answers it 400 (checked in _v4_rules).
V4_PROMPTS = ("text_prompt", "json_prompt", "prompt")
V4_GEN = {"text_prompt": TEXT, "json_prompt": OBJECT, "prompt": TEXT, "resolution": V4_RESOLUTIONS,
          "rendering_speed": (*SPEEDS, "FLASH"), "seed": SEED}
EXTRAS = ("rendering_speed", "magic_prompt", "magic_prompt_option", "magic_prompt_version", "style_type",
          "negative_prompt", "image_weight", "resemblance", "detail", "style_preset", "color_palette",
          "describe_model_version", "json_prompt")
V3_MODELS = ("V3", *sorted(V3_IDS - {"V3"}))
V4_MODELS = ("V4", *sorted(V4_IDS - {"V4"}))
"""The 3.0 routes' model: V3, or another name of it where a channel lists only that."""
SERVICE_MODELS = ("V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO", "V_1", "V_1_TURBO", *V3_MODELS)
"""Upscale and describe name no model: the first of these an Ideogram channel serves does it."""


# -- reading the body --

@dataclass
class Body:
    fields: dict[str, Any]
    files: dict[str, list[UploadFile]]


async def _read(request: Request, json_ok: bool) -> Body:
    settings = request.app.state.services.settings
    if int(request.headers.get("content-length") or 0) > settings.max_body_bytes:
        raise PayloadTooLarge("The request body is too large.")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" and json_ok:
        raw = await request.body()
        if len(raw) > settings.max_body_bytes:
            raise PayloadTooLarge("The request body is too large.")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None
        if not isinstance(data, dict):
            raise InvalidRequest("The body must be a JSON object.", code="invalid_json")
        check_depth(data)
        return Body(data, {})
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise InvalidRequest(f"Unsupported content type '{ctype or 'none'}': this endpoint takes "
                             f"{'application/json or ' if json_ok else ''}multipart/form-data.",
                             code="invalid_content_type")
    try:
        form = await request.form(max_files=40, max_fields=100)
    except GatewayError:  # the body limit, raised while the body streams in (surfaces/_limits.py)
        raise
    except Exception as exc:  # python-multipart reports malformed bodies with assorted types
        raise InvalidRequest(f"Malformed multipart body: {exc}.", code="invalid_multipart") from None
    body = Body({}, {})
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            body.files.setdefault(name, []).append(value)
        elif name in body.fields:
            raise InvalidRequest(f"Field '{name}' was given more than once.", field=name)
        else:
            body.fields[name] = value
    return body


def _unwrap(body: Body) -> Body:
    """The legacy image_request's fields (an object in a JSON body, or a JSON string part of a
    form), with the form's files."""
    for name in set(body.fields) - {"image_request"}:
        raise InvalidRequest(f"Unknown field '{name}': the fields go inside 'image_request'.", field=name,
                             code="unknown_parameter")
    inner = body.fields.get("image_request")
    if isinstance(inner, str):
        try:
            inner = orjson.loads(inner)
        except orjson.JSONDecodeError:
            raise InvalidRequest("'image_request' is not valid JSON.", field="image_request") from None
        check_depth(inner)
    if not isinstance(inner, dict):
        raise InvalidRequest("'image_request' is required: an object, or in a form a JSON string of one.",
                             field="image_request", code="missing_required_parameter")
    return Body(inner, body.files)


def _check(body: Body, spec: dict[str, Any], required: set[str]) -> dict[str, Any]:
    """The document's field list, types and enums: typed values (files stay UploadFiles)."""
    for name in [*body.fields, *body.files]:
        if name not in spec:
            raise InvalidRequest(f"Unknown field '{name}'.", field=name, code="unknown_parameter")
    for name in sorted(required):
        if body.fields.get(name) in (None, "") and not body.files.get(name):
            raise InvalidRequest(f"Missing required field '{name}'.", field=name, code="missing_required_parameter")
    out: dict[str, Any] = {}
    for name, uploads in body.files.items():
        if spec[name] not in (FILE, FILES):
            raise InvalidRequest(f"'{name}' must be a text value, not a file.", field=name)
        if spec[name] == FILE and len(uploads) > 1:
            raise InvalidRequest(f"'{name}' takes one file; got {len(uploads)}.", field=name)
        out[name] = uploads
    for name, value in body.fields.items():
        if value is None:
            continue
        out[name] = _value(name, spec[name], value)
    if "aspect_ratio" in out and "resolution" in out:
        raise InvalidRequest("'aspect_ratio' and 'resolution' cannot be used together; give one of them.",
                             field="resolution")
    return out


def _value(name: str, kind: Any, value: Any) -> Any:
    if kind in (FILE, FILES):
        raise InvalidRequest(f"'{name}' must be a file (a multipart file part).", field=name)
    if isinstance(kind, Int):
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not kind.lo <= value <= kind.hi:
            raise InvalidRequest(f"Invalid value for '{name}': {_shown(value)}. It must be an integer from {kind.lo} "
                                 f"to {kind.hi}.", field=name)
        return value
    if kind == OBJECT:
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                value = None
        if not isinstance(value, dict):
            raise InvalidRequest(f"'{name}' must be a JSON object.", field=name)
        return value
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid value for '{name}': {_shown(value)}. It must be a string.", field=name)
    if kind == TEXT:
        return value
    if kind is LEGACY_RESOLUTIONS and re.fullmatch(r"\d+x\d+", value):  # the document says "width x height"
        value = "RESOLUTION_" + value.replace("x", "_")
    if value not in kind:
        shown = ", ".join(kind) if len(kind) <= 20 else ", ".join(kind[:6]) + f", ... ({len(kind)} values)"
        raise InvalidRequest(f"Invalid value for '{name}': {_shown(value)}. Expected one of: {shown}.", field=name)
    return value


def _shown(value: Any) -> str:
    """A client's value in an error message: scalars as written (cut short), containers by kind."""
    if isinstance(value, (list, dict)):
        return "an array" if isinstance(value, list) else "an object"
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


async def _image(uploads: list[UploadFile], field: str) -> InputImage:
    upload = uploads[0]
    image = await load_image(await upload.read(), field, upload.filename)
    if image.format not in ("png", "jpeg", "webp"):
        raise InvalidRequest(f"'{field}' must be a JPEG, PNG or WebP image; got {image.format.upper()}.",
                             field=field, code="invalid_image_format")
    if len(image.data) > 10 * MB:
        raise InvalidRequest(f"'{field}' is larger than 10 MB.", field=field, code="image_too_large")
    return image


async def _mask(uploads: list[UploadFile], image: InputImage) -> InputImage:
    """The document's mask rules: black and white only, the image's size, not all white (black
    marks what to edit). Lossy JPEG/WebP masks cannot hold exactly two values, so there near-black
    and near-white count (within 32 levels) and the mask is sent on as a two-tone PNG."""
    mask = await _image(uploads, "mask")
    if (mask.width, mask.height) != (image.width, image.height):
        raise InvalidRequest(f"The mask ({mask.width}x{mask.height}) must be the same size as the image "
                             f"({image.width}x{image.height}).", field="mask", code="invalid_image")
    # Decoding, converting and re-encoding a large mask takes tens of milliseconds: in a thread.
    data = await asyncio.to_thread(_two_tone_png, mask)
    return InputImage(data, "png", mask.width, mask.height, False, "mask.png")


def _two_tone_png(mask: InputImage) -> bytes:
    data = mask.data
    if mask.format != "png":
        with Image.open(io.BytesIO(data)) as img:
            grey = img.convert("L")
        if any(count and 32 < level < 223 for level, count in enumerate(grey.histogram())):
            raise InvalidRequest("The mask must contain only black and white pixels.", field="mask")
        out = io.BytesIO()
        grey.point(lambda v: 0 if v < 128 else 255).save(out, "PNG")
        data = out.getvalue()
    masks.check_black_and_white(data, "mask")
    return data


async def _style_images(uploads: list[UploadFile]) -> list[InputImage]:
    images = [await _image([u], "style_reference_images") for u in uploads]
    if sum(len(i.data) for i in images) > 10 * MB:
        raise InvalidRequest("'style_reference_images' must total at most 10 MB.", field="style_reference_images")
    return images


# -- into the one internal request --

def _request(op: Operation, model: str, p: dict[str, Any]) -> ImageRequest:
    size = p.get("resolution") or p.get("aspect_ratio")
    prompt = p.get("prompt", p.get("text_prompt"))  # 4.0's text_prompt; its legacy name is prompt
    return ImageRequest(operation=op, model=model, prompt=prompt, n=p.get("num_images", 1), seed=p.get("seed"),
                        size=RATIO_ALIASES.get(size, size), mask_convention="black",
                        delivery=Delivery.URL, provider=PROVIDER, extras={k: p[k] for k in EXTRAS if k in p})


async def _attach(req: ImageRequest, p: dict[str, Any], image_field: str) -> None:
    if image_field in p:
        req.images.append(await _image(p[image_field], image_field))
    if "mask" in p:
        req.mask = await _mask(p["mask"], req.images[0])
    if "style_reference_images" in p:
        req.style_images = await _style_images(p["style_reference_images"])


async def _served_model(request: Request, ctx, candidates: tuple[str, ...], op: Operation) -> str:
    """The first candidate an Ideogram channel serves with `op`, preferring ones the key may use."""
    served = []
    for model in candidates:
        try:
            route = await request.app.state.services.directory.route(model, PROVIDER)
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


async def _run(request: Request, ctx, req: ImageRequest, p: dict[str, Any], image_field: str,
               **extra: Any) -> Response:
    """`extra`: fields the answer adds to Ideogram's shape (4.0's response_type)."""
    names = {"n": "num_images", "size": "resolution" if "resolution" in p else "aspect_ratio",
             "image": image_field, "prompt": "prompt" if "prompt" in p else "text_prompt"}
    with _native_names(names):
        result = await request.app.state.services.engine.generate(req, ctx)
    if req.operation is Operation.DESCRIBE:
        return JSONResponse({"descriptions": [{"text": t} for t in result.meta.get("descriptions", [])]})
    return JSONResponse({**render(result, req), **extra})


def render(result: ImageResult, req: ImageRequest) -> dict:
    data = []
    for image in result.images:
        item: dict[str, Any] = {"prompt": image.revised_prompt or req.prompt or "",
                                "resolution": f"{image.width}x{image.height}", "is_image_safe": True,
                                "seed": image.details.get("seed", req.seed), "url": image.url}
        if "style_type" in image.details:
            item["style_type"] = image.details["style_type"]
        if req.operation is Operation.UPSCALE:  # resolution is the input's, as Ideogram reports it
            source = req.images[0]
            item["upscaled_resolution"], item["resolution"] = item["resolution"], f"{source.width}x{source.height}"
        data.append(item)
    for unsafe in result.meta.get("withheld", []):  # as Ideogram lists them: no url, no error
        data.append({"prompt": unsafe.get("prompt", req.prompt or ""), "resolution": unsafe.get("resolution"),
                     "is_image_safe": False, "seed": unsafe.get("seed", req.seed), "url": None,
                     **({"style_type": unsafe["style_type"]} if "style_type" in unsafe else {})})
    created = datetime.fromtimestamp(result.created, timezone.utc).isoformat()
    return {"created": created, "data": data}


# -- Ideogram 4.0 --

def _v4_rules(p: dict[str, Any]) -> None:
    given = [name for name in V4_PROMPTS if name in p and p[name] != ""]
    if len(given) != 1:
        raise InvalidRequest("Give exactly one of 'text_prompt' and 'json_prompt' (or the legacy 'prompt'); got "
                             f"{' and '.join(repr(g) for g in given) or 'none'}.",
                             field=given[-1] if given else "text_prompt",
                             code=None if given else "missing_required_parameter")
    if p.get("rendering_speed") == "FLASH":  # in Ideogram's enum, refused by Ideogram for 4.0
        raise InvalidRequest("rendering_speed FLASH is not yet available for Ideogram 4.0; use TURBO, DEFAULT or "
                             "QUALITY.", field="rendering_speed")


@router.post("/ideogram/v1/ideogram-v4/generate", summary="Ideogram 4.0: generate", responses=IMAGES)
async def v4_generate(request: Request) -> Response:
    ctx = await _authenticate(request)
    p = _check(await _read(request, json_ok=True), V4_GEN, set())
    _v4_rules(p)
    req = _request(Operation.GENERATE, await _served_model(request, ctx, V4_MODELS, Operation.GENERATE), p)
    return await _run(request, ctx, req, p, "image", response_type="url")


# -- Ideogram 3.0 --

async def _v3(request: Request, op: Operation) -> Response:
    ctx = await _authenticate(request)
    spec, required = V3[op]
    p = _check(await _read(request, json_ok=op is Operation.GENERATE), spec, required)
    req = _request(op, await _served_model(request, ctx, V3_MODELS, op), p)
    await _attach(req, p, "image")
    if op is Operation.REFRAME and req.images[0].width != req.images[0].height:
        raise InvalidRequest(f"The image to reframe must be square; got {req.images[0].width}x"
                             f"{req.images[0].height}.", field="image", code="invalid_image")
    return await _run(request, ctx, req, p, "image")


@router.post("/ideogram/v1/ideogram-v3/generate", summary="Ideogram 3.0: generate", responses=IMAGES)
async def v3_generate(request: Request) -> Response:
    return await _v3(request, Operation.GENERATE)


@router.post("/ideogram/v1/ideogram-v3/remix", summary="Ideogram 3.0: remix an image", responses=IMAGES)
async def v3_remix(request: Request) -> Response:
    return await _v3(request, Operation.REMIX)


@router.post("/ideogram/v1/ideogram-v3/edit", summary="Ideogram 3.0: edit inside a mask", responses=IMAGES)
async def v3_edit(request: Request) -> Response:
    return await _v3(request, Operation.EDIT)


@router.post("/ideogram/v1/ideogram-v3/reframe", summary="Ideogram 3.0: reframe a square image", responses=IMAGES)
async def v3_reframe(request: Request) -> Response:
    return await _v3(request, Operation.REFRAME)


@router.post("/ideogram/v1/ideogram-v3/replace-background", summary="Ideogram 3.0: replace the background",
             responses=IMAGES)
async def v3_replace_background(request: Request) -> Response:
    return await _v3(request, Operation.REPLACE_BACKGROUND)


# -- legacy --

async def _legacy(request: Request, op: Operation) -> Response:
    ctx = await _authenticate(request)
    spec, required, how = LEGACY[op]
    body = await _read(request, json_ok=op is Operation.GENERATE)
    if how == "request":
        body = _unwrap(body)
    p = _check(body, spec, required)
    if op in (Operation.UPSCALE, Operation.DESCRIBE):
        model = await _served_model(request, ctx, SERVICE_MODELS, op)
        if model in V3_IDS and "magic_prompt_option" in p:  # 3.0's name for it
            p["magic_prompt"] = p.pop("magic_prompt_option")
    else:
        model = p.get("model", "V_2")
        _legacy_rules(op, model, p)
    req = _request(op, model, p)
    await _attach(req, p, "image_file")
    return await _run(request, ctx, req, p, "image_file")


def _legacy_rules(op: Operation, model: str, p: dict[str, Any]) -> None:
    if op is Operation.EDIT and model not in EDIT_MODELS:
        raise InvalidRequest(f"Invalid value for 'model': '{model}'. /edit supports only V_2 and V_2_TURBO.",
                             field="model", code="unsupported_model")
    for name, models in LEGACY_MODEL_RULES.items():
        if name in p and model not in models:
            raise InvalidRequest(f"'{name}' is not supported by model {model}; only by {', '.join(models)}.",
                                 field=name, code="unsupported_parameter")


@router.post("/ideogram/generate", summary="Legacy: generate", responses=IMAGES)
async def legacy_generate(request: Request) -> Response:
    return await _legacy(request, Operation.GENERATE)


@router.post("/ideogram/remix", summary="Legacy: remix an image", responses=IMAGES)
async def legacy_remix(request: Request) -> Response:
    return await _legacy(request, Operation.REMIX)


@router.post("/ideogram/edit", summary="Legacy: edit inside a mask", responses=IMAGES)
@router.post("/ideogram/eidt", include_in_schema=False)  # the URL of the document's own example
async def legacy_edit(request: Request) -> Response:
    return await _legacy(request, Operation.EDIT)


@router.post("/ideogram/upscale", summary="Legacy: upscale an image", responses=IMAGES)
async def legacy_upscale(request: Request) -> Response:
    return await _legacy(request, Operation.UPSCALE)


@router.post("/ideogram/describe", summary="Legacy: describe an image",
             responses={**ok(IdeogramDescribed), **ERRORS(422, *GENERATING)})
async def legacy_describe(request: Request) -> Response:
    return await _legacy(request, Operation.DESCRIBE)
