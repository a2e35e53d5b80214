"""Strict loopback emulator of Volcengine Ark's image generation API (Doubao Seedream / SeedEdit).

Authority: ../shared/upstreams/volcengine-ark.md.  ``POST /api/v3/images/generations`` with
``Authorization: Bearer <key>`` and a JSON body; answers ``{model, created, data, usage}`` or, with
``stream: true``, server-sent events (one per finished image, the headers only once the first image
is ready, then ``data: [DONE]``).  Errors: ``{"error": {"code", "message", "param", "type"}}``.
Serve it with ``tests.emulators.server.serve(create_app(state))`` in the tests, or in-process (see pixelgate.simulators); clients use ``<base>/api/v3``.

Choices where the reference is silent or marked unconfirmed:

* Models: the dated ids of §1 (3.0-t2i, seededit-3.0, 4.0, 4.5, 5.0 / 5.0-lite); any other -> 404.
  A field the model does not take (§2 "Models" column) is refused: 400 ``InvalidParameter``.
* 5.0-lite takes the keywords ``2K``/``3K`` only and at most 3072x3072 pixels (the stricter reading).
* 5.0-pro (``doubao-seedream-5-0-pro-260628``) makes one image: ``sequential_image_generation``,
  its options and ``stream`` are refused whatever their value (400), as resellers report; it takes
  ``1K``/``2K`` or WxH up to 2048x2048 pixels, ``output_format``, and up to 10 reference images.
* 5.0 Flash (``doubao-seedream-5-0-flash-260915``) has 5.0 Pro's rules and also takes ``1.5K``,
  as third-party integrations report (no vendor page for it was read).
* A model Ark has shut down answers like an unknown one (404 ``InvalidEndpointOrModel.NotFound``)
  from its shutdown date on (``SHUTDOWN``, the catalog's dates; SeedEdit 3.0 has no published date,
  so the day it was reported gone is used); ``state.today`` moves the emulator's calendar.
* ``max_images`` defaults to 15 and "refs + max_images <= 15" is checked with ``auto`` only, so
  ``auto`` with reference images and no ``max_images`` is refused.
* In ``auto`` mode the "model" makes ``state.group_size`` images (None: max_images), capped by
  max_images; indices in ``state.withhold`` come back as per-image moderation errors.
* http(s) reference URLs are accepted without being fetched; data URLs are decoded and checked.
* A prompt containing ``state.refuse_prompts_containing`` (case-insensitive) is refused as
  ``InputTextSensitiveContentDetected``.  ``delay`` comes before the key check, ``fail_next``
  after it.  Result URLs (``GET /ark-content/<name>``) need no key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import io
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["MODELS", "ArkEmulatorState", "create_app"]

MB = 1024 * 1024
_BASE = frozenset({"model", "prompt", "size", "seed", "response_format", "watermark"})
_SEEDREAM = _BASE | {"image", "sequential_image_generation", "sequential_image_generation_options", "stream",
                     "optimize_prompt_options", "optimize_prompt"}
_S4 = {"keywords": {"1K": 1024, "2K": 2048, "4K": 4096}, "area": (921600, 4096 * 4096), "aspect": 16,
       "sides": (1, 1 << 20), "default": "2048x2048", "refs": (0, 14), "fields": _SEEDREAM,
       "optimize": ("standard", "fast")}
_S45 = {**_S4, "keywords": {"2K": 2048, "4K": 4096}, "area": (3686400, 4096 * 4096), "optimize": ("standard",)}
_S5 = {**_S45, "keywords": {"2K": 2048, "3K": 3072}, "area": (3686400, 3072 * 3072),
       "fields": _SEEDREAM | {"output_format", "tools"}}
# model -> size keywords (side in pixels), pixel-area range, max aspect, side range, default size,
# reference image count range, accepted fields, optimize_prompt_options modes.
_S5_PRO = {**_S5, "keywords": {"1K": 1024, "2K": 2048}, "area": (921600, 2048 * 2048), "refs": (0, 10),
            "fields": (_SEEDREAM | {"output_format"}) - {"sequential_image_generation",
                                                        "sequential_image_generation_options", "stream"}}
MODELS: dict[str, dict[str, Any]] = {
    "doubao-seedream-3-0-t2i-250415": {"keywords": {}, "area": (512 * 512, 2048 * 2048), "aspect": 4,
                                       "sides": (512, 2048), "default": "1024x1024", "refs": (0, 0),
                                       "fields": _BASE | {"guidance_scale"}},
    "doubao-seededit-3-0-i2i-250628": {"keywords": {"adaptive": 0}, "default": "adaptive", "refs": (1, 1),
                                       "fields": _BASE | {"guidance_scale", "image"}},
    "doubao-seedream-4-0-250828": _S4,
    "doubao-seedream-4-5-251128": _S45,
    "doubao-seedream-5-0-260128": _S5,
    "doubao-seedream-5-0-lite-260128": _S5,
    "doubao-seedream-5-0-pro-260628": _S5_PRO,
    "doubao-seedream-5-0-flash-260915": {**_S5_PRO, "keywords": {"1K": 1024, "1.5K": 1536, "2K": 2048}},
}
SHUTDOWN = {"doubao-seedream-3-0-t2i-250415": date(2026, 5, 13),
            "doubao-seededit-3-0-i2i-250628": date(2026, 8, 5),  # reported unavailable by then
            "doubao-seedream-5-0-260128": date(2026, 11, 24), "doubao-seedream-5-0-lite-260128": date(2026, 11, 24)}
"""Model -> the day Ark stopped serving it (pixelgate/catalog.toml's shutdown dates)."""
TYPES = {"model": str, "prompt": str, "size": str, "seed": int, "response_format": str, "watermark": bool,
         "guidance_scale": (int, float), "image": (str, list), "sequential_image_generation": str,
         "sequential_image_generation_options": dict, "stream": bool, "optimize_prompt_options": dict,
         "optimize_prompt": bool, "output_format": str, "tools": list}
ENUMS = {"response_format": ("url", "b64_json"), "sequential_image_generation": ("auto", "disabled"),
         "output_format": ("png", "jpeg")}
RANGES = {"seed": (-1, 2147483647), "guidance_scale": (1, 10)}
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
ERRORS = {  # status -> (type, code, message) for fail_next() without a body
    400: ("BadRequest", "InvalidParameter", "The parameter `size` specified in the request is not valid."),
    401: ("Unauthorized", "AuthenticationError", "The API key or AK/SK in the request is missing or invalid."),
    403: ("Forbidden", "AccountOverdueError", "The request failed because your account has an overdue balance."),
    404: ("NotFound", "InvalidEndpointOrModel.NotFound", "The model or endpoint does not exist or you do not "
          "have access to it."),
    429: ("TooManyRequests", "RateLimitExceeded.EndpointRPMExceeded", "The request has exceeded the rate limit "
          "(RPM) of the endpoint."),
    500: ("InternalServiceError", "InternalServiceError", "The service encountered an unexpected internal error."),
}
SENSITIVE_OUT = {"code": "OutputImageSensitiveContentDetected",
                 "message": "The request failed because the output image may contain sensitive information."}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any]


