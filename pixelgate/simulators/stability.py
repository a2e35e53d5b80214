"""Strict loopback emulator of Stability AI's v2beta Stable Image API (the base URL stands in for
https://api.stability.ai, header `Authorization: Bearer <key>`).

  POST /v2beta/stable-image/generate/{ultra,core,sd3}
  POST /v2beta/stable-image/edit/{inpaint,outpaint,search-and-replace,search-and-recolor,remove-background,erase}
  POST /v2beta/stable-image/upscale/{fast,conservative}
  POST /v2beta/stable-image/upscale/creative   -> {"id"}; GET /v2beta/results/{id}: 202 while it runs
Bodies are multipart/form-data only. `Accept: image/*` (the default) answers the image's bytes with
headers finish-reason and seed; `application/json` answers {"image", "finish_reason", "seed"}.
Errors: {"id", "name", "errors": ["<field>: <message>"]}.

Choices where the reference is silent or unconfirmed:
* A field an endpoint does not list, a repeated field, a value off its enum or range, a missing
  required field: 400 bad_request naming the field. A body that is not multipart, or an Accept
  that is neither: 400. A bad or missing key: 401 unauthorized.
* Input images: JPEG, PNG or WebP, at most 10 MB, each side at least 64 px and 4,096 to 9,437,184
  pixels (fast upscale: sides 32-1536, 1,024 to 1,048,576 pixels; creative: at most 1,048,576),
  aspect ratio within 1:2.5 and 2.5:1. A mask must match the image's size.
* Outputs: a generation is about one megapixel at its ratio (1:1 -> 1024x1024, 16:9 -> 1344x768);
  image-to-image, inpaint, erase, search-and-* and remove-background keep the input's size,
  outpaint adds its pixels, the fast upscale is 4x, conservative and creative reach 4 MP.
* A prompt containing `state.filtered_prompts_containing` ("forbidden") answers 200 with
  finish_reason CONTENT_FILTERED (a blurred image, as Stability sends); one containing
  `state.refuse_prompts_containing` ("prohibited") is 403 content_moderation.
* Seed 0 (or none) picks a random seed; the same seed draws the same picture. A creative upscale
  is ready after `state.creative_seconds`; its result may be fetched again until it expires.
* More than `state.max_in_flight` requests at once: 429. `fail_next` answers after the key check.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import random
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from PIL import Image, ImageFilter
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["StabilityEmulatorState", "create_app"]

MB = 1024 * 1024
MAX_SEED = 4294967294
RATIOS = {"16:9": (1344, 768), "1:1": (1024, 1024), "21:9": (1536, 640), "2:3": (832, 1216),
          "3:2": (1216, 832), "4:5": (896, 1088), "5:4": (1088, 896), "9:16": (768, 1344), "9:21": (640, 1536)}
PRESETS = ("3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
           "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic",
           "pixel-art", "tile-texture")
FORMATS = ("jpeg", "png", "webp")
SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash")
TEXT, FILE = "text", "file"
# A field's kind: TEXT, FILE, an enum (tuple) or a numeric range (lo, hi, int?).
KINDS: dict[str, Any] = {
    "prompt": TEXT, "negative_prompt": TEXT, "search_prompt": TEXT, "select_prompt": TEXT,
    "image": FILE, "mask": FILE, "aspect_ratio": tuple(RATIOS), "style_preset": PRESETS,
    "output_format": FORMATS, "seed": (0, MAX_SEED, True), "strength": (0.0, 1.0, False),
    "cfg_scale": (1.0, 10.0, False), "grow_mask": (0, 20, True), "model": SD3_MODELS,
    "mode": ("text-to-image", "image-to-image"),
    **{side: (0, 2000, True) for side in ("left", "right", "up", "down")},
}
_COMMON = {"seed", "output_format"}
_SEARCH = _COMMON | {"image", "prompt", "negative_prompt", "grow_mask", "style_preset"}
# path -> (fields, required fields, output rule, creativity range, output formats)
ENDPOINTS: dict[str, tuple[set[str], set[str], str, tuple[float, float] | None, tuple[str, ...]]] = {
    "generate/ultra": (_COMMON | {"prompt", "negative_prompt", "aspect_ratio", "image", "strength"}, {"prompt"},
                       "ratio", None, FORMATS),
    "generate/core": (_COMMON | {"prompt", "negative_prompt", "aspect_ratio", "style_preset"}, {"prompt"}, "ratio",
                      None, FORMATS),
    "generate/sd3": (_COMMON | {"prompt", "negative_prompt", "aspect_ratio", "image", "strength", "model", "mode",
                                "cfg_scale"}, {"prompt"}, "ratio", None, ("jpeg", "png")),
    "edit/inpaint": (_SEARCH | {"mask"}, {"image", "prompt"}, "input", None, FORMATS),
    "edit/outpaint": (_COMMON | {"image", "prompt", "left", "right", "up", "down", "creativity", "style_preset"},
                      {"image"}, "outpaint", (0.0, 1.0), FORMATS),
    "edit/search-and-replace": (_SEARCH | {"search_prompt"}, {"image", "prompt", "search_prompt"}, "input", None,
                                FORMATS),
    "edit/search-and-recolor": (_SEARCH | {"select_prompt"}, {"image", "prompt", "select_prompt"}, "input", None,
                                FORMATS),
    "edit/remove-background": ({"image", "output_format"}, {"image"}, "input", None, ("png", "webp")),
    "edit/erase": (_COMMON | {"image", "mask", "grow_mask"}, {"image"}, "input", None, FORMATS),
    "upscale/fast": ({"image", "output_format"}, {"image"}, "4x", None, FORMATS),
    "upscale/conservative": (_COMMON | {"image", "prompt", "negative_prompt", "creativity"}, {"image", "prompt"},
                             "4mp", (0.2, 0.5), FORMATS),
    "upscale/creative": (_COMMON | {"image", "prompt", "negative_prompt", "creativity", "style_preset"},
                         {"image", "prompt"}, "4mp", (0.1, 0.5), FORMATS),
}
PREFIX = "/v2beta/stable-image/"
PIXELS = {"upscale/fast": (32, 1536, 1024, 1048576), "upscale/creative": (64, 10 ** 9, 4096, 1048576)}
"""Input limits that differ from the default (64 px sides, 4,096 to 9,437,184 pixels)."""


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    fields: dict[str, str]
    files: dict[str, bytes]


@dataclass
class StabilityEmulatorState:
    api_key: str = "sk-stability-emulator"
    filtered_prompts_containing: str = "forbidden"
    refuse_prompts_containing: str = "prohibited"
    creative_seconds: float = 0.2
    result_ttl: float = 24 * 3600
    max_in_flight: int = 10
    requests: list[RecordedRequest] = field(default_factory=list)
    results: dict[str, tuple[float, bytes, str, int]] = field(default_factory=dict)
    """Creative upscales: id -> (ready at, image, format, seed)."""
    failures: deque = field(default_factory=deque)
    in_flight: int = 0

    def fail_next(self, status: int, name: str = "internal_error", errors: list[str] | None = None,
                  count: int = 1) -> None:
        self.failures.extend([(status, name, errors or ["An unexpected server error occurred."])] * count)


class ApiError(Exception):
    def __init__(self, status: int, name: str, *errors: str) -> None:
        super().__init__(errors)
        self.status, self.name, self.errors = status, name, list(errors)


def _bad(*errors: str) -> ApiError:
    return ApiError(400, "bad_request", *errors)


def _error(exc: ApiError) -> Response:
    return Response(orjson.dumps({"id": secrets.token_hex(16), "name": exc.name, "errors": exc.errors}), exc.status,
                    media_type="application/json")


async def _form(request: Request) -> tuple[dict[str, str], dict[str, bytes]]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise _bad(f"content-type: must be multipart/form-data, got '{ctype or 'none'}'")
    try:
        form = await request.form(max_files=4, max_fields=32)
    except Exception as exc:  # python-multipart's assorted parse errors
        raise _bad(f"body: malformed multipart ({exc})") from None
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for name, value in form.multi_items():
        if name in fields or name in files:
            raise _bad(f"{name}: given more than once")
        if isinstance(value, UploadFile):
            value = files[name] = await value.read()
        if name == "none" and not value:  # Stability's own examples send an empty one to force multipart
            files.pop(name, None)
            continue
        if isinstance(value, bytes):
            continue
        fields[name] = value
    return fields, files


def _check(op: str, fields: dict[str, str], files: dict[str, bytes]) -> dict[str, Any]:
    allowed, required, _, creativity, formats = ENDPOINTS[op]
    p: dict[str, Any] = {}
    for name in [*fields, *files]:
        if name not in allowed:
            raise _bad(f"{name}: unknown field")
    for name in sorted(required):
        if not fields.get(name) and not files.get(name):
            raise _bad(f"{name}: is required")
    for name, data in files.items():
        if KINDS[name] != FILE:
            raise _bad(f"{name}: must be a text value, not a file")
        p[name] = _picture(name, data)
    for name, value in fields.items():
        kind = creativity + (False,) if name == "creativity" and creativity else KINDS[name]
        if kind == FILE:
            raise _bad(f"{name}: must be a file")
        p[name] = _value(name, value, formats if name == "output_format" else kind)
    return p


def _value(name: str, value: str, kind: Any) -> Any:
    if kind == TEXT:
        if not 0 < len(value) <= 10000:
            raise _bad(f"{name}: must be 1 to 10000 characters")
        return value
    if isinstance(kind, tuple) and len(kind) == 3 and not isinstance(kind[0], str):
        lo, hi, whole = kind
        try:
            number = int(value) if whole else float(value)
        except ValueError:
            number = None
        if number is None or not lo <= number <= hi:
            raise _bad(f"{name}: must be {'an integer' if whole else 'a number'} from {lo} to {hi}")
        return number
    if value not in kind:
        raise _bad(f"{name}: must be one of {', '.join(kind)}")
    return value


def _picture(name: str, data: bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception:  # Pillow raises assorted types for undecodable bytes
        raise _bad(f"{name}: is not an image") from None
    if img.format not in ("PNG", "JPEG", "WEBP") or len(data) > 10 * MB:
        raise _bad(f"{name}: must be a JPEG, PNG or WebP image of at most 10 MB")
    return img


def _rules(op: str, p: dict[str, Any]) -> None:
    image = p.get("image")
    if op == "generate/sd3" or (op == "generate/ultra" and image is not None):
        mode = p.get("mode", "text-to-image") if op == "generate/sd3" else "image-to-image"
        if mode == "image-to-image" and (image is None or "strength" not in p):
            raise _bad("image: image-to-image needs an image and a strength")
        if mode == "text-to-image" and (image is not None or "strength" in p):
            raise _bad(f"{'image' if image is not None else 'strength'}: not taken in text-to-image mode")
        if mode == "image-to-image" and "aspect_ratio" in p:
            raise _bad("aspect_ratio: not taken in image-to-image mode")
    elif "strength" in p:
        raise _bad("strength: needs an image")
    if image is not None:
        side, top, least, most = PIXELS.get(op, (64, 10 ** 9, 4096, 9437184))
        w, h = image.size
        if min(w, h) < side or max(w, h) > top or not least <= w * h <= most:
            raise _bad(f"image: {w}x{h} is outside the sizes this endpoint takes")
        if not 1 / 2.5 <= w / h <= 2.5:
            raise _bad(f"image: aspect ratio {w}x{h} is outside 1:2.5 to 2.5:1")
    if "mask" in p and p["mask"].size != image.size:
        raise _bad("mask: must be the same size as the image")
    if op == "edit/outpaint" and not any(p.get(s) for s in ("left", "right", "up", "down")):
        raise _bad("left: at least one of left, right, up or down must be above 0")


def _output_size(op: str, p: dict[str, Any]) -> tuple[int, int]:
    rule = ENDPOINTS[op][2]
    if rule == "ratio" and "image" not in p:
        return RATIOS[p.get("aspect_ratio", "1:1")]
    w, h = p["image"].size
    if rule == "outpaint":
        return w + p.get("left", 0) + p.get("right", 0), h + p.get("up", 0) + p.get("down", 0)
    if rule == "4x":
        return w * 4, h * 4
    if rule == "4mp":
        scale = math.sqrt(4 * MB / (w * h))
        return round(w * scale), round(h * scale)
    return w, h


def render(width: int, height: int, key: str, fmt: str, blurred: bool = False, alpha: bool = False) -> bytes:
    digest = hashlib.sha256(key.encode()).digest()
    img = Image.new("RGBA" if alpha else "RGB", (width, height), tuple(digest[:3]) + ((0,) if alpha else ()))
    img.paste(tuple(digest[3:6]) + ((255,) if alpha else ()), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    if blurred:
        img = img.filter(ImageFilter.GaussianBlur(max(width, height) // 8))
    if fmt == "jpeg":
        img = img.convert("RGB")
    out = io.BytesIO()
    img.save(out, fmt.upper(), **({"compress_level": 1} if fmt == "png" else {"quality": 80}))
    return out.getvalue()


def _answer(accept: str, data: bytes, fmt: str, seed: int, finish: str = "SUCCESS") -> Response:
    if accept == "application/json":
        body = {"image": base64.b64encode(data).decode(), "finish_reason": finish, "seed": seed}
        return Response(orjson.dumps(body), media_type="application/json")
    return Response(data, media_type=f"image/{fmt}", headers={"finish-reason": finish, "seed": str(seed)})


def _accept(request: Request) -> str:
    accept = request.headers.get("accept", "image/*").split(";")[0].strip().lower() or "image/*"
    if accept in ("*/*", "image/*"):
        return "image/*"
    if accept != "application/json":
        raise _bad(f"accept: must be image/* or application/json, got '{accept}'")
    return accept


def _authorized(request: Request, state: StabilityEmulatorState) -> None:
    if request.headers.get("authorization") != f"Bearer {state.api_key}":
        raise ApiError(401, "unauthorized", "authorization: missing or invalid API key")


async def _api(request: Request) -> Response:
    state: StabilityEmulatorState = request.app.state.emulator
    op = request.url.path.removeprefix(PREFIX)
    state.in_flight += 1
    try:
        parse_error = None
        try:
            fields, files = await _form(request)
        except ApiError as exc:
            fields, files, parse_error = {}, {}, exc
        state.requests.append(RecordedRequest("POST", request.url.path, {k.lower(): v for k, v in request.headers.items()},
                                              fields, files))
        _authorized(request, state)
        if state.in_flight > state.max_in_flight:
            raise ApiError(429, "rate_limit_exceeded", "You have exceeded the rate limit.")
        if state.failures:
            status, name, errors = state.failures.popleft()
            raise ApiError(status, name, *errors)
        accept = _accept(request)
        if parse_error:
            raise parse_error
        p = _check(op, fields, files)
        _rules(op, p)
        prompt = p.get("prompt", "")
        if state.refuse_prompts_containing and state.refuse_prompts_containing in prompt.lower():
            raise ApiError(403, "content_moderation", "Your request was flagged by our content moderation system.")
        seed = p.get("seed") or random.randint(1, MAX_SEED)
        fmt = p.get("output_format", "png")
        width, height = _output_size(op, p)
        filtered = bool(state.filtered_prompts_containing) and state.filtered_prompts_containing in prompt.lower()
        data = render(width, height, f"{op}\0{prompt}\0{seed}", fmt, filtered, op == "edit/remove-background")
        if op == "upscale/creative":
            job = secrets.token_hex(32)
            state.results[job] = (time.monotonic() + state.creative_seconds, data, fmt, seed)
            return Response(orjson.dumps({"id": job}), media_type="application/json")
        return _answer(accept, data, fmt, seed, "CONTENT_FILTERED" if filtered else "SUCCESS")
    except ApiError as exc:
        return _error(exc)
    finally:
        state.in_flight -= 1


async def _result(request: Request) -> Response:
    state: StabilityEmulatorState = request.app.state.emulator
    job = request.path_params["job"]
    state.requests.append(RecordedRequest("GET", request.url.path, {k.lower(): v for k, v in request.headers.items()},
                                          {}, {}))
    try:
        _authorized(request, state)
        accept = _accept(request)
        entry = state.results.get(job)
        if entry is None or time.monotonic() > entry[0] + state.result_ttl:
            raise ApiError(404, "not_found", f"id: no generation found for '{job}'")
        ready, data, fmt, seed = entry
        if time.monotonic() < ready:
            return Response(orjson.dumps({"id": job, "status": "in-progress"}), 202, media_type="application/json")
        return _answer(accept, data, fmt, seed)
    except ApiError as exc:
        return _error(exc)


def create_app(state: StabilityEmulatorState | None = None) -> Starlette:
    app = Starlette(routes=[*(Route(PREFIX + op, _api, methods=["POST"]) for op in ENDPOINTS),
                            Route("/v2beta/results/{job}", _result, methods=["GET"])])
    app.state.emulator = state if state is not None else StabilityEmulatorState()
    return app
