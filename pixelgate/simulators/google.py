"""Strict loopback emulator of the Gemini API's image endpoints (generativelanguage.googleapis.com).

Authority: ../shared/upstreams/google.md. Serve it with ``serve(create_app(state))``; clients use
``<base>/v1beta``. Routes:

  POST /v1beta/models/{imagen model}:predict           Imagen 4 (and imagen-3.0-generate-002)
  POST /v1beta/models/{gemini model}:generateContent   gemini-2.5-flash-image, gemini-3-pro-image,
                       gemini-3.1-flash-image, gemini-3.1-flash-lite-image, gemini-nano-banana-2.1
                       (and the -preview ids)

Shut-down models answer 404 NOT_FOUND from their shutdown date on (ai.google.dev changelog and
deprecations page): Imagen 4 on 2026-08-17, imagen-3.0-generate-002 on 2025-11-10, the 3.x
-preview ids on 2026-06-25; ``state.today`` moves the emulator's calendar. gemini-3.1-flash-lite-image
makes 1K only.
Auth: ``x-goog-api-key`` header or ``?key=``. A missing key is Google's 403 PERMISSION_DENIED; a
wrong key is its 400 INVALID_ARGUMENT with an ErrorInfo detail ``reason: API_KEY_INVALID``.
Errors: ``{"error": {"code", "message", "status", "details"}}``. Request field names are accepted
in lowerCamelCase and snake_case (protobuf JSON mapping); an unknown name is a 400.

Choices where the reference is silent or marked unconfirmed:

* Imagen: ``sampleCount`` defaults to 4 (documented); prompts over ~480 tokens (chars / 4) are
  refused; Vertex-only parameters (seed, negativePrompt, addWatermark, enhancePrompt, storageUri)
  are refused like unknown ones; ``personGeneration: allow_all`` and safety levels other than
  ``block_low_and_above`` are refused. A prompt containing the needle is filtered in the HTTP 200
  way: ``{}``, or one ``raiFilteredReason`` entry per image with ``includeRaiReason``;
  ``filter_images = k`` filters the last k images of every call the same way.
* Gemini: ``imageSize`` must be upper-case; the 2.5 models accept it and still make ~1 MP.
  Without ``IMAGE`` in ``responseModalities`` the reply is text only. A prompt containing the
  needle is blocked with ``promptFeedback.blockReason: PROHIBITED_CONTENT`` (HTTP 200). 3.x models
  send a thought text and a thought (interim) image before the final image. ``fileData`` is refused
  (no Files API here); ``candidateCount`` above 1 is refused. Up to 14 input images on 3.x models.
* Output pixels: Imagen's documented table (1K/2K); Gemini's sizes are computed from ratio and tier
  (1K about 1 MP, multiples of 16). Edits without ``aspectRatio`` keep the input's nearest ratio.
* ``delay`` applies before the key check, ``fail_next`` after it (before validation).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import math
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["GoogleEmulatorState", "RecordedRequest", "create_app", "IMAGEN", "GEMINI"]

MB = 1024 * 1024
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
IMAGEN_PIXELS = {"1:1": (1024, 1024), "3:4": (896, 1280), "4:3": (1280, 896), "9:16": (768, 1408),
                 "16:9": (1408, 768)}  # 1K; 2K doubles each side
GEMINI25_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
GEMINI3_RATIOS = ("1:1", "1:4", "1:8", "2:3", "3:2", "3:4", "4:1", "4:3", "4:5", "5:4", "8:1", "9:16",
                  "16:9", "21:9")
IMAGEN = {"imagen-4.0-generate-001": {"image_sizes": ("1K", "2K")},
          "imagen-4.0-ultra-generate-001": {"image_sizes": ("1K", "2K")},
          "imagen-4.0-fast-generate-001": {"image_sizes": ()},
          "imagen-3.0-generate-002": {"image_sizes": ()}}
_G25 = {"ratios": GEMINI25_RATIOS, "sizes": False, "max_images": None, "thinking": False}
_G3 = {"ratios": GEMINI3_RATIOS, "sizes": True, "max_images": 14, "thinking": True}
GEMINI = {"gemini-2.5-flash-image": _G25, "gemini-2.5-flash-image-preview": _G25,
          "gemini-3-pro-image-preview": _G3, "gemini-3.1-flash-image-preview": _G3,
          "gemini-3-pro-image": _G3, "gemini-3.1-flash-image": _G3, "gemini-nano-banana-2.1": _G3,
          "gemini-3.1-flash-lite-image": {**_G3, "tiers": ("1K",)}}
SHUTDOWN = {"imagen-4.0-generate-001": date(2026, 8, 17), "imagen-4.0-ultra-generate-001": date(2026, 8, 17),
            "imagen-4.0-fast-generate-001": date(2026, 8, 17), "imagen-3.0-generate-002": date(2025, 11, 10),
            "gemini-3-pro-image-preview": date(2026, 6, 25), "gemini-3.1-flash-image-preview": date(2026, 6, 25)}
TIER_AREA = {"1K": 1024 * 1024, "2K": 4 * 1024 * 1024, "4K": 16 * 1024 * 1024}
INPUT_MIMES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")

IMAGEN_PARAMS = {"sampleCount", "aspectRatio", "personGeneration", "sampleImageSize", "outputOptions",
                 "safetySetting", "includeRaiReason", "includeSafetyAttributes", "language", "guidanceScale"}
VERTEX_ONLY = {"negativePrompt", "seed", "addWatermark", "enhancePrompt", "storageUri", "labels"}
GEN_CONFIG = {"responseModalities", "imageConfig", "temperature", "topP", "topK", "seed", "candidateCount",
              "maxOutputTokens"}
STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
          500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
DEFAULT_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
RAI_REASON = ("Your current safety filter threshold filtered out 1 generated images. You will not be charged "
              "for blocked images. Try rephrasing the prompt. If you think this was an error, send feedback.")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # the JSON body; inline image data replaced by {"bytes", "width", "height"}

    @property
    def model(self) -> str:
        return self.path.rsplit("/", 1)[-1].split(":")[0]

    @property
    def action(self) -> str:
        return self.path.rsplit(":", 1)[-1]


@dataclass
class GoogleEmulatorState:
    api_key: str = "AIza-emulator-key"
    delay: float = 0.0
    refuse_prompts_containing: str = "forbidden"
    filter_images: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    failures: deque = field(default_factory=deque)  # (status, body, headers)
    calls: int = 0
    today: date | None = None  # the emulator's calendar for shutdowns; None: the real date

    def fail_next(self, status: int, body: dict | None = None, count: int = 1, headers: dict | None = None) -> None:
        """Answer the next ``count`` API calls with ``status`` and ``body`` (Google's error shape by default).
        A 200 with a body is how Gemini's in-band failures are staged."""
        if body is None:
            body = error_body(status, DEFAULT_MESSAGES.get(status, "Request failed."))
        self.failures.extend([(status, body, dict(headers or {}))] * count)

    def reset(self) -> None:
        self.requests.clear()
        self.failures.clear()
        self.delay, self.filter_images = 0.0, 0


def error_body(code: int, message: str, status: str | None = None, details: list | None = None) -> dict:
    return {"error": {"code": code, "message": message, "status": status or STATUS.get(code, "UNKNOWN"),
                      "details": details or []}}


class ApiError(Exception):
    def __init__(self, code: int, message: str, status: str | None = None, details: list | None = None):
        super().__init__(message)
        self.code, self.body = code, error_body(code, message, status, details)


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _fields(obj: Any, allowed: set[str], where: str) -> dict[str, Any]:
    """protobuf JSON: snake_case or lowerCamelCase keys; an unknown one is refused."""
    if not isinstance(obj, dict):
        raise _bad(f"Invalid JSON payload received. Expected an object at '{where}'.")
    out = {}
    for key, value in obj.items():
        name = _camel(key)
        if name not in allowed:
            at = f" at '{where}'" if where else ""
            raise _bad(f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.')
        out[name] = value
    return out


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise _bad(f"Invalid value at '{where}' (TYPE_INT32), {orjson.dumps(value).decode()}")
    return int(value)


def _decode(data: Any) -> tuple[bytes, Image.Image | None]:
    try:
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else b""
    except (binascii.Error, ValueError):
        raise _bad("Invalid value at 'contents[0].parts[1].inline_data.data' (TYPE_BYTES), Base64 decoding failed.")
    try:
        img = Image.open(io.BytesIO(raw))
        img.load()
        return raw, img
    except Exception:
        return raw, None


def _summarise(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "data" and isinstance(v, str) and len(v) > 64:
                try:
                    raw, img = _decode(v)
                except ApiError:
                    raw, img = b"", None
                v = {"bytes": len(raw), "width": img.width if img else None, "height": img.height if img else None}
            out[k] = _summarise(v)
        return out
    return [_summarise(v) for v in value] if isinstance(value, list) else value


def render(prompt: str, salt: str, width: int, height: int, mime: str = "image/png", quality: int = 75) -> bytes:
    colour = tuple(hashlib.sha256(f"{prompt}\0{salt}".encode()).digest()[:3])
    img = Image.new("RGB", (width, height), colour)
    ImageDraw.Draw(img).text((8, 8), prompt[:60], fill=(255, 255, 255) if sum(colour) < 384 else (0, 0, 0))
    buf = io.BytesIO()
    if mime == "image/jpeg":
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- Imagen :predict --

def _predict(model: str, body: Any, state: GoogleEmulatorState, vertex: bool = False) -> dict:
    spec = IMAGEN[model]
    body = _fields(body, {"instances", "parameters"}, "")
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1:
        raise _bad("Exactly one instance is required: 'instances' must be a list with one element.")
    prompt = _fields(instances[0], {"prompt"}, "instances[0]").get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("Prompt is required and must be a non-empty string.")
    if len(prompt) / 4 > 480:
        raise _bad("The prompt is too long: Imagen takes at most 480 tokens.")
    raw = body.get("parameters") or {}
    if not vertex and isinstance(raw, dict) and (only := next((k for k in raw if _camel(k) in VERTEX_ONLY), None)):
        raise _bad(f"{only} parameter is not supported in Gemini API.")
    p = _fields(raw, IMAGEN_PARAMS | (VERTEX_ONLY if vertex else set()), "parameters")
    if "seed" in p and p.get("addWatermark", True):  # Vertex: a seed needs the watermark off
        raise _bad("Seed is not supported when watermark is enabled. Set addWatermark to false to use a seed.")
    count = _int(p.get("sampleCount", 4), "parameters.sample_count")
    if not 1 <= count <= 4:
        raise _bad(f"Number of images requested ({count}) must be between 1 and 4.")
    ratio = p.get("aspectRatio", "1:1")
    if ratio not in IMAGEN_RATIOS:
        raise _bad(f"Unsupported aspect ratio: {ratio}. Supported values are: {', '.join(IMAGEN_RATIOS)}.")
    tier = p.get("sampleImageSize", "1K")
    if "sampleImageSize" in p and tier not in spec["image_sizes"]:
        allowed = ", ".join(spec["image_sizes"]) or "none (this model has a fixed size)"
        raise _bad(f"Unsupported sampleImageSize: {tier}. Supported values for {model}: {allowed}.")
    person = p.get("personGeneration", "allow_adult")
    if not isinstance(person, str) or person.lower() not in ("dont_allow", "allow_adult"):
        raise _bad(f"personGeneration {person} is not supported. Supported values: dont_allow, allow_adult.")
    if "safetySetting" in p and str(p["safetySetting"]).lower() != "block_low_and_above":
        raise _bad("Only block_low_and_above is supported for safetySetting.")
    for name in ("includeRaiReason", "includeSafetyAttributes"):
        if name in p and not isinstance(p[name], bool):
            raise _bad(f"Invalid value at 'parameters.{name}' (TYPE_BOOL), {p[name]!r}")
    out = _fields(p.get("outputOptions", {}), {"mimeType", "compressionQuality"}, "parameters.output_options")
    mime = out.get("mimeType", "image/png")
    if mime not in ("image/png", "image/jpeg"):
        raise _bad(f"Unsupported output mime type: {mime}. Supported: image/png, image/jpeg.")
    quality = _int(out.get("compressionQuality", 75), "parameters.output_options.compression_quality")
    if not 0 <= quality <= 100:
        raise _bad(f"compressionQuality must be between 0 and 100, got {quality}.")
    needle = state.refuse_prompts_containing
    filtered = count if needle and needle.lower() in prompt.lower() else min(count, state.filter_images)
    w, h = IMAGEN_PIXELS[ratio]
    scale = 2 if tier == "2K" and spec["image_sizes"] else 1
    state.calls += 1
    preds: list[dict] = [{"bytesBase64Encoded": _b64(render(prompt, f"{state.calls}/{i}", w * scale, h * scale,
                                                              mime, quality)), "mimeType": mime}
                         for i in range(count - filtered)]
    if p.get("includeRaiReason"):
        preds += [{"raiFilteredReason": RAI_REASON}] * filtered
    return {"predictions": preds} if preds else {}


# -- Gemini :generateContent --

def _pixels(ratio: str, tier: str) -> tuple[int, int]:
    a, b = map(int, ratio.split(":"))
    w = math.sqrt(TIER_AREA[tier] * a / b)
    return int(round(w / 16) * 16), int(round(w * b / a / 16) * 16)


def _nearest_ratio(width: int, height: int, ratios: tuple[str, ...]) -> str:
    def off(r: str) -> float:
        a, b = map(int, r.split(":"))
        return abs(math.log(width / height) - math.log(a / b))
    return min(ratios, key=off)


def _generate_content(model: str, body: Any, state: GoogleEmulatorState, vertex: bool = False) -> dict:
    spec = GEMINI[model]
    body = _fields(body, {"contents", "generationConfig", "safetySettings", "systemInstruction", "tools"}, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _bad("* GenerateContentRequest.contents: contents is not specified")
    texts, images = [], []
    for i, content in enumerate(contents):
        content = _fields(content, {"role", "parts"}, f"contents[{i}]")
        if content.get("role", "user") not in ("user", "model"):
            raise _bad(f"Please use a valid role: user, model. Got: {content.get('role')}")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _bad(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        for j, part in enumerate(parts):
            part = _fields(part, {"text", "inlineData", "fileData", "thought", "thoughtSignature"},
                           f"contents[{i}].parts[{j}]")
            if "fileData" in part:
                raise ApiError(403, "You do not have permission to access the File or it may not exist.")
            if "inlineData" in part:
                blob = _fields(part["inlineData"], {"mimeType", "data"}, f"contents[{i}].parts[{j}].inline_data")
                if blob.get("mimeType") not in INPUT_MIMES:
                    raise _bad(f"Unsupported MIME type: {blob.get('mimeType')}")
                _, img = _decode(blob.get("data"))
                if img is None:
                    raise _bad("Unable to process input image. Please retry or report in "
                               "https://developers.generativeai.google/guide/troubleshooting")
                if content.get("role", "user") == "user":
                    images.append(img)
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    if spec["max_images"] and len(images) > spec["max_images"]:
        raise _bad(f"Too many input images: {len(images)}. {model} accepts at most {spec['max_images']}.")
    config = _fields(body.get("generationConfig", {}), GEN_CONFIG, "generation_config")
    modalities = config.get("responseModalities", ["TEXT", "IMAGE"])
    if not isinstance(modalities, list) or any(str(m).upper() not in ("TEXT", "IMAGE") for m in modalities):
        raise _bad(f"Invalid value at 'generation_config.response_modalities', {modalities!r}")
    if _int(config.get("candidateCount", 1), "generation_config.candidate_count") != 1:
        raise _bad("Multiple candidates is not enabled for this model.")
    if "seed" in config:
        _int(config["seed"], "generation_config.seed")
    image_config = _fields(config.get("imageConfig", {}), {"aspectRatio", "imageSize"},
                           "generation_config.image_config")
    ratio = image_config.get("aspectRatio")
    if ratio is not None and ratio not in spec["ratios"]:
        raise _bad("* GenerateContentRequest.generation_config.image_config.aspect_ratio: aspect_ratio must be "
                   f"one of {', '.join(spec['ratios'])}.")
    tier = image_config.get("imageSize", "1K")
    tiers = spec.get("tiers", tuple(TIER_AREA))
    if tier not in tiers:
        raise _bad("* GenerateContentRequest.generation_config.image_config.image_size: image_size must be one "
                   f"of {', '.join(tiers)}.")
    prompt = " ".join(texts)
    usage = {"promptTokenCount": 12 + 258 * len(images),
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]
             + ([{"modality": "IMAGE", "tokenCount": 258 * len(images)}] if images else [])}
    common = {"modelVersion": model, "responseId": secrets.token_urlsafe(12)}
    needle = state.refuse_prompts_containing
    if needle and needle.lower() in prompt.lower():
        return {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                "usageMetadata": {**usage, "totalTokenCount": usage["promptTokenCount"]}, **common}
    if ratio is None:
        ratio = _nearest_ratio(images[0].width, images[0].height, spec["ratios"]) if images else "1:1"
    w, h = _pixels(ratio, tier if spec["sizes"] else "1K")
    state.calls += 1
    final = {"inlineData": {"mimeType": "image/png", "data": _b64(render(prompt, f"{state.calls}", w, h))}}
    if "IMAGE" not in [str(m).upper() for m in modalities]:
        parts: list[dict] = [{"text": "I can describe the picture, but I cannot show it without IMAGE output."}]
    elif spec["thinking"]:
        interim = {"inlineData": {"mimeType": "image/png", "data": _b64(render(prompt, "draft", 64, 64))}}
        parts = [{"text": "**Composing the scene**", "thought": True}, {**interim, "thought": True},
                 {**final, "thoughtSignature": secrets.token_urlsafe(16)}]
    else:
        parts = [{"text": "Here is the image you asked for."}, final]
    out_tokens = 2000 if tier == "4K" and spec["sizes"] else 1290
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {**usage, "candidatesTokenCount": out_tokens,
                              "totalTokenCount": usage["promptTokenCount"] + out_tokens,
                              "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": out_tokens}]},
            **common}


# -- HTTP --

def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _auth_error(request: Request, state: GoogleEmulatorState) -> ApiError | None:
    key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
    if key == state.api_key:
        return None
    if not key:
        return ApiError(403, "Method doesn't allow unregistered callers (callers without established identity). "
                             "Please use API Key or other form of API consumer identity to call this API.")
    return ApiError(400, "API key not valid. Please pass a valid API key.", details=[
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])


async def _models(request: Request) -> Response:
    return await serve_model(request, request.path_params["target"], _auth_error)


async def serve_model(request: Request, target: str, auth, vertex: bool = False) -> Response:
    """One :predict or :generateContent call to `target` ("model:action"): record, delay, `auth`
    (request, state -> ApiError | None), fail_next, shutdowns, validation, answer; the Vertex
    emulator (simulators/vertex.py) serves its calls through it too."""
    state: GoogleEmulatorState = request.app.state.emulator
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    state.requests.append(RecordedRequest(request.method, request.url.path, request.url.query,
                                          {k.lower(): v for k, v in request.headers.items()}, _summarise(body)))
    try:
        await asyncio.sleep(state.delay)
        if err := auth(request, state):
            raise err
        if state.failures:
            status, fail_body, headers = state.failures.popleft()
            return _json(fail_body, status, headers)
        model, _, action = target.partition(":")
        handler = {"predict": (IMAGEN, _predict), "generateContent": (GEMINI, _generate_content)}.get(action)
        shut = SHUTDOWN.get(model)
        if handler is None or model not in handler[0] or shut is not None and shut <= (state.today or date.today()):
            raise ApiError(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                                f"{action or 'this method'}. Call ListModels to see the list of available models "
                                "and their supported methods.")
        if len(raw) > 20 * MB:
            raise _bad("Request payload size exceeds the limit: 20971520 bytes.")
        if body is None:
            raise _bad("Invalid JSON payload received. Unexpected token.")
        return _json(handler[1](model, body, state, vertex))
    except ApiError as exc:
        return _json(exc.body, exc.code)


async def _not_found(request: Request) -> Response:
    state: GoogleEmulatorState = request.app.state.emulator
    state.requests.append(RecordedRequest(request.method, request.url.path, request.url.query,
                                          {k.lower(): v for k, v in request.headers.items()}, None))
    return _json(error_body(404, f"Method not found: {request.method} {request.url.path}"), 404)


def create_app(state: GoogleEmulatorState | None = None) -> Starlette:
    app = Starlette(routes=[
        Route("/v1beta/models/{target}", _models, methods=["POST"]),
        Route("/{path:path}", _not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ])
    app.state.emulator = state if state is not None else GoogleEmulatorState()
    return app