@dataclass
class ArkEmulatorState:
    api_key: str = "ark-emulator-key"
    delay: float = 0.0
    today: date | None = None  # the emulator's calendar for shutdowns; None: the real date
    refuse_prompts_containing: str = "forbidden"
    group_size: int | None = None
    withhold: set[int] = field(default_factory=set)
    requests: list[RecordedRequest] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    failures: deque = field(default_factory=deque)

    def fail_next(self, status: int, body: dict | None = None, count: int = 1) -> None:
        """Answer the next ``count`` generation requests with ``status`` and ``body`` (default: Ark's)."""
        if body is None:
            typ, code, msg = ERRORS.get(status, ("InternalServiceError", "InternalServiceError", "Error."))
            body = {"error": {"code": code, "message": msg, "param": "", "type": typ}}
        self.failures.extend([(status, body)] * count)


class ApiError(Exception):
    def __init__(self, message: str, param: str = "", code: str = "InvalidParameter", status: int = 400,
                 type_: str = "BadRequest"):
        super().__init__(message)
        self.status, self.error = status, {"code": code, "message": message, "param": param, "type": type_}


def _invalid(param: str, why: str = "") -> ApiError:
    return ApiError(f"The parameter `{param}` specified in the request is not valid{': ' + why if why else ''}.",
                    param)


def _json(body: Any, status: int = 200, rid: str = "") -> Response:
    return Response(orjson.dumps(body), status, {"x-request-id": rid}, media_type="application/json")


def _check_ref(ref: Any, index: int) -> tuple[int, int] | None:
    """A reference image -> its (width, height), None for an (unfetched) URL."""
    if not isinstance(ref, str):
        raise _invalid("image", "expected a string")
    if ref.startswith(("http://", "https://")):
        return None
    m = re.fullmatch(r"data:image/([A-Za-z]+);base64,(.*)", ref, re.S)
    if not m:
        raise _invalid("image", f"image {index} is neither a URL nor a base64 data URL")
    if m.group(1) != m.group(1).lower():
        raise _invalid("image", f"image {index}: the format in a data URL must be lower case")
    try:
        data = base64.b64decode(m.group(2), validate=True)
        img = Image.open(io.BytesIO(data))
    except (binascii.Error, ValueError, OSError):
        raise _invalid("image", f"image {index} cannot be decoded") from None
    if img.format not in IMAGE_FORMATS:
        raise ApiError(f"The format of image {index} is not supported.", "image",
                       "InvalidParameter.UnsupportedImageFormat")
    w, h = img.size
    if len(data) > 10 * MB or w * h > 6000 * 6000:
        raise ApiError(f"Image {index} exceeds the size limit.", "image", "InvalidParameter.OversizedImage")
    if min(w, h) <= 14 or not 1 / 16 <= w / h <= 16:
        raise _invalid("image", f"image {index} is {w}x{h}")
    return w, h


