"""Strict loopback emulator of the OpenAI Images API (``/v1/images/*``).

Authority: ../shared/upstreams/openai.md.  The emulator accepts what that
reference says the real API accepts and answers like it, errors included
(``{"error": {"message", "type", "param", "code"}}``).  Serve it with
``tests.emulators.server.serve(create_app(state))`` in the tests, or in-process (see pixelgate.simulators); clients use ``<base>/v1``.

Choices where the reference is silent or marked unconfirmed:

* Models: gpt-image-2 (and its 2026-04-21 snapshot), gpt-image-2.5-sunburst/-flare (and their
  2026-09-08 snapshots), gpt-image-2.6-sunburst/-flare (which also take ``complexity``); the
  retired dall-e-2, dall-e-3, gpt-image-1, gpt-image-1-mini, gpt-image-1.5 and chatgpt-image-latest
  answer 404 ``model_not_found`` from their shutdown date (OpenAI's deprecations page) on, as the
  real API does; ``state.today`` moves the emulator's calendar. Any other model -> 404.
* gpt-image-2*: any ``WxH`` with both sides multiples of 16, aspect 1:3..3:1, at most 3840x2160
  and at least 655,360 pixels (the 2.5/2.6 bound).
* A parameter the model does not take (``style`` on dall-e-2,
  ``response_format`` on GPT image, ``stream`` on DALL·E, ``input_fidelity`` on
  generations or gpt-image-1-mini, ``moderation`` on *multipart* edits) is
  rejected like an unknown one: 400 ``unknown_parameter``.
* ``quality: "auto"`` (the spec default) is accepted for every model;
  ``output_compression`` is rejected whenever the output format is png.
* Uploads are checked on their part Content-Type (the real API answers
  "unsupported mimetype" for e.g. application/octet-stream) and on the format
  Pillow decodes.  dall-e-2 edits without a mask need alpha (RGBA/LA/tRNS).
* JSON edits (§3b) take ``image_url`` data URLs only: https URLs are not
  fetched and ``file_id`` is rejected (no Files API here), both with 400.
* The content-policy needle matches case-insensitively; "" disables it.
* ``delay`` and ``fail_next`` apply to ``/v1/images/*`` only (the delay before
  the key check, failures after it; a delay ends early if the client hangs up).
  ``/v1/files/*`` downloads need no key.  ``usage`` numbers are plausible only.
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
from datetime import date
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["MODELS", "OpenAIEmulatorState", "RecordedRequest", "create_app"]

MB = 1024 * 1024
GPT2_MODELS = ("gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-2.5-sunburst", "gpt-image-2.5-sunburst-2026-09-08",
               "gpt-image-2.5-flare", "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare")
GPT_MODELS = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest", *GPT2_MODELS)
# Shut down on these dates (developers.openai.com/api/docs/deprecations): 404 model_not_found after.
SHUTDOWN = {"dall-e-2": date(2026, 5, 12), "dall-e-3": date(2026, 5, 12), "gpt-image-1": date(2026, 10, 23),
            "gpt-image-1-mini": date(2026, 12, 1), "gpt-image-1.5": date(2026, 12, 1),
            "chatgpt-image-latest": date(2026, 12, 1)}
GPT_SIZES = ("1024x1024", "1024x1536", "1536x1024", "auto")
# Any of these (non-null) without `model` makes generations default to gpt-image-1 (spec wording).
GPT_ONLY = ("output_format", "output_compression", "background", "moderation", "stream", "partial_images")
_BASE = frozenset({"prompt", "model", "n", "size", "quality", "user"})
_GPT = _BASE | {"output_format", "output_compression", "background", "stream", "partial_images"}
_GPT_FIELDS = {"generations": _GPT | {"moderation"},  # "edits_json" is the JSON edit form of §3b
               "edits": _GPT | {"image", "image[]", "mask", "input_fidelity"},
               "edits_json": _GPT | {"images", "mask", "moderation", "input_fidelity"}}
_GPT_SPEC = {"prompt_max": 32000, "n_max": 10, "sizes": GPT_SIZES, "qualities": ("low", "medium", "high", "auto"),
             "fields": _GPT_FIELDS}
# model -> prompt/n limits, size and quality enums, and the request fields accepted per endpoint.
MODELS: dict[str, dict[str, Any]] = {
    "dall-e-2": {"prompt_max": 1000, "n_max": 10, "sizes": ("256x256", "512x512", "1024x1024"),
                 "qualities": ("standard", "auto"),
                 "fields": {"generations": _BASE | {"response_format"},
                            "edits": _BASE | {"image", "mask", "response_format"},
                            "variations": frozenset({"image", "model", "n", "response_format", "size", "user"})}},
    "dall-e-3": {"prompt_max": 4000, "n_max": 1, "sizes": ("1024x1024", "1792x1024", "1024x1792"),
                 "qualities": ("standard", "hd", "auto"),
                 "fields": {"generations": _BASE | {"response_format", "style"}}},
    "gpt-image-1": _GPT_SPEC,
    "gpt-image-1-mini": {**_GPT_SPEC, "fields": {k: v - {"input_fidelity"} for k, v in _GPT_FIELDS.items()}},
    "gpt-image-1.5": _GPT_SPEC,
    "chatgpt-image-latest": _GPT_SPEC,
    **{m: {**_GPT_SPEC, "sizes": "custom"} for m in GPT2_MODELS},
    **{m: {**_GPT_SPEC, "sizes": "custom", "fields": {k: v | {"complexity"} for k, v in _GPT_FIELDS.items()}}
       for m in ("gpt-image-2.6-sunburst", "gpt-image-2.6-flare")},
}
DEFAULT_MODEL = {"generations": "dall-e-2", "edits": "gpt-image-1.5", "edits_json": "gpt-image-1.5",
                 "variations": "dall-e-2"}
ENUMS = {"response_format": ("url", "b64_json"), "output_format": ("png", "jpeg", "webp"),
         "background": ("transparent", "opaque", "auto"), "moderation": ("low", "auto"),
         "style": ("vivid", "natural"), "input_fidelity": ("high", "low"), "complexity": ("low", "medium", "high")}
RANGES = {"output_compression": (0, 100), "partial_images": (0, 3)}  # plus n: 1..n_max
TYPES = {"prompt": str, "model": str, "n": int, "size": str, "quality": str, "response_format": str,
         "output_format": str, "output_compression": int, "background": str, "moderation": str, "style": str,
         "stream": bool, "partial_images": int, "user": str, "input_fidelity": str, "images": list, "mask": dict,
         "complexity": str}
# Uploads: accepted part mimetypes, Pillow formats, size limit (exclusive), must be square, max count.
_PNG_4MB = {"mimes": ("image/png",), "formats": ("PNG",), "max_mb": 4, "square": True, "max_count": 1}
IMAGE_RULES = {"dall-e-2": _PNG_4MB, "mask": {**_PNG_4MB, "square": False},
               **{m: {"mimes": ("image/jpeg", "image/png", "image/webp"), "formats": ("PNG", "JPEG", "WEBP"),
                      "max_mb": 50, "square": False, "max_count": 16} for m in GPT_MODELS}}
OUTPUT_TOKENS = {"low": (272, 408, 400), "medium": (1056, 1584, 1568), "high": (4160, 6240, 6208)}  # by size
OUTPUT_TOKENS_PER_MP = {"low": 260, "medium": 1008, "high": 3968}  # the same rates, for custom sizes
INPUT_IMAGE_TOKENS = {"low": 323, "high": 4483}  # per input image on edits, by input_fidelity
DEFAULT_ERRORS = {  # fail_next() without a body: status -> (message, type, code)
    429: ("Rate limit reached for images in organization org-emulator on requests per min (RPM): Limit 5, "
          "Used 5, Requested 1. Please try again in 1s.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}
POLICY_ERRORS = {  # is GPT image model -> (message, type, code); {rid} is the x-request-id
    False: ("Your request was rejected as a result of our safety system. Your prompt may contain text that is "
            "not allowed by our safety system.", "invalid_request_error", "content_policy_violation"),
    True: ("Your request was rejected by the safety system. If you believe this is an error, contact us at "
           "help.openai.com and include the request ID {rid}. safety_violations=[violence].",
           "image_generation_user_error", "moderation_blocked"),
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    fields: dict[str, Any]  # JSON body, or multipart text parts (strings); files and data URLs summarised


@dataclass
class OpenAIEmulatorState:
    api_key: str = "sk-emulator-key"
    delay: float = 0.0
    refuse_prompts_containing: str = "forbidden"
    url_ttl: float = 3600.0  # lifetime of data[].url links in seconds (real API: 60 minutes)
    requests: list[RecordedRequest] = field(default_factory=list)
    files: dict[str, tuple[bytes, str, int]] = field(default_factory=dict)  # name -> (bytes, mime, expiry)
    failures: deque = field(default_factory=deque)  # (status, body, headers) from fail_next()
    today: date | None = None  # the emulator's calendar for shutdowns; None: the real date

    def fail_next(self, status: int, body: dict | None = None, count: int = 1, headers: dict | None = None) -> None:
        """Answer the next ``count`` image API requests with ``status``/``body`` (and extra ``headers``)."""
        if body is None:
            typ = "server_error" if status >= 500 else "invalid_request_error"
            msg, typ, code = DEFAULT_ERRORS.get(status, (HTTPStatus(status).phrase, typ, None))
            body = {"error": {"message": msg, "type": typ, "param": None, "code": code}}
        self.failures.extend([(status, body, dict(headers or {}))] * count)

    def reset(self) -> None:
        """Forget recorded requests, stored files and pending failures; clear the delay."""
        self.requests.clear()
        self.files.clear()
        self.failures.clear()
        self.delay = 0.0


class ApiError(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = "invalid_value",
                 status: int = 400, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.body = status, {"error": {"message": message, "type": type_, "param": param, "code": code}}

    @classmethod
    def raw(cls, status: int, body: dict) -> "ApiError":
        """An error whose body is given whole (another vendor's shape, e.g. Azure's)."""
        exc = cls(str(body.get("error", {}).get("message", "")), status=status)
        exc.body = body
        return exc


@dataclass
class Upload:
    """A received image: a multipart file part or a decoded data URL."""
    filename: str | None
    content_type: str | None
    data: bytes
    image: Image.Image | None = None

    def __post_init__(self) -> None:
        try:
            self.image = Image.open(io.BytesIO(self.data))
            self.image.load()
        except Exception:
            self.image = None

    def summary(self) -> dict[str, Any]:
        w, h = self.image.size if self.image else (None, None)
        return {"filename": self.filename, "content_type": self.content_type, "size": len(self.data),
                "width": w, "height": h}


TYPE_NAMES = {type(None): "null", bool: "a boolean", int: "an integer", float: "a decimal number",
              str: "a string", list: "an array", dict: "an object", Upload: "a file"}


def _oxford(values) -> str:
    q = [f"'{v}'" for v in values]
    return q[0] if len(q) == 1 else " and ".join(q) if len(q) == 2 else ", ".join(q[:-1]) + ", and " + q[-1]


def _enum_error(param: str, value: Any, allowed) -> ApiError:
    return ApiError(f"Invalid value: '{value}'. Supported values are: {_oxford(allowed)}.", param)


def _type_error(param: str, want: type, got: Any) -> ApiError:
    return ApiError(f"Invalid type for '{param}': expected {TYPE_NAMES[want]}, but got "
                    f"{TYPE_NAMES.get(type(got), 'an object')} instead.", param, "invalid_type")


def _missing(param: str) -> ApiError:
    return ApiError(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _unknown(param: str) -> ApiError:
    return ApiError(f"Unknown parameter: '{param}'.", param, "unknown_parameter")


def _summarise(v: Any) -> Any:
    if isinstance(v, Upload):
        return v.summary()
    if isinstance(v, list):
        return [_summarise(x) for x in v]
    return {k: _summarise(x) for k, x in v.items()} if isinstance(v, dict) else v


def _data_url(s: Any) -> Any:
    """A base64 data URL (<= 20 MiB) -> Upload; anything else is returned unchanged."""
    if not isinstance(s, str) or len(s) > 20 * MB:
        return s
    m = re.fullmatch(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", s, re.S)
    try:
        return Upload(None, m.group(1), base64.b64decode(m.group(2), validate=True)) if m else s
    except (binascii.Error, ValueError):
        return s


async def _parse(request: Request, endpoint: str) -> tuple[str, dict[str, Any]]:
    """Return (endpoint, raw fields); a JSON edit becomes endpoint "edits_json"."""
    ctype = request.headers.get("content-type", "").lower()
    if endpoint != "generations" and ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=64, max_fields=256)
        except Exception as exc:
            raise ApiError(f"Could not parse multipart form: {exc}", None, None) from exc
        fields: dict[str, Any] = {}
        for k, v in form.multi_items():  # repeated names and "x[]" names collect into lists
            if isinstance(v, UploadFile):
                v = Upload(v.filename, v.content_type, await v.read())
            if k in fields or k.endswith("[]"):
                prev = fields.get(k, [])
                v = (prev if isinstance(prev, list) else [prev]) + [v]
            fields[k] = v
        return endpoint, fields
    if endpoint == "variations":
        raise ApiError(f"Invalid Content-Type header ({ctype or 'none'}), expected multipart/form-data.", None, None)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise ApiError("We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                       "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                       "sent was not valid JSON.)", None, None)
    if endpoint == "edits":  # decode data URLs now, so that the request log can summarise them
        for ref in (body["images"] if isinstance(body.get("images"), list) else []) + [body.get("mask")]:
            if isinstance(ref, dict) and "image_url" in ref:
                ref["image_url"] = _data_url(ref["image_url"])
        return "edits_json", body
    return endpoint, body


def _coerce(name: str, raw: Any, want: type) -> Any:
    """Multipart text part -> typed value (the SDK sends ``n=2``, ``stream=true``)."""
    text = raw.strip().lower() if isinstance(raw, str) else None
    if want is str and text is not None:
        return raw
    if want is int and text is not None and re.fullmatch(r"-?\d+", text):
        return int(text)
    if want is bool and text in ("true", "false"):
        return text == "true"
    raise _type_error(name, want, raw)


def _check_image(u: Any, rule: dict, param: str, index: int) -> Upload:
    if not isinstance(u, Upload):
        raise _type_error(param, Upload, u)
    mime = (u.content_type or "application/octet-stream").split(";")[0].strip().lower()
    if mime not in rule["mimes"]:
        raise ApiError(f"Invalid file '{param}': unsupported mimetype ('{mime}'). Supported file formats are "
                       f"{_oxford(rule['mimes'])}.", param)
    if len(u.data) >= rule["max_mb"] * MB:
        raise ApiError(f"Invalid file '{param}': image {index + 1} is {len(u.data) / MB:.1f} MB; it must be "
                       f"less than {rule['max_mb']} MB.", param)
    if u.image is None or u.image.format not in rule["formats"]:
        raise ApiError(f"Invalid image file or mode for image {index + 1}, please check your image file.", param)
    if rule["square"] and u.image.width != u.image.height:
        raise ApiError(f"Invalid input image - image must be square, got {u.image.width}x{u.image.height}.", param)
    return u


def _ref(item: Any, param: str) -> Upload:
    """A §3b image reference -> Upload (data URLs only, see the module docstring)."""
    if not isinstance(item, dict):
        raise _type_error(param, dict, item)
    for k in item:
        if k not in ("image_url", "file_id"):
            raise _unknown(f"{param}.{k}")
    if len(item) != 1:
        raise ApiError(f"Invalid '{param}': expected exactly one of 'image_url' or 'file_id'.", param)
    if "file_id" in item:
        raise ApiError(f"Invalid '{param}.file_id': file references are not supported by this emulator "
                       "(no Files API); send the image as a data URL in 'image_url'.", f"{param}.file_id")
    url = item["image_url"]
    if isinstance(url, Upload):
        return url
    if not isinstance(url, str):
        raise _type_error(f"{param}.image_url", str, url)
    why = ("remote URLs are not fetched by this emulator; send a data URL" if url.startswith(("http://", "https://"))
           else "string too long (max 20 MiB)" if len(url) > 20 * MB else "expected a base64 data URL")
    raise ApiError(f"Invalid '{param}.image_url': {why}.", f"{param}.image_url")


def _custom_size(size: str) -> None:
    """gpt-image-2*: `auto` or WxH within the model's pixel and edge limits."""
    if size == "auto":
        return
    m = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size)
    w, h = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if not m or w % 16 or h % 16 or max(w, h) > 3 * min(w, h) or max(w, h) > 3840 or not 655_360 <= w * h <= 8_294_400:
        raise ApiError(f"Invalid size '{size}'. Requested size must have both dimensions divisible by 16, an "
                       "aspect ratio between 1:3 and 3:1, at most 3840 pixels on the longest edge and between "
                       "655,360 and 8,294,400 pixels in total.", "size", "invalid_size")


