"""Strict loopback emulator of Baidu Qianfan's V2 image API (``/v2/images/*``).

Authority: ../shared/upstreams/qianfan.md. Serve it with
``tests.emulators.server.serve(create_app(state))`` in the tests, or in-process (see pixelgate.simulators); clients use ``<base>/v2``.

  POST /v2/images/generations   irag-1.0, qwen-image, flux.1-schnell
  POST /v2/images/edits         ernie-irag-edit (feature erase | repaint | variation), qwen-image-edit
  GET  /bos/{name}?authorization=...   the result images (BOS-style presigned URL, no key)
  -> {"id": "as-...", "created", "data": [{"url"}]}; errors {"error": {"code", "message", "type"}, "id"}

Choices where the reference is silent or marked unconfirmed:

* Auth: ``Authorization: Bearer <key>``; a missing header answers 401 ``access_denied``, a wrong key
  401 ``invalid_iam_token`` "IAM Certification failed". The optional ``appid`` header is ignored.
* A field a model does not list in the reference is refused (400 ``invalid_argument``), so that
  a client sending e.g. ``guidance`` to irag-1.0 or ``refer_image`` to qwen-image is noticed.
* qwen-image: n must be 1 and prompts are at most 800 characters (practitioners' reports);
  ernie-irag-edit and qwen-image-edit take n = 1 only.
* Images (``refer_image``, ``image``, ``mask``) are taken as data URLs and checked (format, 10 MB,
  aspect <= 4:1, shorter side >= 128, mask same size as image); http(s) URLs are accepted
  unchecked and never fetched (mask dimensions cannot be compared then).
* Moderation (no documented code): a prompt containing ``refuse_prompts_containing`` answers
  400 ``sensitive_content``.
* Default output sizes of edits follow the reference: erase keeps the input's aspect with the
  shorter side >= 512 and the longer <= 1280; variation keeps it at about 1024x1024 with sides
  multiple of 16 and the longer <= 1440; repaint and qwen-image-edit keep the input's size.
* ``delay`` applies before the key check, ``fail_next`` after it.
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
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["QianfanEmulatorState", "RecordedRequest", "create_app", "MODELS"]

MB = 1024 * 1024
_GEN = {"model", "prompt", "n", "size", "user", "watermark"}
# model -> endpoint, prompt limit, most n, and the fields the reference lists for it
MODELS: dict[str, dict[str, Any]] = {
    "irag-1.0": {"endpoint": "generations", "prompt_max": 220, "n_max": 4, "fields": _GEN | {"refer_image"}},
    "qwen-image": {"endpoint": "generations", "prompt_max": 800, "n_max": 1,
                   "fields": _GEN | {"seed", "prompt_extend", "negative_prompt"}},
    "flux.1-schnell": {"endpoint": "generations", "prompt_max": 512, "n_max": 4,
                       "fields": _GEN | {"steps", "seed", "guidance"}},
    "ernie-irag-edit": {"endpoint": "edits", "prompt_max": 220, "n_max": 1,
                        "fields": {"model", "image", "mask", "feature", "prompt", "size", "n"}},
    "qwen-image-edit": {"endpoint": "edits", "prompt_max": 800, "n_max": 1,
                        "fields": {"model", "image", "prompt", "size", "n"}},
}
TYPES = {"model": str, "prompt": str, "n": int, "size": str, "user": str, "watermark": bool,
         "refer_image": str, "seed": int, "steps": int, "guidance": (int, float), "prompt_extend": bool,
         "negative_prompt": str, "image": str, "mask": str, "feature": str}
FEATURES = {"erase": {"mask"}, "repaint": {"mask", "prompt"}, "variation": {"prompt"}}  # -> what it needs
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "ICO")
DEFAULT_ERRORS = {  # fail_next() without a body: status -> (code, message, type)
    429: ("rpm_rate_limit_exceeded", "Rate limit reached for RPM", "rate_limit_error"),
    500: ("internal_error", "Internal error", "server_error"),
    502: ("internal_error", "Bad gateway", "server_error"),
    503: ("server_high_load", "Server is busy, please try again later", "server_error"),
}
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_DATA_URL = re.compile(r"^data:image/([\w.+-]+);base64,(.*)$", re.S)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    fields: dict[str, Any]  # the JSON body; data URLs summarised as {"mime", "width", "height", "bytes"}
    images: dict[str, bytes] = field(default_factory=dict)  # decoded data URLs by field name


@dataclass
class QianfanEmulatorState:
    api_key: str = "bce-v3/ALTAK-emulator/0123456789abcdef"
    delay: float = 0.0
    refuse_prompts_containing: str = "forbidden"
    requests: list[RecordedRequest] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    failures: deque = field(default_factory=deque)

    def fail_next(self, status: int, body: dict | None = None, count: int = 1, headers: dict | None = None) -> None:
        """Answer the next ``count`` image requests with ``status`` and ``body`` (a default Qianfan
        error body for the status when None; pass ``{}``-like bodies for 200-with-error cases)."""
        if body is None:
            code, msg, typ = DEFAULT_ERRORS.get(status, ("invalid_argument", "Invalid Argument",
                                                         "invalid_request_error"))
            body = {"error": {"code": code, "message": msg, "type": typ}}
        self.failures.extend([(status, body, dict(headers or {}))] * count)

    def reset(self) -> None:
        self.requests.clear()
        self.files.clear()
        self.failures.clear()
        self.delay = 0.0

    @property
    def image_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith("/v2/")]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.code, self.message, self.type = status, code, message, type_


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_argument", message)


def _decode(value: str, name: str) -> tuple[bytes, Image.Image] | None:
    """A data URL -> (bytes, image), checked as the reference describes; None for a plain URL."""
    if re.match(r"^https?://", value):
        if len(value.encode()) > 1024:
            raise _invalid(f"{name} url is too long")
        return None
    m = _DATA_URL.match(value)
    if not m:
        raise _invalid(f"{name} must be an image url or a base64 data url")
    try:
        data = base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{name} is not valid base64") from None
    if len(data) > 10 * MB:
        raise _invalid(f"{name} exceeds 10MB")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception:
        raise _invalid(f"{name} cannot be decoded") from None
    if img.format not in IMAGE_FORMATS:
        raise _invalid(f"{name} format {img.format} is not supported")
    w, h = img.size
    if name != "mask" and (min(w, h) < 128 or max(w, h) > 4 * min(w, h)):
        raise _invalid(f"{name} must have a shorter side >= 128px and an aspect ratio within 4:1")
    return data, img


def _summary(data: bytes, img: Image.Image) -> dict[str, Any]:
    return {"mime": Image.MIME.get(img.format or "", "?"), "width": img.width, "height": img.height,
            "bytes": len(data)}


def _validate(body: Any, endpoint: str, rec: RecordedRequest) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "Invalid Argument")
    model = body.get("model")
    if not model:
        raise ApiError(400, "invalid_model", "model is empty")
    spec = MODELS.get(model) if isinstance(model, str) else None
    if spec is None or spec["endpoint"] != endpoint:
        raise ApiError(400, "invalid_model", f"model {model} is not supported on /v2/images/{endpoint}")
    for name, value in body.items():
        if name not in spec["fields"]:
            raise _invalid(f"unknown field {name} for model {model}")
        want = TYPES[name]
        if value is None or not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise _invalid(f"{name} has an invalid type")
    prompt = body.get("prompt", "")
    if len(prompt) > spec["prompt_max"]:
        raise ApiError(400, "characters_too_long", f"prompt length must not exceed {spec['prompt_max']} characters")
    n = body.get("n", 1)
    if not 1 <= n <= spec["n_max"]:
        raise _invalid(f"n must be between 1 and {spec['n_max']}")
    if "size" in body:
        m = _SIZE.match(body["size"])
        if not m or not all(512 <= int(v) <= 2048 for v in m.groups()):
            raise _invalid("size must be WxH with each side between 512 and 2048")
    decoded = {}
    for name in ("refer_image", "image", "mask"):
        if body.get(name):
            got = _decode(body[name], name)
            if got:
                decoded[name] = got
                rec.images[name] = got[0]
                rec.fields[name] = _summary(*got)
    if endpoint == "generations":
        if not prompt.strip():
            raise _invalid("prompt is required")
        return body
    if "image" not in body:
        raise _invalid("image is required")
    if model == "qwen-image-edit":
        if not prompt.strip():
            raise _invalid("prompt is required")
        return body
    feature = body.get("feature", "repaint")
    if feature not in FEATURES:
        raise _invalid("feature must be one of erase, repaint, variation")
    if "mask" in FEATURES[feature] and not body.get("mask"):
        raise _invalid(f"mask is required for feature {feature}")
    if "prompt" in FEATURES[feature] and not prompt.strip():
        raise _invalid(f"prompt is required for feature {feature}")
    if "mask" in decoded and "image" in decoded and decoded["mask"][1].size != decoded["image"][1].size:
        raise _invalid("mask must have the same width and height as image")
    return body


def _edit_size(body: dict[str, Any], rec: RecordedRequest) -> tuple[int, int]:
    if "size" in body:
        return tuple(map(int, body["size"].split("x")))  # type: ignore[return-value]
    summary = rec.fields.get("image")
    w, h = (summary["width"], summary["height"]) if isinstance(summary, dict) else (1024, 1024)
    feature = body.get("feature", "repaint") if body["model"] == "ernie-irag-edit" else "repaint"
    if feature == "erase":
        scale = max(512 / min(w, h), 1.0)
        scale = min(scale, 1280 / max(w, h))
        return round(w * scale), round(h * scale)
    if feature == "variation":
        scale = math.sqrt(1024 * 1024 / (w * h))
        scale = min(scale, 1440 / max(w, h))
        return max(16, round(w * scale / 16) * 16), max(16, round(h * scale / 16) * 16)
    return w, h


def render(prompt: str, index: int, width: int, height: int) -> bytes:
    colour = tuple(hashlib.sha256(f"{prompt}\0{index}".encode()).digest()[:3])
    img = Image.new("RGB", (width, height), colour)
    ink = (255, 255, 255) if sum(colour) < 384 else (0, 0, 0)
    ImageDraw.Draw(img).text((8, 8), f"#{index} {prompt[:40]}", fill=ink)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _endpoint(endpoint: str):
    async def handler(request: Request) -> Response:
        state: QianfanEmulatorState = request.app.state.emulator
        rid = "as-" + secrets.token_hex(5)
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        rec = RecordedRequest(request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()},
                              dict(body) if isinstance(body, dict) else {"_raw": raw[:200].decode(errors="replace")})
        state.requests.append(rec)
        try:
            deadline = time.monotonic() + state.delay
            while (left := deadline - time.monotonic()) > 0:
                if await request.is_disconnected():
                    return Response(status_code=499)
                await asyncio.sleep(min(left, 0.05))
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "access_denied", "Access denied: no Authorization header", "access_denied")
            if token.strip() != state.api_key:
                raise ApiError(401, "invalid_iam_token", "IAM Certification failed", "access_denied")
            if state.failures:
                status, fail_body, headers = state.failures.popleft()
                if isinstance(fail_body, dict) and "error" in fail_body:
                    fail_body = {**fail_body, "id": rid}
                return _json(fail_body, status, headers)
            p = _validate(body, endpoint, rec)
            needle = state.refuse_prompts_containing
            if needle and needle.lower() in p.get("prompt", "").lower():
                raise ApiError(400, "sensitive_content", "The input contains sensitive content (输入内容包含敏感信息)")
            if endpoint == "generations":
                width, height = map(int, p.get("size", "1024x1024").split("x"))
            else:
                width, height = _edit_size(p, rec)
            host = request.headers.get("host", f"{request.url.hostname}:{request.url.port}")
            data = []
            for i in range(p.get("n", 1)):
                name = f"{secrets.token_hex(12)}.png"
                state.files[name] = render(p.get("prompt") or p["model"], i, width, height)
                data.append({"url": f"http://{host}/bos/{name}?authorization=bce-auth-v1%2Femulator%2F{name[:8]}"})
            return _json({"id": rid, "created": int(time.time()), "data": data})
        except ApiError as exc:
            return _json({"error": {"code": exc.code, "message": exc.message, "type": exc.type}, "id": rid},
                         exc.status)
    return handler


async def _file(request: Request) -> Response:
    state: QianfanEmulatorState = request.app.state.emulator
    name = request.path_params["name"]
    state.requests.append(RecordedRequest("GET", request.url.path, {}, {}))
    if name not in state.files or not request.query_params.get("authorization", "").endswith(name[:8]):
        return Response(b"<Error><Code>NoSuchKey</Code></Error>", 404, media_type="application/xml")
    return Response(state.files[name], media_type="image/png")


async def _not_found(request: Request) -> Response:
    return _json({"error": {"code": "not_found", "message": f"{request.url.path} not found",
                            "type": "invalid_request_error"}, "id": "as-" + secrets.token_hex(5)}, 404)


def create_app(state: QianfanEmulatorState | None = None) -> Starlette:
    app = Starlette(routes=[
        Route("/v2/images/generations", _endpoint("generations"), methods=["POST"]),
        Route("/v2/images/edits", _endpoint("edits"), methods=["POST"]),
        Route("/bos/{name}", _file, methods=["GET"]),
        Route("/{path:path}", _not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ])
    app.state.emulator = state if state is not None else QianfanEmulatorState()
    return app
