"""Strict loopback emulator of the Black Forest Labs API (``api.bfl.ai``).

Authority: ../shared/upstreams/bfl.md.  Serve it with ``serve(create_app(state))``; clients
use ``<base>/v1``.  Every model is asynchronous: ``POST /v1/<model>`` answers
``{id, polling_url}``; ``GET <polling_url>`` (``/v1/get_result?id=``) answers ``Pending`` for
``state.pending_seconds``, then the final status; ``result.sample`` is a URL on this emulator
(``GET /results/<name>?se=<expiry>``, no key, gone after ``state.url_ttl``).

Choices where the reference is silent or marked unconfirmed:

* Missing ``x-key`` -> 403 ``{"detail": "Not authenticated"}`` (FastAPI's APIKeyHeader);
  a wrong one -> 401 ``{"detail": "Invalid API key"}``.
* Request schemas forbid unknown fields (422 ``extra_forbidden``), so an adapter cannot lean
  on fields the real API might silently ignore.  Types are strict (no "5" for 5).
* Images are bare base64 or http(s) URLs (URLs are not fetched); a ``data:`` URL or bytes
  that are not an image -> 400 ``{"detail": ...}``.  Kontext refuses ``safety_tolerance`` > 2
  with an input image, FLUX.2 more than 4 MP, Fill a mask of another size or, without a mask,
  an image with no transparency (all 422 ``value_error``).
* FLUX 3 Image (``/v1/flux-3-image``) takes exactly ``prompt`` (required), ``images`` (a list
  of at most 10), ``aspect_ratio`` (``auto`` or one of 15 ratios), ``resolution`` (``768sq``,
  ``1k``, ``1.5k``, ``2k``, ``4k``), ``grounding`` and ``safety_tolerance`` 0-4: no seed,
  width/height, output_format or webhooks.  It delivers JPEG at the resolution's area (768x768,
  1, 1536x1536, 4 or 16 MP) in multiples of 16, at the ratio asked, else the first image's, else
  16:9; its sample lives an hour (``state.flux3_url_ttl``), and ``result.prompt`` is the
  expanded prompt (the prompt plus ``EXPANSION``), with no seed.
* Output sizes: FLUX.2 width/height, else the first input image's, else 1024x1024; Kontext
  about 1 MP and Ultra about 4 MP at ``aspect_ratio`` (default: the input image's, else 1:1 /
  16:9), multiples of 32; FLUX1.1 [pro] and [dev] width/height (default 1024x768); Fill the
  image's size.  Formats per ``output_format`` with each model's default.
* A prompt containing ``refuse_prompts_containing`` ends in ``Request Moderated``;
  ``finish_next(status)`` forces the final status of the next jobs (``Error``,
  ``Content Moderated``, ``Task not found``, ...).  Active-task limits: 24 per key, 6 for
  ``flux-kontext-max`` (429).  ``fail_next(status, body, count, on="submit"|"poll")`` answers
  the next requests of that kind with ``status``/``body``; ``delay`` slows submits only.
* ``polling_path`` / ``polling_base`` move the polling URL (another path or host), as BFL's
  multi-cluster hosts do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import math
import re
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["MODELS", "BFLEmulatorState", "RecordedRequest", "create_app"]

MP = 1024 * 1024


def _f(kind: str, lo: float | None = None, hi: float | None = None, mult: int | None = None,
       enum: tuple | None = None) -> dict[str, Any]:
    return {"kind": kind, "lo": lo, "hi": hi, "mult": mult, "enum": enum}


def _refs(n: int) -> dict[str, dict]:
    return {("input_image" if i == 1 else f"input_image_{i}"): _f("image") for i in range(1, n + 1)}


COMMON = {"prompt": _f("str"), "seed": _f("int"), "safety_tolerance": _f("int", 0, 6),
          "output_format": _f("str", enum=("jpeg", "png")), "prompt_upsampling": _f("bool"),
          "webhook_url": _f("str"), "webhook_secret": _f("str")}
FLUX2 = {**COMMON, **_refs(8), "safety_tolerance": _f("int", 0, 5), "width": _f("int", 64, None, 16),
         "height": _f("int", 64, None, 16), "disable_pup": _f("bool")}
KLEIN = {k: v for k, v in FLUX2.items() if k not in _refs(8) or k in _refs(4)}
FLEX = {**FLUX2, "steps": _f("int", 1, 50), "guidance": _f("num", 1.5, 10)}
KONTEXT = {**COMMON, **_refs(4), "aspect_ratio": _f("ratio")}
PRO11 = {**COMMON, "image_prompt": _f("image"), "width": _f("int", 256, 1440, 32),
         "height": _f("int", 256, 1440, 32)}
DEV = {**PRO11, "steps": _f("int", 1, 50), "guidance": _f("num", 1.5, 5)}
ULTRA = {**COMMON, "image_prompt": _f("image"), "image_prompt_strength": _f("num", 0, 1),
         "aspect_ratio": _f("ratio"), "raw": _f("bool")}
FLUX3_RATIOS = ("auto", "21:9", "2:1", "16:9", "3:2", "7:5", "4:3", "5:4", "1:1", "4:5", "3:4", "5:7",
                "2:3", "9:16", "1:2", "9:21")
FLUX3_AREAS = {"768sq": 768 * 768, "1k": MP, "1.5k": 1536 * 1536, "2k": 4 * MP, "4k": 16 * MP}
FLUX3 = {"prompt": _f("str"), "images": _f("images", hi=10), "aspect_ratio": _f("str", enum=FLUX3_RATIOS),
         "resolution": _f("str", enum=tuple(FLUX3_AREAS)), "grounding": _f("bool"),
         "safety_tolerance": _f("int", 0, 4)}
EXPANSION = ", rendered in crisp detail with balanced composition"
FILL = {**COMMON, "image": _f("image"), "mask": _f("image"), "steps": _f("int", 15, 50),
        "guidance": _f("num", 1.5, 100)}
# endpoint -> schema, required fields, default output format, how the output size is chosen
MODELS: dict[str, dict[str, Any]] = {
    **{m: {"schema": s, "required": ("prompt",), "format": "jpeg", "size": "flux2"}
       for m, s in (("flux-2-pro", FLUX2), ("flux-2-max", FLUX2), ("flux-2-flex", FLEX),
                    ("flux-2-klein-4b", KLEIN), ("flux-2-klein-9b", KLEIN))},
    "flux-kontext-pro": {"schema": KONTEXT, "required": ("prompt",), "format": "png", "size": "kontext"},
    "flux-kontext-max": {"schema": KONTEXT, "required": ("prompt",), "format": "png", "size": "kontext"},
    "flux-pro-1.1": {"schema": PRO11, "required": (), "format": "jpeg", "size": "wh"},
    "flux-dev": {"schema": DEV, "required": (), "format": "jpeg", "size": "wh"},
    "flux-pro-1.1-ultra": {"schema": ULTRA, "required": (), "format": "jpeg", "size": "ultra"},
    "flux-pro-1.0-fill": {"schema": FILL, "required": ("image",), "format": "jpeg", "size": "fill"},
    "flux-3-image": {"schema": FLUX3, "required": ("prompt",), "format": "jpeg", "size": "flux3"},
}
ACTIVE_LIMITS = {"flux-kontext-max": 6}  # every other endpoint: DEFAULT_ACTIVE_LIMIT
DEFAULT_ACTIVE_LIMIT = 24
TYPES = {"str": (str,), "int": (int,), "num": (int, float), "bool": (bool,), "image": (str,), "ratio": (str,),
         "images": (list,)}
TYPE_ERRORS = {"str": ("string_type", "Input should be a valid string"),
               "int": ("int_type", "Input should be a valid integer"),
               "num": ("float_type", "Input should be a valid number"),
               "bool": ("bool_type", "Input should be a valid boolean"),
               "image": ("string_type", "Input should be a valid string"),
               "ratio": ("string_type", "Input should be a valid string"),
               "images": ("list_type", "Input should be a valid list")}
DEFAULT_BODIES = {402: "Insufficient credits. Add credits at https://dashboard.bfl.ai.",
                  429: "You have exceeded the number of active tasks. Wait for some to finish.",
                  500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
FINAL = ("Ready", "Request Moderated", "Content Moderated", "Error", "Task not found")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    fields: dict[str, Any]  # the JSON body, images replaced by {width, height, format, bytes}
    images: dict[str, Image.Image] = field(default_factory=dict)  # decoded input images by field


@dataclass
class Task:
    id: str
    model: str
    key: str
    prompt: str
    seed: int
    size: tuple[int, int]
    fmt: str
    created: float
    finish_at: float
    final: str
    details: dict | None = None
    sample: str | None = None


@dataclass
class BFLEmulatorState:
    api_key: str = "bfl-emulator-key"
    delay: float = 0.0
    pending_seconds: float = 0.2
    refuse_prompts_containing: str = "forbidden"
    url_ttl: float = 600.0  # result.sample lifetime (real API: 10 minutes)
    flux3_url_ttl: float = 3600.0  # FLUX 3 Image's: an hour
    polling_path: str = "/v1/get_result"
    polling_base: str | None = None  # e.g. another emulator's base URL; None: this host
    requests: list[RecordedRequest] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str, float]] = field(default_factory=dict)  # name -> (bytes, mime, expiry)
    failures: dict[str, deque] = field(default_factory=lambda: {"submit": deque(), "poll": deque()})
    outcomes: deque = field(default_factory=deque)  # (status, details) for the next jobs

    def fail_next(self, status: int, body: Any = None, count: int = 1, on: str = "submit") -> None:
        """Answer the next ``count`` submits (or polls) with ``status`` and ``body``."""
        if body is None:
            body = {"detail": DEFAULT_BODIES.get(status, HTTPStatus(status).phrase)}
        self.failures[on].extend([(status, body)] * count)

    def finish_next(self, status: str, count: int = 1, details: dict | None = None) -> None:
        """End the next ``count`` jobs in ``status`` instead of Ready."""
        assert status in FINAL, status
        self.outcomes.extend([(status, details)] * count)

    def submits(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    def polls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/get_result")]


class ApiError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status, self.body = status, {"detail": detail}


def _err(kind: str, loc: str, msg: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": ["body", loc], "msg": msg, "input": value}


def _ratio(text: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"(\d+):(\d+)", text)
    if not m or not int(m[1]) or not int(m[2]) or not 9 / 21 <= int(m[1]) / int(m[2]) <= 21 / 9:
        return None
    return int(m[1]), int(m[2])


def _decode(name: str, value: str) -> Image.Image | None:
    if value.startswith(("http://", "https://")):
        return None  # a URL: accepted, not fetched
    try:
        img = Image.open(io.BytesIO(base64.b64decode(value, validate=True)))
        img.load()
        return img
    except (binascii.Error, ValueError, OSError):
        raise ApiError(400, f"Invalid image in '{name}': expected a base64-encoded image or an http(s) "
                            "URL.") from None


def validate(model: str, body: Any) -> tuple[dict[str, Any], dict[str, Image.Image]]:
    """Check a submit body against MODELS; return the params and the decoded images."""
    if not isinstance(body, dict):
        raise ApiError(422, [_err("model_attributes_type", "body", "Input should be a valid dictionary", body)])
    spec = MODELS[model]
    schema, errors = spec["schema"], []
    for name in spec["required"]:
        if body.get(name) is None:
            errors.append(_err("missing", name, "Field required", body))
    for name, value in body.items():
        rule = schema.get(name)
        if rule is None:
            errors.append(_err("extra_forbidden", name, "Extra inputs are not permitted", value))
            continue
        kind = rule["kind"]
        if value is None:
            continue
        if not isinstance(value, TYPES[kind]) or (kind != "bool" and isinstance(value, bool)):
            errors.append(_err(*TYPE_ERRORS[kind][:1], name, TYPE_ERRORS[kind][1], value))
        elif rule["enum"] and value not in rule["enum"]:
            choices = " or ".join(f"'{c}'" for c in rule["enum"])
            errors.append(_err("literal_error", name, f"Input should be {choices}", value))
        elif kind == "images" and len(value) > rule["hi"]:
            errors.append(_err("too_long", name, f"List should have at most {rule['hi']} items after validation, "
                                                  f"not {len(value)}", len(value)))
        elif kind == "images" and (bad := next((i for i, v in enumerate(value) if not isinstance(v, str)), None)) \
                is not None:
            errors.append({**_err("string_type", name, "Input should be a valid string", value[bad]),
                           "loc": ["body", name, bad]})
        elif kind == "images":
            continue
        elif rule["lo"] is not None and value < rule["lo"]:
            errors.append(_err("greater_than_equal", name, f"Input should be greater than or equal to {rule['lo']}", value))
        elif rule["hi"] is not None and value > rule["hi"]:
            errors.append(_err("less_than_equal", name, f"Input should be less than or equal to {rule['hi']}", value))
        elif rule["mult"] and value % rule["mult"]:
            errors.append(_err("multiple_of", name, f"Input should be a multiple of {rule['mult']}", value))
        elif kind == "ratio" and _ratio(value) is None:
            errors.append(_err("value_error", name, "Value error, aspect ratio must be W:H between 21:9 and 9:21", value))
    if errors:
        raise ApiError(422, errors)
    p = {k: v for k, v in body.items() if v is not None}
    if spec["size"] == "flux2" and p.get("width", 1024) * p.get("height", 1024) > 4 * MP:
        raise ApiError(422, [_err("value_error", "width", "Value error, width x height must be at most 4 megapixels",
                                  p["width"])])
    images = {k: img for k, v in p.items() if schema[k]["kind"] == "image" and (img := _decode(k, v)) is not None}
    for k, v in p.items():  # a list of images: image_1, image_2, ... by position (URLs skipped)
        if schema[k]["kind"] == "images":
            images.update({f"{k}[{i}]": img for i, item in enumerate(v)
                           if (img := _decode(f"{k}[{i}]", item)) is not None})
    if spec["size"] == "kontext" and "input_image" in p and p.get("safety_tolerance", 2) > 2:
        raise ApiError(422, [_err("value_error", "safety_tolerance", "Value error, safety_tolerance must be at "
                                  "most 2 when an input image is given", p["safety_tolerance"])])
    if spec["size"] == "fill":
        image, mask = images.get("image"), images.get("mask")
        if mask is not None and image is not None and mask.size != image.size:
            raise ApiError(422, [_err("value_error", "mask", "Value error, mask must have the same dimensions as "
                                      "image", None)])
        if mask is None and "mask" not in p and image is not None and "A" not in image.getbands():
            raise ApiError(422, [_err("value_error", "image", "Value error, without a mask the image needs "
                                      "transparent pixels marking the area to fill", None)])
    return p, images


def _at_ratio(area: int, w: int, h: int) -> tuple[int, int]:
    width = math.sqrt(area * w / h)
    return round(width / 32) * 32, round(width * h / w / 32) * 32


def output_size(model: str, p: dict[str, Any], images: dict[str, Image.Image]) -> tuple[int, int]:
    kind, first = MODELS[model]["size"], images.get("input_image") or images.get("image") or images.get("images[0]")
    if kind == "flux3":
        ratio = p.get("aspect_ratio", "auto")
        w, h = first.size if ratio == "auto" and first else (16, 9) if ratio == "auto" else map(int, ratio.split(":"))
        width = math.sqrt(FLUX3_AREAS[p.get("resolution", "1k")] * w / h)
        return round(width / 16) * 16, round(width * h / w / 16) * 16
    if kind == "flux2":
        if "width" in p or "height" in p:
            return p.get("width", 1024), p.get("height", 1024)
        return first.size if first else (1024, 1024)
    if kind == "wh":
        return p.get("width", 1024), p.get("height", 768)
    if kind == "fill":
        return first.size if first else (1024, 1024)
    ratio = _ratio(p["aspect_ratio"]) if "aspect_ratio" in p else (
        first.size if first and kind == "kontext" else (1, 1) if kind == "kontext" else (16, 9))
    return _at_ratio(MP if kind == "kontext" else 4 * MP, *ratio)


def render(prompt: str, seed: int, size: tuple[int, int], fmt: str) -> bytes:
    colour = tuple(hashlib.sha256(f"{prompt}\0{seed}".encode()).digest()[:3])
    img = Image.new("RGB", size, colour)
    ImageDraw.Draw(img).text((8, 8), f"{seed} {prompt[:60]}", fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "JPEG" if fmt == "jpeg" else "PNG", **({"quality": 85} if fmt == "jpeg" else {"compress_level": 1}))
    return buf.getvalue()


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _summarise(body: Any, images: dict[str, Image.Image]) -> Any:
    if not isinstance(body, dict):
        return body
    out = dict(body)
    for k, img in images.items():
        name, _, index = k.partition("[")  # images[3]: the fourth of a list
        value = body[name][int(index[:-1])] if index else body[name]
        summary = {"width": img.width, "height": img.height, "format": img.format, "bytes": len(value)}
        if index:
            out[name] = list(out[name]) if out[name] is body[name] else out[name]
            out[name][int(index[:-1])] = summary
        else:
            out[k] = summary
    return out


def _record(state: BFLEmulatorState, request: Request, body: Any = None,
            images: dict[str, Image.Image] | None = None) -> None:
    state.requests.append(RecordedRequest(request.method, request.url.path, request.url.query,
                                          {k.lower(): v for k, v in request.headers.items()},
                                          _summarise(body, images or {}), dict(images or {})))


def _check_key(request: Request, state: BFLEmulatorState) -> None:
    key = request.headers.get("x-key")
    if not key:
        raise ApiError(403, "Not authenticated")
    if key != state.api_key:
        raise ApiError(401, "Invalid API key")


def _host(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


async def submit(request: Request) -> Response:
    state: BFLEmulatorState = request.app.state.emulator
    model = request.path_params["model"]
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    images: dict[str, Image.Image] = {}
    try:
        if model not in MODELS:
            _record(state, request, body)
            raise ApiError(404, "Not Found")
        try:
            p, images = validate(model, body)
        except ApiError as exc:
            p, error = None, exc
        else:
            error = None
        _record(state, request, body, images)
        deadline = time.monotonic() + state.delay
        while (left := deadline - time.monotonic()) > 0:
            if await request.is_disconnected():
                return Response(status_code=499)
            await asyncio.sleep(min(left, 0.05))
        _check_key(request, state)
        if state.failures["submit"]:
            status, failure = state.failures["submit"].popleft()
            return _json(failure, status)
        if error is not None:
            raise error
        now, key = time.time(), request.headers["x-key"]
        active = [t for t in state.tasks.values() if t.key == key and t.finish_at > now]
        limit = ACTIVE_LIMITS.get(model, DEFAULT_ACTIVE_LIMIT)
        if len(active) >= DEFAULT_ACTIVE_LIMIT or len([t for t in active if t.model == model]) >= limit:
            raise ApiError(429, DEFAULT_BODIES[429])
        prompt, needle = p.get("prompt", ""), state.refuse_prompts_containing
        final, details = state.outcomes.popleft() if state.outcomes else ("Ready", None)
        if needle and needle.lower() in prompt.lower():
            final, details = "Request Moderated", {"Moderation Reasons": ["Prompt"]}
        if model == "flux-3-image":
            prompt = prompt + EXPANSION  # the model expands every prompt; result.prompt shows it
        task = Task(str(uuid.uuid4()), model, key, prompt, p.get("seed", secrets.randbelow(2**31)),
                    output_size(model, p, images), p.get("output_format", MODELS[model]["format"]), now,
                    now + state.pending_seconds, final, details)
        state.tasks[task.id] = task
        base = state.polling_base or _host(request)
        return _json({"id": task.id, "polling_url": f"{base}{state.polling_path}?id={task.id}"})
    except ApiError as exc:
        return _json(exc.body, exc.status)


async def get_result(request: Request) -> Response:
    state: BFLEmulatorState = request.app.state.emulator
    _record(state, request)
    try:
        _check_key(request, state)
    except ApiError as exc:
        return _json(exc.body, exc.status)
    if state.failures["poll"]:
        status, failure = state.failures["poll"].popleft()
        return _json(failure, status)
    task_id, now = request.query_params.get("id", ""), time.time()
    reply: dict[str, Any] = {"id": task_id, "status": "Task not found", "result": None, "progress": None,
                             "details": None, "preview": None}
    task = state.tasks.get(task_id)
    if task is None or task.key != request.headers["x-key"]:
        return _json(reply)
    if now < task.finish_at:
        progress = round((now - task.created) / max(task.finish_at - task.created, 1e-6), 2)
        return _json({**reply, "status": "Pending", "progress": progress})
    if task.final == "Ready" and task.sample is None:
        ttl = state.flux3_url_ttl if task.model == "flux-3-image" else state.url_ttl
        name, expiry = f"{secrets.token_hex(12)}.{'jpeg' if task.fmt == 'jpeg' else 'png'}", now + ttl
        data = await asyncio.to_thread(render, task.prompt, task.seed, task.size, task.fmt)
        state.files[name] = (data, f"image/{task.fmt}", expiry)
        task.sample = f"{_host(request)}/results/{name}?se={int(expiry)}&sig={secrets.token_hex(8)}"
    if task.final == "Ready":
        result = {"sample": task.sample, "prompt": task.prompt, "seed": task.seed, "start_time": task.created,
                  "end_time": task.finish_at, "duration": round(task.finish_at - task.created, 3)}
        if task.model == "flux-3-image":
            result = {"sample": task.sample, "prompt": task.prompt}  # no seed: the model takes none
        return _json({**reply, "status": "Ready", "result": result})
    return _json({**reply, "status": task.final, "details": task.details})


async def result_file(request: Request) -> Response:
    state: BFLEmulatorState = request.app.state.emulator
    _record(state, request)
    entry = state.files.get(request.path_params["name"])
    if entry is None or time.time() > entry[2]:
        return Response(b"<Error><Code>BlobNotFound</Code></Error>", 404, media_type="application/xml")
    return Response(entry[0], media_type=entry[1])


async def credits(request: Request) -> Response:
    state: BFLEmulatorState = request.app.state.emulator
    try:
        _check_key(request, state)
    except ApiError as exc:
        return _json(exc.body, exc.status)
    return _json({"credits": 1000.0})


async def not_found(request: Request) -> Response:
    _record(request.app.state.emulator, request)
    return _json({"detail": "Not Found"}, 404)


def create_app(state: BFLEmulatorState | None = None) -> Starlette:
    app = Starlette(routes=[
        Route("/v1/get_result", get_result, methods=["GET"]),
        Route("/{cluster}/v1/get_result", get_result, methods=["GET"]),
        Route("/v1/credits", credits, methods=["GET"]),
        Route("/results/{name}", result_file, methods=["GET"]),
        Route("/v1/{model:path}", submit, methods=["POST"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ])
    app.state.emulator = state if state is not None else BFLEmulatorState()
    return app