def validate(endpoint: str, fields: dict[str, Any], today: date | None = None) -> dict[str, Any]:
    """Check a parsed request against the tables above; return typed params (+ model, images, mask)."""
    model = fields.get("model")
    if model is None:
        gpt_only = endpoint == "generations" and any(fields.get(k) is not None for k in GPT_ONLY)
        model = "gpt-image-1" if gpt_only else DEFAULT_MODEL[endpoint]
    elif not isinstance(model, str):
        raise _type_error("model", str, model)
    elif model not in MODELS:
        raise ApiError(f"The model '{model}' does not exist or you do not have access to it.", None,
                       "model_not_found", status=404)
    if model in SHUTDOWN and SHUTDOWN[model] <= (today or date.today()):
        raise ApiError(f"The model `{model}` has been deprecated, learn more here: "
                       "https://platform.openai.com/docs/deprecations", None, "model_not_found", status=404)
    spec, multipart = MODELS[model], endpoint in ("edits", "variations")
    allowed = spec["fields"].get(endpoint)
    if allowed is None:
        raise _enum_error("model", model, [m for m, s in MODELS.items() if endpoint in s["fields"]])
    if model == "dall-e-2" and ("image[]" in fields or isinstance(fields.get("image"), list)):
        raise ApiError("Invalid type for 'image': expected a file, but got an array instead.", "image", "invalid_type")
    p: dict[str, Any] = {"model": model}
    for k, v in fields.items():
        if k not in allowed:
            raise _unknown(k)
        if k in ("image", "image[]", "images", "mask") or (v is None and k != "prompt"):
            continue  # images are checked below; null means "default" for optional fields
        v = _coerce(k, v, TYPES[k]) if multipart else v
        if type(v) is not TYPES[k]:
            raise _type_error(k, TYPES[k], v)
        p[k] = v
    prompt = p.get("prompt")
    if endpoint != "variations" and prompt is None:
        raise _missing("prompt")
    if prompt == "":
        raise ApiError("Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an "
                       "empty string instead.", "prompt")
    if prompt and len(prompt) > spec["prompt_max"]:
        raise ApiError(f"Invalid 'prompt': string too long. Expected a string with maximum length "
                       f"{spec['prompt_max']}, but got a string with length {len(prompt)} instead.", "prompt")
    if spec["sizes"] == "custom" and "size" in p:
        _custom_size(p["size"])
    for k, choices in {**ENUMS, "size": spec["sizes"], "quality": spec["qualities"]}.items():
        if k in p and choices != "custom" and p[k] not in choices:
            raise _enum_error(k, p[k], choices)
    for k, (lo, hi) in {"n": (1, spec["n_max"]), **RANGES}.items():
        if k in p and not lo <= p[k] <= hi:
            side, cmp, bound = ("above maximum", "<=", hi) if p[k] > hi else ("below minimum", ">=", lo)
            raise ApiError(f"Invalid '{k}': integer {side} value. Expected a value {cmp} {bound}, but got "
                           f"{p[k]} instead.", k)
    fmt = p.get("output_format", "png")
    if "output_compression" in p and fmt == "png":
        raise ApiError("Invalid 'output_compression': only supported with output_format 'jpeg' or 'webp', "
                       "but output_format is 'png'.", "output_compression")
    if p.get("background") == "transparent" and fmt == "jpeg":
        raise ApiError("Invalid 'background': 'transparent' requires output_format 'png' or 'webp', but got "
                       "'jpeg'.", "background")
    if endpoint == "generations":
        return p
    rule, param = IMAGE_RULES[model], "images" if endpoint == "edits_json" else "image"
    if endpoint == "edits_json":
        raw = fields.get("images")
        if not isinstance(raw, list):
            raise _missing("images") if raw is None else _type_error("images", list, raw)
        if not raw:
            raise ApiError("Invalid 'images': empty array. Expected an array with minimum length 1, but got "
                           "an empty array instead.", "images")
        raw = [_ref(item, f"images[{i}]") for i, item in enumerate(raw)]
    else:
        raw = [x for k in ("image", "image[]") if k in fields
               for x in (fields[k] if isinstance(fields[k], list) else [fields[k]])]
        if not raw:
            raise _missing("image")
    if len(raw) > rule["max_count"]:
        raise ApiError(f"Invalid '{param}': array too long. Expected an array with maximum length "
                       f"{rule['max_count']}, but got an array with length {len(raw)} instead.", param)
    p["images"] = [_check_image(u, rule, param, i) for i, u in enumerate(raw)]
    first = p["images"][0].image
    if fields.get("mask") is not None:
        mask = fields["mask"]
        mask = _check_image(_ref(mask, "mask") if endpoint == "edits_json" else mask, IMAGE_RULES["mask"], "mask", 0)
        if mask.image.size != first.size:
            raise ApiError(f"Invalid 'mask': mask size {mask.image.width}x{mask.image.height} does not match the "
                           f"image size {first.width}x{first.height}.", "mask")
        p["mask"] = mask
    elif endpoint == "edits" and model == "dall-e-2" and not (first.mode in ("RGBA", "LA", "PA")
                                                              or "transparency" in first.info):
        raise ApiError(f"Invalid input image - format must be in ['RGBA', 'LA'], got {first.mode}.", "image")
    return p


