"""Strict loopback emulator of Alibaba Cloud DashScope's native Qwen-Image API.

Authority: ../shared/upstreams/dashscope.md. Serve it with
``tests.emulators.server.serve(create_app(state))`` in the tests, or in-process (see pixelgate.simulators); clients use ``<base>/api/v1``.

  POST /api/v1/services/aigc/multimodal-generation/generation   sync, every Qwen-Image model
  POST /api/v1/services/aigc/text2image/image-synthesis         async (``X-DashScope-Async: enable``),
                                                                 qwen-image and qwen-image-plus only
  GET  /api/v1/tasks/{task_id}     PENDING -> RUNNING -> SUCCEEDED (or FAILED ...), always HTTP 200
  GET  /oss/{name}?Expires=&Signature=   the result images (no key, like OSS signed URLs)

Errors are flat ``{"request_id", "code", "message"}``. Choices where the reference is silent or
marked unconfirmed:

* Unknown keys in ``parameters``, ``input`` or a content part are refused (400 InvalidParameter)
  where DashScope may ignore them, so a client sending a field DashScope lacks is caught.
* Image parts must be base64 data URLs; http(s) URLs are not fetched (400 InvalidURL).
* Generation models take no image part; edit models take 1-3, before the one text part.
* qwen-image-edit refuses ``size`` and ``prompt_extend``; both 1472*1104 and 1472*1140 (and their
  transposes) are accepted for the fixed-size models, since sources disagree.
* Unknown model: 404 ModelNotFound. A model without an async route on the async endpoint: 400.
  The async endpoint without its header: 403 AccessDenied (as practitioners report).
* Moderation (prompt containing ``refuse_prompts_containing``): sync answers HTTP 400
  DataInspectionFailed; an async task is accepted and then ends FAILED with that code (HTTP 200).
* A prompt over 800 characters is truncated, not refused. Unknown task ids answer UNKNOWN.
* ``delay`` and ``fail_next`` apply to /api/v1 (the delay before the key check, failures after it).
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
from datetime import datetime
from typing import Any

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["MODELS", "DashScopeEmulatorState", "RecordedRequest", "create_app"]

MB = 1024 * 1024
MAX_SEED = 2147483647
FIXED = ("1664*928", "1472*1104", "1328*1328", "1104*1472", "928*1664", "1472*1140", "1140*1472")
_ALL_PARAMS = frozenset({"size", "n", "negative_prompt", "prompt_extend", "watermark", "seed"})
_GEN = {"sizes": FIXED, "default": (1664, 928), "n_max": 1, "images": (0, 0), "params": _ALL_PARAMS}
_EDIT_PLUS = {"sizes": (512, 2048), "default": None, "n_max": 6, "images": (1, 3), "params": _ALL_PARAMS}
# model -> size rule (fixed list, (min side, max side), or None: not accepted), default size,
# n limit, (min, max) image parts, accepted parameters, whether the async endpoint serves it
MODELS: dict[str, dict[str, Any]] = {
    "qwen-image": {**_GEN, "async": True},
    "qwen-image-plus": {**_GEN, "async": True},
    "qwen-image-max": {**_GEN, "async": False},
    "qwen-image-edit": {"sizes": None, "default": None, "n_max": 1, "images": (1, 3), "async": False,
                        "params": _ALL_PARAMS - {"size", "prompt_extend"}},
    "qwen-image-edit-plus": {**_EDIT_PLUS, "async": False},
    "qwen-image-edit-max": {**_EDIT_PLUS, "async": False},
    # Qwen-Image 2.0: any W*H of 512*512..2048*2048 pixels, 1-6 images, 0-3 input images
    **{m: {"sizes": ("pixels", 512 * 512, 2048 * 2048), "default": (2048, 2048), "n_max": 6, "images": (0, 3),
           "params": _ALL_PARAMS, "async": False} for m in ("qwen-image-2.0", "qwen-image-2.0-pro")},
}
TYPES = {"size": str, "n": int, "negative_prompt": str, "prompt_extend": bool, "watermark": bool, "seed": int}
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
DEFAULT_ERRORS = {  # fail_next() without a body: status -> (code, message)
    400: ("InvalidParameter", "The request is invalid."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    500: ("InternalError", "An internal error has occured, please try again later or contact service support."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable, please try again later."),
}
MODERATION = ("DataInspectionFailed", "Input data may contain inappropriate content.")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # JSON body; image data URLs summarised as {"mime", "bytes", "width", "height"}


@dataclass
class DashScopeEmulatorState:
    api_key: str = "sk-dashscope-emulator"
    delay: float = 0.0
    pending_seconds: float = 0.3  # a task is PENDING for the first half of this, then RUNNING
    refuse_prompts_containing: str = "forbidden"
    requests: list[RecordedRequest] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    failures: deque = field(default_factory=deque)  # (path part, status, body)
    task_failures: deque = field(default_factory=deque)  # (task_status, code, message)

    def fail_next(self, status: int, body: dict | None = None, count: int = 1, path: str = "") -> None:
        """Answer the next ``count`` API requests whose path contains ``path`` with ``status``/``body``
        (default: DashScope's flat error for that status; status 200 sends an error in a 200 body)."""
        if body is None:
            code, message = DEFAULT_ERRORS.get(status, ("InternalError", f"HTTP {status}"))
            body = {"code": code, "message": message}
        self.failures.extend([(path, status, body)] * count)

    def fail_task_next(self, code: str = "InternalError.Algo", message: str = "Algorithm processing failed.",
                       status: str = "FAILED", count: int = 1) -> None:
        """Make the next ``count`` submitted tasks end with ``status`` (FAILED, CANCELED, UNKNOWN)."""
        self.task_failures.extend([(status, code, message)] * count)

    @property
    def api_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith("/api/")]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidParameter", message)