def _dimensions(spec: dict, size: str, refs: list) -> tuple[int, int]:
    if size in spec["keywords"]:
        side = spec["keywords"][size]
        if side == 0:  # adaptive: the output follows the input
            return refs[0] or (1024, 1024)
        return side, side
    m = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size)
    if not m:
        raise _invalid("size")
    w, h = int(m.group(1)), int(m.group(2))
    (lo, hi), (smin, smax) = spec.get("area", (0, 0)), spec.get("sides", (1, 1 << 20))
    if not (h and lo <= w * h <= hi and 1 / spec["aspect"] <= w / h <= spec["aspect"] and smin <= min(w, h)
            and max(w, h) <= smax):
        raise _invalid("size")
    return w, h


def validate(body: Any, today: date | None = None) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError("The request body is not a valid JSON object.", "", "InvalidParameter")
    if not body.get("model"):
        raise ApiError("The request failed because it is missing `model` parameter.", "model", "MissingParameter")
    spec = MODELS.get(body["model"]) if isinstance(body["model"], str) else None
    if spec is not None and SHUTDOWN.get(body["model"], date.max) <= (today or date.today()):
        spec = None  # a retired id answers as if it had never been
    if spec is None:
        raise ApiError(f"The model or endpoint {body['model']} does not exist or you do not have access to it.",
                       "model", "InvalidEndpointOrModel.NotFound", 404, "NotFound")
    for k, v in body.items():
        if k not in spec["fields"]:
            raise _invalid(k, f"not supported by model {body['model']}")
        want = TYPES[k]
        if not isinstance(v, want) or (isinstance(v, bool) and want is not bool):
            raise _invalid(k, "wrong type")
        if k in ENUMS and v not in ENUMS[k]:
            raise _invalid(k)
        if k in RANGES and not RANGES[k][0] <= v <= RANGES[k][1]:
            raise _invalid(k)
    if not (body.get("prompt") or "").strip():
        raise ApiError("The request failed because it is missing `prompt` parameter.", "prompt", "MissingParameter")
    raw = body.get("image")
    refs = [_check_ref(r, i) for i, r in enumerate([raw] if isinstance(raw, str) else raw or [])]
    lo, hi = spec["refs"]
    if lo and not refs:
        raise ApiError("The request failed because it is missing `image` parameter.", "image", "MissingParameter")
    if len(refs) > hi:
        raise _invalid("image", f"at most {hi} images")
    size = body.get("size", spec["default"])
    if spec["default"] == "adaptive" and size != "adaptive":
        raise _invalid("size", "must be adaptive")
    dims = _dimensions(spec, size, refs)
    opts = body.get("sequential_image_generation_options") or {}
    if set(opts) - {"max_images"} or not isinstance(opts.get("max_images", 15), int) \
            or not 1 <= opts.get("max_images", 15) <= 15:
        raise _invalid("sequential_image_generation_options.max_images")
    count = 1
    if body.get("sequential_image_generation") == "auto":
        count = opts.get("max_images", 15)
        if len(refs) + count > 15:
            raise _invalid("sequential_image_generation_options.max_images",
                           "reference images + generated images must not exceed 15")
    if "optimize_prompt_options" in body:
        optimize = body["optimize_prompt_options"]
        if set(optimize) - {"mode"} or optimize.get("mode", "standard") not in spec["optimize"]:
            raise _invalid("optimize_prompt_options.mode")
    if any(t != {"type": "web_search"} for t in body.get("tools") or []):
        raise _invalid("tools")
    return {**body, "_dims": dims, "_count": count}