@functools.lru_cache(maxsize=64)
def render(prompt: str, index: int, size: str, fmt: str = "png", quality: int = 100,
           transparent: bool = False) -> bytes:
    """A cheap deterministic image: a colour derived from the prompt hash, plus a caption."""
    w, h = map(int, size.split("x"))
    colour = tuple(hashlib.sha256(f"{prompt}\0{index}".encode()).digest()[:3])
    if transparent:
        img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        ImageDraw.Draw(img).rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=colour + (255,))
    else:
        img = Image.new("RGB", (w, h), colour)
    ink = (255, 255, 255, 255) if sum(colour) < 384 else (0, 0, 0, 255)
    ImageDraw.Draw(img).text((8, 8), f"#{index} {prompt[:60]}", fill=ink[: len(img.mode)])
    buf = io.BytesIO()
    img.save(buf, format=fmt.upper(), **({"compress_level": 1} if fmt == "png" else {"quality": quality}))
    return buf.getvalue()


def _result(p: dict[str, Any], endpoint: str, request: Request, state: OpenAIEmulatorState, rid: str) -> Response:
    model, prompt, n, created = p["model"], p.get("prompt", "variation"), p.get("n", 1), int(time.time())
    size = p.get("size", "auto")
    size = "1024x1024" if size == "auto" else size
    if model not in GPT_MODELS:
        data = []
        for i in range(n):
            png = render(prompt, i, size)
            if p.get("response_format", "url") == "url":
                name, expiry = f"img-{secrets.token_hex(12)}.png", int(time.time() + state.url_ttl)
                state.files[name] = (png, "image/png", expiry)
                host = request.headers.get("host", f"{request.url.hostname}:{request.url.port}")
                item = {"url": f"{request.url.scheme}://{host}/v1/files/{name}?expires={expiry}"}
            else:
                item = {"b64_json": base64.b64encode(png).decode()}
            if model == "dall-e-3":
                item["revised_prompt"] = f"A detailed, high-quality image of {prompt}"
            data.append(item)
        return _json({"created": created, "data": data}, rid)
    fmt, compression = p.get("output_format", "png"), p.get("output_compression", 100)
    quality = "medium" if p.get("quality", "auto") == "auto" else p["quality"]
    bg_asked = p.get("background", "auto")
    bg = "opaque" if bg_asked == "auto" else bg_asked
    img_tokens = INPUT_IMAGE_TOKENS[p.get("input_fidelity", "low")] * len(p.get("images", []))
    text_tokens = max(1, len(prompt) // 4)
    if size in GPT_SIZES:
        out = OUTPUT_TOKENS[quality][GPT_SIZES.index(size)]
    else:
        w, h = map(int, size.split("x"))
        out = round(OUTPUT_TOKENS_PER_MP[quality] * w * h / 1_000_000)

    def usage(images: int) -> dict[str, Any]:
        return {"input_tokens": text_tokens + img_tokens,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": img_tokens},
                "output_tokens": out * images, "total_tokens": text_tokens + img_tokens + out * images}

    def b64(i: int, tag: str = "") -> str:
        return base64.b64encode(render(prompt + tag, i, size, fmt, compression, bg == "transparent")).decode()

    if not p.get("stream"):
        return _json({"created": created, "data": [{"b64_json": b64(i)} for i in range(n)], "background": bg,
                      "output_format": fmt, "quality": quality, "size": size, "usage": usage(n)}, rid)
    kind = "image_generation" if endpoint == "generations" else "image_edit"
    common = {"created_at": created, "size": size, "quality": quality, "output_format": fmt}

    async def events():
        # Assumption (§6 leaves n > 1 unconfirmed): every image gets its own run of partial events
        # (partial_image_index restarting at 0) and then its own completed event with its own usage.
        # Partial events echo the requested background (as in the §6 example), completed ones the resolved one.
        for i in range(n):
            for k in range(p.get("partial_images", 0)):
                yield _sse({"type": f"{kind}.partial_image", "b64_json": b64(i, f"\0partial{k}"),
                            "partial_image_index": k, **common, "background": bg_asked})
                await asyncio.sleep(0)
            yield _sse({"type": f"{kind}.completed", "b64_json": b64(i), **common, "background": bg,
                        "usage": usage(1)})

    return StreamingResponse(events(), media_type="text/event-stream", headers=_headers(rid))


def _sse(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _headers(rid: str, extra: dict | None = None) -> dict[str, str]:
    return {"x-request-id": rid, "openai-version": "2020-10-01", "openai-processing-ms": "1", **(extra or {})}


def _json(body: Any, rid: str, status: int = 200, extra: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, _headers(rid, extra), media_type="application/json")


def _record(state: OpenAIEmulatorState, request: Request, fields: dict[str, Any]) -> None:
    state.requests.append(RecordedRequest(request.method, request.url.path, request.url.query,
                                          {k.lower(): v for k, v in request.headers.items()}, _summarise(fields)))


def _auth_error(request: Request, state: OpenAIEmulatorState) -> ApiError | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    if token == state.api_key:
        return None
    if not token:
        msg = ("You didn't provide an API key. You need to provide your API key in an Authorization header "
               "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
    else:
        shown = token[:3] + "*" * max(len(token) - 7, 0) + token[-4:] if len(token) > 8 else token
        msg = (f"Incorrect API key provided: {shown}. You can find your API key at "
               "https://platform.openai.com/account/api-keys.")
    return ApiError(msg, None, "invalid_api_key", status=401)


def _endpoint(endpoint: str, auth=None, admit=None):
    """Handler for one /v1/images/* endpoint: record, delay, auth, fail_next, validate, answer.
    Another vendor serving this API in its own way (simulators/azure_openai.py) passes `auth`
    (request, state -> ApiError | None) and `admit` (request, state, fields -> None, may rewrite
    the fields or raise ApiError), which runs before the fields are validated."""
    auth = auth or _auth_error

    async def handler(request: Request) -> Response:
        state: OpenAIEmulatorState = request.app.state.emulator
        rid, kind, fields, parse_error = "req_" + secrets.token_hex(16), endpoint, {}, None
        try:
            kind, fields = await _parse(request, endpoint)
        except ApiError as exc:
            parse_error = exc
        _record(state, request, fields)
        try:
            deadline = time.monotonic() + state.delay
            while (left := deadline - time.monotonic()) > 0:  # the delay ends early if the client gives up
                if await request.is_disconnected():
                    return Response(status_code=499)
                await asyncio.sleep(min(left, 0.05))
            if err := auth(request, state):
                raise err
            if state.failures:
                status, body, extra = state.failures.popleft()
                return _json(body, rid, status, extra)
            if parse_error:
                raise parse_error
            if admit is not None:
                admit(request, state, fields)
            p = validate(kind, fields, state.today)
            needle = state.refuse_prompts_containing
            if needle and needle.lower() in p.get("prompt", "").lower():
                msg, typ, code = POLICY_ERRORS[p["model"] in GPT_MODELS]
                raise ApiError(msg.format(rid=rid), None, code, type_=typ)
            return _result(p, endpoint, request, state, rid)
        except ApiError as exc:
            return _json(exc.body, rid, exc.status)
    return handler


async def _file(request: Request) -> Response:
    """GET /v1/files/{name}?expires=...: the images behind DALL·E ``url`` answers (no key needed)."""
    state: OpenAIEmulatorState = request.app.state.emulator
    _record(state, request, {})
    entry = state.files.get(request.path_params["name"])
    if not entry or request.query_params.get("expires") != str(entry[2]) or time.time() > entry[2]:
        return Response(b"The specified blob does not exist or has expired.", 404, media_type="text/plain")
    return Response(entry[0], media_type=entry[1])


async def _not_found(request: Request) -> Response:
    _record(request.app.state.emulator, request, {})
    body = {"error": {"message": f"Invalid URL ({request.method} {request.url.path})",
                      "type": "invalid_request_error", "param": None, "code": None}}
    return _json(body, "req_" + secrets.token_hex(16), 404)


def create_app(state: OpenAIEmulatorState | None = None) -> Starlette:
    """Starlette app serving /v1/images/{generations,edits,variations} and /v1/files/{name}."""
    app = Starlette(routes=[
        Route("/v1/images/generations", _endpoint("generations"), methods=["POST"]),
        Route("/v1/images/edits", _endpoint("edits"), methods=["POST"]),
        Route("/v1/images/variations", _endpoint("variations"), methods=["POST"]),
        Route("/v1/files/{name}", _file, methods=["GET"]),
        Route("/{path:path}", _not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ])
    app.state.emulator = state if state is not None else OpenAIEmulatorState()
    return app
