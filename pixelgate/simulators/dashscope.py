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
* A model DashScope has shut down answers 404 ModelNotFound from its shutdown date on (``SHUTDOWN``;
  none of the emulated ids has one yet); ``state.today`` moves the emulator's calendar.

Wan 2.7 Image (``wan2.7-image``, ``wan2.7-image-pro``; Alibaba's Wan 2.7 image generation and
editing API reference): the sync endpoint only, one text part and 0-9 image parts in any order,
prompt up to 5000 characters, ``n`` 1-4 (1-12 with ``enable_sequential``), ``size`` 1K/2K or
W*H, 4K and above 2048*2048 pixels only for -pro without input images or image sets, parameters
``thinking_mode``, ``enable_sequential``, ``bbox_list``, ``color_palette``. The W*H range (768*768
to 2048*2048 pixels, 4096*4096 for -pro text-to-image, aspect 1:8 to 8:1) is from third-party
copies of the reference, not read in the vendor's own text.

Qwen-Image 3.0 (``qwen-image-3.0``, ``-pro``): no vendor document was read; from third-party API
schemas (Comfy Router, ComfyUI): generation and edits of 0-3 images, ``n`` 1-6, W*H of 512*512 to
2560*2560 pixels at 1:8 to 8:1, ``prompt_extend_mode`` direct | agent (agent without images).
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
from datetime import date, datetime
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
_QWEN = {"text_last": True, "prompt_max": 800, "edit_area": MB, "image_mb": 10}
_GEN = {**_QWEN, "sizes": FIXED, "default": (1664, 928), "n_max": 1, "images": (0, 0), "params": _ALL_PARAMS}
_EDIT_PLUS = {**_QWEN, "sizes": (512, 2048), "default": None, "n_max": 6, "images": (1, 3), "params": _ALL_PARAMS}
_WAN_PARAMS = frozenset({"size", "n", "watermark", "seed", "thinking_mode", "enable_sequential", "bbox_list",
                         "color_palette"})
_WAN = {"text_last": False, "prompt_max": 5000, "edit_area": 2048 * 2048, "image_mb": 20, "default": None,
        "n_max": 4, "images": (0, 9), "async": False, "params": _WAN_PARAMS}
# model -> size rule (fixed list, (min side, max side), ("pixels", min, max[, max aspect]),
# ("wan", largest text-to-image area), or None: not accepted), default size, n limit, (min, max)
# image parts, accepted parameters, whether the async endpoint serves it, whether the text part
# must come last, the prompt length kept, the pixels of an output whose size follows the input,
# the largest input image in MB
MODELS: dict[str, dict[str, Any]] = {
    "qwen-image": {**_GEN, "async": True},
    "qwen-image-plus": {**_GEN, "async": True},
    "qwen-image-max": {**_GEN, "async": False},
    "qwen-image-edit": {**_QWEN, "sizes": None, "default": None, "n_max": 1, "images": (1, 3), "async": False,
                        "params": _ALL_PARAMS - {"size", "prompt_extend"}},
    "qwen-image-edit-plus": {**_EDIT_PLUS, "async": False},
    "qwen-image-edit-max": {**_EDIT_PLUS, "async": False},
    # Qwen-Image 2.0: any W*H of 512*512..2048*2048 pixels, 1-6 images, 0-3 input images
    **{m: {**_QWEN, "sizes": ("pixels", 512 * 512, 2048 * 2048), "default": (2048, 2048), "n_max": 6,
           "images": (0, 3), "params": _ALL_PARAMS, "async": False} for m in ("qwen-image-2.0", "qwen-image-2.0-pro")},
    # Qwen-Image 3.0 (third-party schemas): 512*512..2560*2560 pixels at 1:8..8:1
    **{m: {**_QWEN, "sizes": ("pixels", 512 * 512, 2560 * 2560, 8), "default": (2048, 2048), "n_max": 6,
           "images": (0, 3), "params": _ALL_PARAMS | {"prompt_extend_mode"}, "async": False}
       for m in ("qwen-image-3.0", "qwen-image-3.0-pro")},
    # Wan 2.7: 1K/2K (or W*H) for all; 4K and up to 4096*4096 for -pro text-to-image only
    "wan2.7-image": {**_WAN, "sizes": ("wan", 2048 * 2048)},
    "wan2.7-image-pro": {**_WAN, "sizes": ("wan", 4096 * 4096)},
}
SHUTDOWN: dict[str, date] = {}
"""Model -> the day DashScope stopped serving it. None of the emulated ids has a published
shutdown (the catalog files qwen-image under legacy models without a date)."""
WAN_TIERS = {"1K": 1024, "2K": 2048, "4K": 4096}
WAN_MIN, WAN_EDIT_MAX, WAN_ASPECT = 768 * 768, 2048 * 2048, 8
TYPES = {"size": str, "n": int, "negative_prompt": str, "prompt_extend": bool, "watermark": bool, "seed": int,
         "prompt_extend_mode": str, "thinking_mode": bool, "enable_sequential": bool, "bbox_list": list,
         "color_palette": list}
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
    today: date | None = None  # the emulator's calendar for shutdowns; None: the real date
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


def _decode_image(value: Any, where: str, max_mb: int = 10) -> Image.Image:
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
    if len(data) > max_mb * MB:
        raise ApiError(400, "InvalidParameter", f"{where}: the image exceeds {max_mb} MB.")
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