@functools.lru_cache(maxsize=32)
def render(prompt: str, seed: int, index: int, w: int, h: int, fmt: str, watermark: bool) -> bytes:
    colour = tuple(hashlib.sha256(f"{prompt}\0{seed}\0{index}".encode()).digest()[:3])
    img = Image.new("RGB", (w, h), colour)
    draw = ImageDraw.Draw(img)
    draw.text((8, 8), f"#{index} {prompt[:40]}", fill=(255, 255, 255))
    if watermark:  # the real mark reads "AI生成", bottom right
        draw.rectangle((w - 64, h - 24, w - 4, h - 4), fill=(255, 255, 255))
        draw.text((w - 56, h - 20), "AI", fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG" if fmt == "png" else "JPEG", **({"compress_level": 1} if fmt == "png" else {"quality": 80}))
    return buf.getvalue()


def _items(p: dict, state: ArkEmulatorState, request: Request):
    """(index, data item) per image the "model" makes."""
    made = p["_count"] if p.get("sequential_image_generation") != "auto" else \
        min(p["_count"], state.group_size or p["_count"])
    seed = p.get("seed", -1)
    seed = secrets.randbelow(2**31) if seed == -1 else seed
    w, h = p["_dims"]
    fmt = p.get("output_format", "jpeg")
    for i in range(made):
        if i in state.withhold:
            yield i, {"error": dict(SENSITIVE_OUT)}
            continue
        data = render(p["prompt"], seed, i, w, h, fmt, p.get("watermark", True))
        if p.get("response_format", "url") == "url":
            name = f"{secrets.token_hex(12)}_{i}.{'png' if fmt == 'png' else 'jpeg'}"
            state.files[name] = data
            host = request.headers.get("host", f"{request.url.hostname}:{request.url.port}")
            item = {"url": f"{request.url.scheme}://{host}/ark-content/{name}?X-Tos-Expires=86400"}
        else:
            item = {"b64_json": base64.b64encode(data).decode()}
        yield i, {**item, "size": f"{w}x{h}"}


def _usage(items: list[dict], p: dict) -> dict[str, int]:
    ok = sum(1 for item in items if "error" not in item)
    tokens = ok * p["_dims"][0] * p["_dims"][1] // 256
    return {"generated_images": ok, "output_tokens": tokens, "total_tokens": tokens}


def _sse(payload: dict | str) -> bytes:
    if isinstance(payload, str):
        return b"data: " + payload.encode() + b"\n\n"
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


async def _generate(request: Request) -> Response:
    state: ArkEmulatorState = request.app.state.emulator
    rid = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(8)
    try:
        body: Any = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    state.requests.append(RecordedRequest(request.method, request.url.path,
                                          {k.lower(): v for k, v in request.headers.items()},
                                          body if isinstance(body, dict) else {"_raw": body}))
    deadline = time.monotonic() + state.delay
    while (left := deadline - time.monotonic()) > 0:
        if await request.is_disconnected():
            return Response(status_code=499)
        await asyncio.sleep(min(left, 0.05))
    try:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != state.api_key:
            raise ApiError(ERRORS[401][2], "", "AuthenticationError", 401, "Unauthorized")
        if state.failures:
            status, fail_body = state.failures.popleft()
            return _json(fail_body, status, rid)
        if "json" not in request.headers.get("content-type", ""):
            raise ApiError("The request Content-Type must be application/json.", "", "InvalidParameter")
        p = validate(body, state.today)
        needle = state.refuse_prompts_containing
        if needle and needle.lower() in p["prompt"].lower():
            raise ApiError("The request failed because the input text may contain sensitive information.",
                           "prompt", "InputTextSensitiveContentDetected")
    except ApiError as exc:
        exc.error["message"] += f" Request id: {rid}"
        return _json({"error": exc.error}, exc.status, rid)
    created, model = int(time.time()), p["model"]
    if not p.get("stream"):
        items = [item for _, item in _items(p, state, request)]
        return _json({"model": model, "created": created, "data": items, "usage": _usage(items, p)}, 200, rid)
    made = _items(p, state, request)
    first = next(made, None)  # the headers go out only once the first image is ready

    async def events():
        done = []
        for i, item in ([first] if first else []) + list(made):
            done.append(item)
            kind = "partial_failed" if "error" in item else "partial_succeeded"
            yield _sse({"type": f"image_generation.{kind}", "model": model, "created": created,
                        "image_index": i, **item})
            await asyncio.sleep(0)
        yield _sse({"type": "image_generation.completed", "model": model, "created": created,
                    "usage": _usage(done, p)})
        yield _sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream", headers={"x-request-id": rid})


async def _content(request: Request) -> Response:
    data = request.app.state.emulator.files.get(request.path_params["name"])
    if data is None:
        return Response(b"<Error><Code>NoSuchKey</Code></Error>", 404, media_type="application/xml")
    return Response(data, media_type="image/png" if data.startswith(b"\x89PNG") else "image/jpeg")


async def _not_found(request: Request) -> Response:
    return _json({"error": {"code": "NotFound", "message": f"{request.method} {request.url.path} not found",
                            "param": "", "type": "NotFound"}}, 404)


def create_app(state: ArkEmulatorState | None = None) -> Starlette:
    app = Starlette(routes=[
        Route("/api/v3/images/generations", _generate, methods=["POST"]),
        Route("/ark-content/{name}", _content, methods=["GET"]),
        Route("/{path:path}", _not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ])
    app.state.emulator = state if state is not None else ArkEmulatorState()
    return app