def _decode_image(value: Any, where: str) -> Image.Image:
    if not isinstance(value, str):
        raise _invalid(f"{where} must be a string (URL or data URL).")
    m = re.fullmatch(r"data:(image/[\w.+-]+);base64,(.*)", value, re.S)
    if not m:
        raise ApiError(400, "InvalidURL", f"The provided URL does not appear to be valid: {where}. "
                       "(emulator: only base64 data URLs are accepted)")
    try:
        data = base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{where}: the base64 data is malformed.") from None
    if len(data) > 10 * MB:
        raise ApiError(400, "InvalidParameter", f"{where}: the image exceeds 10 MB.")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception:
        raise ApiError(400, "InvalidParameter.DataInspection", f"{where}: the media format is not supported.") from None
    if img.format not in IMAGE_FORMATS:
        raise ApiError(400, "InvalidParameter.DataInspection", f"{where}: the media format is not supported.")
    return img


def _summarise(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: _summarise(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_summarise(v) for v in body]
    if isinstance(body, str) and body.startswith("data:"):
        m = re.fullmatch(r"data:([^;,]+);base64,(.*)", body, re.S)
        try:
            data = base64.b64decode(m.group(2)) if m else b""
            w, h = Image.open(io.BytesIO(data)).size
        except Exception:
            return {"mime": m.group(1) if m else None, "bytes": None, "width": None, "height": None}
        return {"mime": m.group(1), "bytes": len(data), "width": w, "height": h}
    return body


def _model(body: dict, asynchronous: bool) -> str:
    model = body.get("model")
    if not model:
        raise ApiError(400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    if not isinstance(model, str) or model not in MODELS:
        raise ApiError(404, "ModelNotFound", f"Model not exist: {model}")
    if asynchronous and not MODELS[model]["async"]:
        raise _invalid(f"Model {model} does not support asynchronous calls on this endpoint; "
                       "use /services/aigc/multimodal-generation/generation.")
    return model


def _parameters(body: dict, model: str) -> dict[str, Any]:
    spec, params = MODELS[model], body.get("parameters", {})
    if not isinstance(params, dict):
        raise _invalid("parameters must be an object.")
    for k, v in params.items():
        if k not in spec["params"]:
            raise _invalid(f"Parameter '{k}' is not supported by model {model}.")
        if type(v) is not TYPES[k]:
            raise _invalid(f"Parameter '{k}' must be of type {TYPES[k].__name__}.")
    if "n" in params and not 1 <= params["n"] <= spec["n_max"]:
        raise _invalid(f"n must be in [1, {spec['n_max']}] for model {model}.")
    if "seed" in params and not 0 <= params["seed"] <= MAX_SEED:
        raise _invalid(f"seed must be in [0, {MAX_SEED}].")
    if len(params.get("negative_prompt", "")) > 500:
        raise _invalid("negative_prompt must be at most 500 characters.")
    if "size" in params:
        m = re.fullmatch(r"(\d+)\*(\d+)", params["size"])
        if not m:
            raise _invalid(f"Invalid size: {params['size']}. Expected format: '<width>*<height>'.")
        w, h = int(m.group(1)), int(m.group(2))
        rule = spec["sizes"]
        if rule and rule[0] == "pixels":
            if not rule[1] <= w * h <= rule[2]:
                raise _invalid(f"size: total pixels must be in [{rule[1]}, {rule[2]}].")
        elif isinstance(rule, tuple) and isinstance(rule[0], str) and params["size"] not in rule:
            raise _invalid(f"size must be one of {', '.join(rule[:5])}")
        if isinstance(rule[0], int) and not all(rule[0] <= v <= rule[1] for v in (w, h)):
            raise _invalid(f"size: width and height must each be in [{rule[0]}, {rule[1]}].")
        params = {**params, "_wh": (w, h)}
    return params


def _check_sync(body: dict) -> dict[str, Any]:
    if "messages" in body:
        raise _invalid("messages must be placed under input.")
    model = _model(body, asynchronous=False)
    inp = body.get("input")
    if not isinstance(inp, dict) or not inp:
        raise ApiError(400, "BadRequest.EmptyInput", 'Required parameter "input" missing from request.')
    if set(inp) != {"messages"}:
        raise _invalid(f"input takes only messages; got {sorted(inp)}.")
    messages = inp["messages"]
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
        raise _invalid("input.messages must hold exactly one message.")
    msg = messages[0]
    if msg.get("role") != "user" or set(msg) != {"role", "content"} or not isinstance(msg["content"], list):
        raise _invalid("The message must be {\"role\": \"user\", \"content\": [...]}.")
    texts, images = [], []
    for i, part in enumerate(msg["content"]):
        if not isinstance(part, dict) or len(part) != 1 or next(iter(part)) not in ("text", "image"):
            raise _invalid(f"content[{i}] must be {{\"text\": ...}} or {{\"image\": ...}}.")
        if "text" in part:
            if not isinstance(part["text"], str):
                raise _invalid(f"content[{i}].text must be a string.")
            texts.append(part["text"])
        else:
            if texts:
                raise _invalid("Image parts must come before the text part.")
            images.append(_decode_image(part["image"], f"content[{i}].image"))
    if len(texts) != 1 or not texts[0].strip():
        raise _invalid("The message must hold exactly one non-empty text part.")
    lo, hi = MODELS[model]["images"]
    if not lo <= len(images) <= hi:
        raise _invalid(f"Model {model} takes {lo}-{hi} input images; got {len(images)}." if hi
                       else f"Model {model} takes no input image.")
    return {"model": model, "prompt": texts[0][:800], "images": images, "params": _parameters(body, model)}


def _check_async(body: dict) -> dict[str, Any]:
    model = _model(body, asynchronous=True)
    inp = body.get("input")
    if not isinstance(inp, dict) or not inp:
        raise ApiError(400, "BadRequest.EmptyInput", 'Required parameter "input" missing from request.')
    for k in inp:
        if k not in ("prompt", "negative_prompt"):  # Wan models take negative_prompt here: accepted
            raise _invalid(f"input.{k} is not supported; the prompt goes in input.prompt.")
    prompt = inp.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _invalid("input.prompt must be a non-empty string.")
    return {"model": model, "prompt": prompt[:800], "images": [], "params": _parameters(body, model)}


def _dimensions(p: dict[str, Any]) -> tuple[int, int]:
    if "_wh" in p["params"]:
        return p["params"]["_wh"]
    if MODELS[p["model"]]["default"]:
        return MODELS[p["model"]]["default"]
    last = p["images"][-1]  # edits keep the last input's aspect ratio at about 1024*1024
    ratio = last.width / last.height
    return round(math.sqrt(MB * ratio) / 16) * 16, round(math.sqrt(MB / ratio) / 16) * 16


def _render(state: DashScopeEmulatorState, request: Request, p: dict[str, Any], index: int) -> str:
    """A real PNG of the right size, stored under /oss/; returns its signed-looking URL."""
    w, h = _dimensions(p)
    colour = tuple(hashlib.sha256(f"{p['prompt']}\0{p['params'].get('seed')}\0{index}".encode()).digest()[:3])
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, "PNG", compress_level=1)
    name = f"{uuid.uuid4().hex}.png"
    state.files[name] = buf.getvalue()
    expires = int(time.time()) + 86400
    return f"{request.url.scheme}://{request.url.netloc}/oss/{name}?Expires={expires}&Signature={secrets.token_hex(8)}"


def _refused(state: DashScopeEmulatorState, prompt: str) -> bool:
    needle = state.refuse_prompts_containing
    return bool(needle) and needle.lower() in prompt.lower()


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


async def _sync(request: Request, state: DashScopeEmulatorState, body: dict, rid: str) -> Response:
    p = _check_sync(body)
    if _refused(state, p["prompt"]):
        raise ApiError(400, *MODERATION)
    n = p["params"].get("n", 1)
    urls = [_render(state, request, p, i) for i in range(n)]
    w, h = _dimensions(p)
    return _json({"output": {"choices": [{"finish_reason": "stop", "message": {
        "role": "assistant", "content": [{"image": url} for url in urls]}}],
        "task_metric": {"TOTAL": n, "SUCCEEDED": n, "FAILED": 0}},
        "usage": {"width": w, "height": h, "image_count": n}, "request_id": rid})


async def _submit(request: Request, state: DashScopeEmulatorState, body: dict, rid: str) -> Response:
    if request.headers.get("x-dashscope-async", "").lower() != "enable":
        raise ApiError(403, "AccessDenied", "current user api does not support synchronous calls")
    p = _check_async(body)
    task_id = str(uuid.uuid4())
    outcome = state.task_failures.popleft() if state.task_failures else None
    if outcome is None and _refused(state, p["prompt"]):
        outcome = ("FAILED", *MODERATION)
    state.tasks[task_id] = {"p": p, "submitted": time.time(), "outcome": outcome, "urls": None}
    return _json({"output": {"task_status": "PENDING", "task_id": task_id}, "request_id": rid})


def _task(request: Request, state: DashScopeEmulatorState, task_id: str, rid: str) -> Response:
    task = state.tasks.get(task_id)
    if task is None:
        return _json({"request_id": rid, "output": {"task_id": task_id, "task_status": "UNKNOWN"}})
    age = time.time() - task["submitted"]
    output: dict[str, Any] = {"task_id": task_id, "submit_time": _stamp(task["submitted"])}
    if age < state.pending_seconds:
        output["task_status"] = "PENDING" if age < state.pending_seconds / 2 else "RUNNING"
        return _json({"request_id": rid, "output": output})
    output["end_time"] = _stamp(task["submitted"] + state.pending_seconds)
    if task["outcome"]:
        status, code, message = task["outcome"]
        output["task_status"] = status
        if status == "FAILED":
            output.update(code=code, message=message)
        return _json({"request_id": rid, "output": output})
    p = task["p"]
    if task["urls"] is None:
        task["urls"] = [_render(state, request, p, i) for i in range(p["params"].get("n", 1))]
    extended = p["params"].get("prompt_extend", True)  # DashScope rewrites unless told not to
    output.update(task_status="SUCCEEDED", results=[
        {"orig_prompt": p["prompt"], "actual_prompt": f"{p['prompt']}, richly detailed" if extended else p["prompt"],
         "url": url} for url in task["urls"]],
        task_metrics={"TOTAL": len(task["urls"]), "SUCCEEDED": len(task["urls"]), "FAILED": 0})
    return _json({"request_id": rid, "output": output, "usage": {"image_count": len(task["urls"])}})


def _endpoint(kind: str):
    async def handler(request: Request) -> Response:
        state: DashScopeEmulatorState = request.app.state.emulator
        rid = str(uuid.uuid4())
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        state.requests.append(RecordedRequest(request.method, request.url.path,
                                              {k.lower(): v for k, v in request.headers.items()}, _summarise(body)))
        if state.delay:
            await asyncio.sleep(state.delay)
        try:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "InvalidApiKey", "No API-key provided.")
            if token.strip() != state.api_key:
                raise ApiError(401, "InvalidApiKey", "Invalid API-key provided.")
            for i, (part, status, fail_body) in enumerate(state.failures):
                if part in request.url.path:
                    del state.failures[i]
                    return _json({"request_id": rid, **fail_body}, status)
            if kind == "task":
                return _task(request, state, request.path_params["task_id"], rid)
            if "application/json" not in request.headers.get("content-type", ""):
                raise _invalid("Content-Type must be application/json.")
            if not isinstance(body, dict):
                raise _invalid("The request body is not a valid JSON object.")
            return await (_sync if kind == "sync" else _submit)(request, state, body, rid)
        except ApiError as exc:
            return _json({"request_id": rid, "code": exc.code, "message": exc.message}, exc.status)
    return handler


async def _file(request: Request) -> Response:
    state: DashScopeEmulatorState = request.app.state.emulator
    state.requests.append(RecordedRequest("GET", request.url.path, {}, None))
    data = state.files.get(request.path_params["name"])
    if data is None or not request.query_params.get("Expires"):
        return Response(b"<Error><Code>NoSuchKey</Code></Error>", 404, media_type="application/xml")
    return Response(data, media_type="image/png")


def create_app(state: DashScopeEmulatorState | None = None) -> Starlette:
    app = Starlette(routes=[
        Route("/api/v1/services/aigc/multimodal-generation/generation", _endpoint("sync"), methods=["POST"]),
        Route("/api/v1/services/aigc/text2image/image-synthesis", _endpoint("async"), methods=["POST"]),
        Route("/api/v1/tasks/{task_id}", _endpoint("task"), methods=["GET"]),
        Route("/oss/{name}", _file, methods=["GET"]),
    ])
    app.state.emulator = state if state is not None else DashScopeEmulatorState()
    return app