def _model(body: dict, asynchronous: bool, today: date | None = None) -> str:
    model = body.get("model")
    if not model:
        raise ApiError(400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    if not isinstance(model, str) or model not in MODELS:
        raise ApiError(404, "ModelNotFound", f"Model not exist: {model}")
    if model in SHUTDOWN and SHUTDOWN[model] <= (today or date.today()):
        raise ApiError(404, "ModelNotFound", f"Model not exist: {model}")  # as if it had never been
    if asynchronous and not MODELS[model]["async"]:
        raise _invalid(f"Model {model} does not support asynchronous calls on this endpoint; "
                       "use /services/aigc/multimodal-generation/generation.")
    return model


def _parameters(body: dict, model: str, images: int = 0) -> dict[str, Any]:
    spec, params = MODELS[model], body.get("parameters", {})
    if not isinstance(params, dict):
        raise _invalid("parameters must be an object.")
    for k, v in params.items():
        if k not in spec["params"]:
            raise _invalid(f"Parameter '{k}' is not supported by model {model}.")
        if type(v) is not TYPES[k]:
            raise _invalid(f"Parameter '{k}' must be of type {TYPES[k].__name__}.")
    n_max = 12 if params.get("enable_sequential") else spec["n_max"]
    if "n" in params and not 1 <= params["n"] <= n_max:
        raise _invalid(f"n must be in [1, {n_max}] for model {model}.")
    if "seed" in params and not 0 <= params["seed"] <= MAX_SEED:
        raise _invalid(f"seed must be in [0, {MAX_SEED}].")
    if len(params.get("negative_prompt", "")) > 500:
        raise _invalid("negative_prompt must be at most 500 characters.")
    if params.get("prompt_extend_mode", "direct") not in ("direct", "agent"):
        raise _invalid("prompt_extend_mode must be direct or agent.")
    if params.get("prompt_extend_mode") == "agent" and images:
        raise _invalid("prompt_extend_mode agent supports text-to-image only.")
    if "size" in params:
        rule = spec["sizes"]
        sized = _wan_size(rule[1], params, images) if rule[0] == "wan" else _size(rule, params["size"])
        params = {**params, **sized}
    return params


def _size(rule: tuple, size: str) -> dict[str, Any]:
    m = re.fullmatch(r"(\d+)\*(\d+)", size)
    if not m:
        raise _invalid(f"Invalid size: {size}. Expected format: '<width>*<height>'.")
    w, h = int(m.group(1)), int(m.group(2))
    if rule[0] == "pixels":
        if not rule[1] <= w * h <= rule[2]:
            raise _invalid(f"size: total pixels must be in [{rule[1]}, {rule[2]}].")
        if len(rule) > 3 and not 1 / rule[3] <= w / h <= rule[3]:
            raise _invalid(f"size: the aspect ratio must be within 1:{rule[3]} and {rule[3]}:1.")
    elif isinstance(rule[0], str) and size not in rule:
        raise _invalid(f"size must be one of {', '.join(rule[:5])}")
    if isinstance(rule[0], int) and not all(rule[0] <= v <= rule[1] for v in (w, h)):
        raise _invalid(f"size: width and height must each be in [{rule[0]}, {rule[1]}].")
    return {"_wh": (w, h)}


def _wan_size(largest: int, params: dict, images: int) -> dict[str, Any]:
    """Wan 2.7: a tier, or W*H; only -pro text-to-image (no images, no image set) goes past 2K."""
    size = params["size"]
    most = WAN_EDIT_MAX if images or params.get("enable_sequential") else largest
    if size in WAN_TIERS:
        if WAN_TIERS[size] ** 2 > most:
            raise _invalid(f"size {size} is not supported for this model and input.")
        return {"_tier": WAN_TIERS[size]}
    return _size(("pixels", WAN_MIN, most, WAN_ASPECT), size)


def _check_sync(body: dict, today: date | None = None) -> dict[str, Any]:
    if "messages" in body:
        raise _invalid("messages must be placed under input.")
    model = _model(body, asynchronous=False, today=today)
    spec = MODELS[model]
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
            if texts and spec["text_last"]:
                raise _invalid("Image parts must come before the text part.")
            images.append(_decode_image(part["image"], f"content[{i}].image", spec["image_mb"]))
    if len(texts) != 1 or not texts[0].strip():
        raise _invalid("The message must hold exactly one non-empty text part.")
    lo, hi = spec["images"]
    if not lo <= len(images) <= hi:
        raise _invalid(f"Model {model} takes {lo}-{hi} input images; got {len(images)}." if hi
                       else f"Model {model} takes no input image.")
    return {"model": model, "prompt": texts[0][:spec["prompt_max"]], "images": images,
            "params": _parameters(body, model, len(images))}


def _check_async(body: dict, today: date | None = None) -> dict[str, Any]:
    model = _model(body, asynchronous=True, today=today)
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
    params = p["params"]
    if "_wh" in params:
        return params["_wh"]
    if "_tier" not in params and MODELS[p["model"]]["default"]:
        return MODELS[p["model"]]["default"]
    # a tier, or an edit without a size: the last input's aspect ratio at that many pixels
    area = params["_tier"] ** 2 if "_tier" in params else MODELS[p["model"]]["edit_area"]
    ratio = p["images"][-1].width / p["images"][-1].height if p["images"] else 1.0
    return round(math.sqrt(area * ratio) / 16) * 16, round(math.sqrt(area / ratio) / 16) * 16


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
    p = _check_sync(body, state.today)
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
    p = _check_async(body, state.today)
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
