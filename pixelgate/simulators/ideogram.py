"""Strict loopback emulator of the Ideogram API: 4.0's generate, the 3.0 endpoints and the legacy ones.

Authority: ../shared/upstreams/ideogram.md and the OpenAPI definition it cites. Serve it with
``tests.emulators.server.serve(create_app(state))`` in the tests, or in-process (see pixelgate.simulators); the base URL stands in for
https://api.ideogram.ai (header ``Api-Key``).

  POST /v1/ideogram-v4/generate  multipart: text_prompt | json_prompt (| the legacy prompt), exactly
       one; resolution (one of 21 2K sizes), rendering_speed (TURBO, DEFAULT, QUALITY), seed
  POST /v1/ideogram-v3/{generate,remix,edit,reframe,replace-background}  multipart (generate: or JSON)
  POST /generate  JSON {"image_request": {...}}
  POST /remix, /upscale  multipart: image_request (a JSON string) + image_file
  POST /edit, /describe  multipart fields + image_file (+ mask)
  GET  /api/images/ephemeral/<id>.png?exp=<unix>&sig=<hex>   the images behind data[].url
Answers {"created": <ISO>, "data": [{url, prompt, resolution, is_image_safe, seed, style_type}]}
(describe: {"descriptions": [{"text"}]}).

Choices where the reference is silent or unconfirmed:
* Every error body is {"error": "<message>"} (the spec shows that shape for 422 only). A bad or
  missing key is 401, but 403 on remix and upscale (3.0 and legacy), as the spec lists.
* A field an endpoint does not define is refused with 400 (the real API may ignore it), as is a
  body that is not multipart (or JSON where the endpoint takes JSON); repeated parts are only
  taken for the list fields.
* Safety: a prompt containing ``state.unsafe_prompts_containing`` ("forbidden") answers 200 with
  every image ``is_image_safe: false`` and ``url: null``; one containing
  ``state.refuse_prompts_containing`` ("prohibited") is refused whole: 422. ``state.unsafe_images
  = k`` marks the first k images of each answer unsafe.
* Sizes: an aspect ratio renders at the largest resolution of that ratio (16x9 -> 1312x736, as in
  the reference's example; legacy ASPECT_16_9 -> 1280x720); edit and replace-background keep the
  input's size; reframe refuses a non-square image; upscale doubles the input.
* The same seed gives the same picture (the source document warns against a seed with
  num_images > 1 for that reason). More than ``state.max_in_flight`` requests at once: 429.
* ``delay`` is waited before the key check; ``fail_next`` answers after it.
* 4.0 (developer.ideogram.ai's generate-v4 page): multipart only, as its example; the fields
  that page shows plus seed (an earlier OpenAPI revision and ComfyUI's client send it) and the
  legacy `prompt` its describe-v4 page names. magic_prompt_option and custom_model_uri (that
  earlier revision) and aspect_ratio / num_images (some third-party clients) are refused as
  unknown. rendering_speed FLASH is 400, as the page says. The 21 resolutions are Replicate's and
  ComfyUI's list (the page names the enum without its values); none given renders 2048x2048. A
  text prompt is magic-prompted (the answer's prompt is expanded), a json_prompt is not. The
  answer carries `response_type: "url"` and no style_type, as the page's example.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import math
import random
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["IdeogramEmulatorState", "RecordedRequest", "Upload", "create_app"]

MB = 1024 * 1024
MAX_SEED = 2147483647
V3_RATIOS = ("1x3", "3x1", "1x2", "2x1", "9x16", "16x9", "10x16", "16x10", "2x3", "3x2", "3x4", "4x3",
             "4x5", "5x4", "1x1")
V3_RESOLUTIONS = tuple(
    "512x1536 576x1408 576x1472 576x1536 640x1344 640x1408 640x1472 640x1536 704x1152 704x1216 704x1280 704x1344 "
    "704x1408 704x1472 736x1312 768x1088 768x1216 768x1280 768x1344 800x1280 832x960 832x1024 832x1088 832x1152 "
    "832x1216 832x1248 864x1152 896x960 896x1024 896x1088 896x1120 896x1152 960x832 960x896 960x1024 960x1088 "
    "1024x832 1024x896 1024x960 1024x1024 1088x768 1088x832 1088x896 1088x960 1120x896 1152x704 1152x832 1152x864 "
    "1152x896 1216x704 1216x768 1216x832 1248x832 1280x704 1280x768 1280x800 1312x736 1344x640 1344x704 1344x768 "
    "1408x576 1408x640 1408x704 1472x576 1472x640 1472x704 1536x512 1536x576 1536x640".split())
V4_RESOLUTIONS = tuple(
    "2048x2048 1440x2880 2880x1440 1664x2496 2496x1664 1792x2240 2240x1792 1440x2560 2560x1440 1600x2560 "
    "2560x1600 1728x2304 2304x1728 1296x3168 3168x1296 1152x2944 2944x1152 1248x3328 3328x1248 1280x3072 "
    "3072x1280".split())
LEGACY_RATIOS = ("ASPECT_10_16", "ASPECT_16_10", "ASPECT_9_16", "ASPECT_16_9", "ASPECT_3_2", "ASPECT_2_3",
                 "ASPECT_4_3", "ASPECT_3_4", "ASPECT_1_1", "ASPECT_1_3", "ASPECT_3_1")
LEGACY_RESOLUTIONS = tuple("RESOLUTION_" + r.replace("x", "_") for r in (
    set(V3_RESOLUTIONS) - {"800x1280"} | {"640x1024", "720x1280", "768x1024", "768x1152", "768x1232",
                                          "1024x640", "1024x768", "1152x768", "1232x768", "1280x720"}))
LEGACY_MODELS = ("V_1", "V_1_TURBO", "V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO", "V_3", "AUTO")
STYLE_PRESETS = tuple(
    "80S_ILLUSTRATION 90S_NOSTALGIA ABSTRACT_ORGANIC ANALOG_NOSTALGIA ART_BRUT ART_DECO ART_POSTER AURA "
    "AVANT_GARDE BAUHAUS BLUEPRINT BLURRY_MOTION BRIGHT_ART C4D_CARTOON CHILDRENS_BOOK COLLAGE "
    "COLORING_BOOK_I COLORING_BOOK_II CUBISM DARK_AURA DOODLE DOUBLE_EXPOSURE DRAMATIC_CINEMA EDITORIAL "
    "EMOTIONAL_MINIMAL ETHEREAL_PARTY EXPIRED_FILM FLAT_ART FLAT_VECTOR FOREST_REVERIE GEO_MINIMALIST "
    "GLASS_PRISM GOLDEN_HOUR GRAFFITI_I GRAFFITI_II HALFTONE_PRINT HIGH_CONTRAST HIPPIE_ERA ICONIC "
    "JAPANDI_FUSION JAZZY LONG_EXPOSURE MAGAZINE_EDITORIAL MINIMAL_ILLUSTRATION MIXED_MEDIA MONOCHROME "
    "NIGHTLIFE OIL_PAINTING OLD_CARTOONS PAINT_GESTURE POP_ART RETRO_ETCHING RIVIERA_POP SPOTLIGHT_80S "
    "STYLIZED_RED SURREAL_COLLAGE TRAVEL_POSTER VINTAGE_GEO VINTAGE_POSTER WATERCOLOR WEIRD WOODBLOCK_PRINT".split())
PALETTES = ("EMBER", "FRESH", "JUNGLE", "MAGIC", "MELON", "MOSAIC", "PASTEL", "ULTRAMARINE")
MAGIC = ("AUTO", "ON", "OFF")
V3_ENUMS = {"aspect_ratio": V3_RATIOS, "resolution": V3_RESOLUTIONS, "magic_prompt": MAGIC,
            "rendering_speed": ("FLASH", "TURBO", "BALANCED", "DEFAULT", "QUALITY"),
            "style_type": ("AUTO", "GENERAL", "REALISTIC", "DESIGN", "CUSTOM", "FICTION", "STYLIZED"),
            "style_preset": STYLE_PRESETS}
V4_ENUMS = {"resolution": V4_RESOLUTIONS, "rendering_speed": ("TURBO", "DEFAULT", "QUALITY")}
V4_PROMPTS = ("text_prompt", "json_prompt", "prompt")
LEGACY_ENUMS = {"aspect_ratio": LEGACY_RATIOS, "resolution": LEGACY_RESOLUTIONS, "model": LEGACY_MODELS,
                "magic_prompt_option": MAGIC, "magic_prompt_version": ("V_0", *(f"V_0_{i}" for i in range(1, 9))),
                "style_type": ("AUTO", "GENERAL", "FICTION", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME", "CUSTOM",
                               "STYLIZED"),
                "describe_model_version": ("V_2", "V_3")}
INTS = {"seed": (0, MAX_SEED), "num_images": (1, 8), "image_weight": (1, 100), "resemblance": (1, 100),
        "detail": (1, 100)}
FILES = {"image", "mask", "image_file", "style_reference_images", "character_reference_images",
         "character_reference_images_mask"}
LISTS = {"style_reference_images", "character_reference_images", "character_reference_images_mask", "style_codes"}
_V3 = {"seed", "rendering_speed", "num_images", "style_preset", "color_palette", "style_codes",
       "style_reference_images"}
_V3_CHAR = {"custom_model_uri", "character_reference_images", "character_reference_images_mask"}
_V3_GEN = _V3 | _V3_CHAR | {"prompt", "aspect_ratio", "resolution", "magic_prompt", "negative_prompt", "style_type"}
_LEGACY_REQ = {"prompt", "aspect_ratio", "resolution", "model", "magic_prompt_option", "magic_prompt_version",
               "seed", "style_type", "negative_prompt", "num_images", "color_palette"}
# path -> dialect, fields taken, fields required, output size ("ratio" | "input" | "double" |
# "describe"), status for a bad key. "wrapped": multipart image_request (JSON string) + image_file.
ENDPOINTS: dict[str, tuple[str, set[str], set[str], str, int]] = {
    "/v1/ideogram-v4/generate": ("v4", {*V4_PROMPTS, "resolution", "rendering_speed", "seed"}, set(), "ratio",
                                 401),
    "/v1/ideogram-v3/generate": ("v3", _V3_GEN, {"prompt"}, "ratio", 401),
    "/v1/ideogram-v3/remix": ("v3", _V3_GEN | {"image", "image_weight"}, {"image", "prompt"}, "ratio", 403),
    "/v1/ideogram-v3/edit": ("v3", _V3 | _V3_CHAR | {"image", "mask", "prompt", "magic_prompt", "style_type"},
                             {"image", "mask", "prompt"}, "input", 401),
    "/v1/ideogram-v3/reframe": ("v3", _V3 | {"image", "resolution"}, {"image", "resolution"}, "ratio", 401),
    "/v1/ideogram-v3/replace-background": ("v3", _V3 | {"image", "prompt", "magic_prompt"}, {"image", "prompt"},
                                           "input", 401),
    "/generate": ("json", _LEGACY_REQ, {"prompt"}, "ratio", 401),
    "/remix": ("wrapped", _LEGACY_REQ | {"image_weight"}, {"prompt"}, "ratio", 403),
    "/edit": ("form", {"image_file", "mask", "prompt", "model", "magic_prompt_option", "num_images", "seed",
                       "style_type"}, {"image_file", "mask", "prompt", "model"}, "input", 401),
    "/upscale": ("wrapped", {"prompt", "resemblance", "detail", "magic_prompt_option", "magic_prompt_version",
                             "num_images", "seed"}, set(), "double", 403),
    "/describe": ("form", {"image_file", "describe_model_version"}, {"image_file"}, "describe", 401),
}
SAFETY_ERROR = "Prompt provided failed safety check due to the inclusion of prohibited content."


@dataclass
class Upload:
    filename: str | None
    content_type: str | None
    data: bytes
    image: Image.Image | None = None

    def __post_init__(self) -> None:
        try:
            self.image = Image.open(io.BytesIO(self.data))
            self.image.load()
        except Exception:  # Pillow raises assorted types for undecodable bytes
            self.image = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    content_type: str
    fields: dict[str, Any]  # JSON body, or multipart text parts as sent (strings)
    files: dict[str, list[Upload]]


@dataclass
class IdeogramEmulatorState:
    api_key: str = "ideogram-emulator-key"
    delay: float = 0.0
    unsafe_prompts_containing: str = "forbidden"
    refuse_prompts_containing: str = "prohibited"
    unsafe_images: int = 0
    max_in_flight: int = 10
    url_ttl: float = 3600.0
    requests: list[RecordedRequest] = field(default_factory=list)
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # image id -> (png, expiry)
    failures: deque = field(default_factory=deque)
    in_flight: int = 0
    secret: str = field(default_factory=lambda: secrets.token_hex(8))

    def fail_next(self, status: int, body: Any = None, count: int = 1, headers: dict | None = None) -> None:
        """Answer the next ``count`` API requests (after the key check) with ``status``/``body``."""
        if body is None:
            body = {"error": HTTPStatus(status).phrase}
        self.failures.extend([(status, body, dict(headers or {}))] * count)

    def api_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status, self.message = status, message


def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


async def _read(request: Request, path: str, dialect: str) -> tuple[str, dict[str, Any]]:
    """The body as (content type, fields): JSON values typed, multipart text parts as strings,
    file parts as Uploads (list fields as lists)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" and (dialect == "json" or dialect == "v3" and path.endswith("/generate")):
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise ApiError("Invalid JSON body.") from None
        if not isinstance(body, dict):
            raise ApiError("The request body must be a JSON object.")
        return ctype, body
    if ctype != "multipart/form-data" or dialect == "json":
        want = "application/json" if dialect == "json" else "multipart/form-data"
        raise ApiError(f"Unsupported content type '{ctype or 'none'}': this endpoint takes {want}.")
    try:
        form = await request.form(max_files=32, max_fields=64)
    except Exception as exc:  # python-multipart's assorted parse errors
        raise ApiError(f"Malformed multipart body: {exc}") from None
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            value = Upload(value.filename, value.content_type, await value.read())
        if name in LISTS:
            fields.setdefault(name, []).append(value)
        elif name in fields:
            raise ApiError(f"Field '{name}' was given more than once.")
        else:
            fields[name] = value
    return ctype, fields


def _typed(name: str, value: Any, from_form: bool, enums: dict[str, tuple]) -> Any:
    if name in FILES:
        uploads = value if isinstance(value, list) else [value]
        if not all(isinstance(u, Upload) for u in uploads) or (name not in LISTS and isinstance(value, list)):
            raise ApiError(f"'{name}' must be {'files' if name in LISTS else 'a file'}.")
        for u in uploads:
            if u.image is None or u.image.format not in ("PNG", "JPEG", "WEBP"):
                raise ApiError(f"'{name}' must be a JPEG, PNG or WebP image.")
            if len(u.data) > 10 * MB:
                raise ApiError(f"'{name}' is larger than 10 MB.")
        return value
    if isinstance(value, Upload) or (isinstance(value, list) and name != "style_codes"):
        raise ApiError(f"'{name}' must be a single text value.")
    if name in INTS:
        if from_form and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        lo, hi = INTS[name]
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ApiError(f"'{name}' must be an integer between {lo} and {hi}; got {value!r}.")
        return value
    if name == "color_palette":
        if from_form and isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ApiError("'color_palette' must be a JSON object.") from None
        _palette(value)
        return value
    if name == "json_prompt":
        if from_form and isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ApiError("'json_prompt' must be a JSON object.") from None
        if not isinstance(value, dict) or not value:
            raise ApiError("'json_prompt' must be a non-empty JSON object.")
        return value
    if name == "style_codes":
        if not isinstance(value, list) or not all(isinstance(c, str) and re.fullmatch(r"[0-9a-fA-F]{8}", c)
                                                  for c in value):
            raise ApiError("'style_codes' must be 8-character hexadecimal codes.")
        return value
    if not isinstance(value, str):
        raise ApiError(f"'{name}' must be a string.")
    if name in enums and value not in enums[name]:
        raise ApiError(f"Invalid '{name}': '{value}'. Expected one of: {', '.join(enums[name])}.")
    return value


def _palette(value: Any) -> None:
    if not isinstance(value, dict) or len(value) != 1 or not ({"name", "members"} & set(value)):
        raise ApiError("'color_palette' takes either a preset 'name' or 'members'.")
    if "name" in value:
        if value["name"] not in PALETTES:
            raise ApiError(f"Invalid color palette name '{value['name']}'. Expected one of: {', '.join(PALETTES)}.")
        return
    members = value["members"]
    if not isinstance(members, list) or not 1 <= len(members) <= 8:
        raise ApiError("'color_palette.members' must list 1 to 8 colours.")
    for m in members:
        if not isinstance(m, dict) or set(m) - {"color_hex", "color_weight"} or not re.fullmatch(
                r"#(?:[0-9a-fA-F]{3}){1,2}", str(m.get("color_hex"))):
            raise ApiError("Each palette member needs a 'color_hex' like '#aabbcc'.")
        w = m.get("color_weight", 0.5)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.05 <= w <= 1.0:
            raise ApiError("'color_weight' must be between 0.05 and 1.0.")


def _validate(path: str, ctype: str, raw: dict[str, Any]) -> dict[str, Any]:
    dialect, allowed, required, _, _ = ENDPOINTS[path]
    form = ctype == "multipart/form-data"
    if dialect == "json":
        if set(raw) != {"image_request"} or not isinstance(raw["image_request"], dict):
            raise ApiError("The body must be {\"image_request\": {...}}.")
        raw, form = raw["image_request"], False
    elif dialect == "wrapped":
        for name in set(raw) - {"image_request", "image_file"}:
            raise ApiError(f"Unknown field '{name}'.")
        if not isinstance(raw.get("image_file"), Upload) or not isinstance(raw.get("image_request"), str):
            raise ApiError("Both 'image_request' (a JSON string) and 'image_file' (a file) are required.")
        try:
            inner = orjson.loads(raw["image_request"])
        except orjson.JSONDecodeError:
            inner = None
        if not isinstance(inner, dict):
            raise ApiError("'image_request' must be a JSON object.")
        raw, form = {**inner, "image_file": raw["image_file"]}, False
        allowed = allowed | {"image_file"}
    enums = {"v3": V3_ENUMS, "v4": V4_ENUMS}.get(dialect, LEGACY_ENUMS)
    if dialect == "v4":
        _v4_rules(raw)
    for name in raw:
        if name not in allowed:
            raise ApiError(f"Unknown field '{name}'.")
    for name in sorted(required):
        if raw.get(name) in (None, "", []):
            raise ApiError(f"Missing required field '{name}'.")
    p = {k: _typed(k, v, form, enums) for k, v in raw.items()}
    if "aspect_ratio" in p and "resolution" in p:
        raise ApiError("'aspect_ratio' and 'resolution' cannot be used together.")
    if dialect == "v3":
        _v3_rules(path, p)
    elif dialect != "v4":
        _legacy_rules(path, p)
    source = p.get("image") or p.get("image_file")
    if "mask" in p:
        _mask(p["mask"], source)
    if path.endswith("/reframe") and source.image.width != source.image.height:
        raise ApiError(f"The image to reframe must be square; got {source.image.width}x{source.image.height}.")
    return p


def _v4_rules(raw: dict[str, Any]) -> None:
    """Checked before the enums, so FLASH gets the vendor's own reason."""
    given = [name for name in V4_PROMPTS if raw.get(name) not in (None, "")]
    if len(given) != 1:
        raise ApiError("Exactly one of 'text_prompt' and 'json_prompt' is required (the legacy 'prompt' counts as "
                       f"'text_prompt'); got {', '.join(given) or 'none'}.")
    if raw.get("rendering_speed") == "FLASH":
        raise ApiError("rendering_speed FLASH is coming soon for Ideogram 4.0; use TURBO, DEFAULT or QUALITY.")


def _v3_rules(path: str, p: dict[str, Any]) -> None:
    if "style_codes" in p and ("style_reference_images" in p or "style_type" in p):
        raise ApiError("'style_codes' cannot be combined with 'style_reference_images' or 'style_type'.")
    for name in ("style_reference_images", "character_reference_images"):
        if sum(len(u.data) for u in p.get(name, [])) > 10 * MB:
            raise ApiError(f"'{name}' must total at most 10 MB.")
    refs, ref_masks = p.get("character_reference_images", []), p.get("character_reference_images_mask", [])
    if len(refs) > 1:
        raise ApiError("Only one character reference image is supported.")
    if ref_masks and (len(ref_masks) != len(refs) or ref_masks[0].image.size != refs[0].image.size):
        raise ApiError("Each character reference mask must match its character reference image in size.")


def _legacy_rules(path: str, p: dict[str, Any]) -> None:
    model = p.get("model", "V_2")
    if path == "/edit" and model not in ("V_2", "V_2_TURBO"):
        raise ApiError(f"Model '{model}' does not support edit; only V_2 and V_2_TURBO do.")
    if "style_type" in p and model in ("V_1", "V_1_TURBO"):
        raise ApiError(f"'style_type' is only supported by V_2 and above, not by {model}.")
    if "negative_prompt" in p and model not in ("V_1", "V_1_TURBO", "V_2", "V_2_TURBO"):
        raise ApiError(f"'negative_prompt' is not supported by {model}.")
    if "resolution" in p and model in ("V_1", "V_1_TURBO"):
        raise ApiError(f"'resolution' is only supported by V_2 and above, not by {model}.")
    if "color_palette" in p and model in ("V_1", "V_1_TURBO", "V_2A", "V_2A_TURBO"):
        raise ApiError(f"'color_palette' is not supported by {model}.")


def _mask(mask: Upload, source: Upload) -> None:
    grey = mask.image.convert("L")
    if mask.image.size != source.image.size:
        raise ApiError(f"The mask ({mask.image.width}x{mask.image.height}) must be the same size as the image "
                       f"({source.image.width}x{source.image.height}).")
    if {v for v, n in enumerate(grey.histogram()) if n} - {0, 255}:
        raise ApiError("The mask must contain only black and white pixels.")
    if grey.getextrema() == (255, 255):
        raise ApiError("The mask is all white: it marks nothing to edit (black marks the area to edit).")


def _ratio_size(word: str, resolutions: tuple[str, ...]) -> tuple[int, int]:
    """An aspect ratio's output size: the largest resolution of (nearly) that ratio."""
    w, h = map(int, re.findall(r"\d+", word))
    sizes = [tuple(map(int, re.findall(r"\d+", r))) for r in resolutions]
    return min(sizes, key=lambda s: (round(abs(math.log(s[0] / s[1]) - math.log(w / h)), 3), -s[0] * s[1]))


def _output_size(path: str, p: dict[str, Any]) -> tuple[int, int]:
    rule, v3 = ENDPOINTS[path][3], path.startswith("/v1/")
    resolutions = V4_RESOLUTIONS if ENDPOINTS[path][0] == "v4" else V3_RESOLUTIONS if v3 else LEGACY_RESOLUTIONS
    source = p.get("image") or p.get("image_file")
    if rule in ("input", "double"):
        return source.image.size
    if "resolution" in p:
        return tuple(map(int, re.findall(r"\d+", p["resolution"])))  # type: ignore[return-value]
    return _ratio_size(p.get("aspect_ratio", "1x1" if v3 else "ASPECT_1_1"), resolutions)


@functools.lru_cache(maxsize=64)
def render(width: int, height: int, key: str) -> bytes:
    digest = hashlib.sha256(key.encode()).digest()
    img = Image.new("RGB", (width, height), tuple(digest[:3]))
    img.paste(tuple(digest[3:6]), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _answer(request: Request, state: IdeogramEmulatorState, path: str, p: dict[str, Any]) -> Response:
    if ENDPOINTS[path][3] == "describe":
        return _json({"descriptions": [{"text": "A flat coloured square with a lighter square in its centre."}]})
    v4 = ENDPOINTS[path][0] == "v4"
    prompt = p.get("text_prompt") or p.get("prompt") or (orjson.dumps(p["json_prompt"]).decode()
                                                          if "json_prompt" in p else "")
    if state.refuse_prompts_containing and state.refuse_prompts_containing.lower() in prompt.lower():
        raise ApiError(SAFETY_ERROR, 422)
    unsafe = bool(state.unsafe_prompts_containing) and state.unsafe_prompts_containing.lower() in prompt.lower()
    width, height = _output_size(path, p)
    # 4.0 magic-prompts every text prompt and never a json_prompt
    magic = "ON" if v4 and "json_prompt" not in p else p.get("magic_prompt", p.get("magic_prompt_option"))
    final = f"{prompt}, rendered in rich detail with dramatic lighting" if magic == "ON" else prompt
    host = request.headers.get("host", f"{request.url.hostname}:{request.url.port}")
    data = []
    for i in range(p.get("num_images", 1)):
        seed = p.get("seed", random.randint(0, MAX_SEED))
        item: dict[str, Any] = {"url": None, "prompt": final, "resolution": f"{width}x{height}",
                                "is_image_safe": not unsafe and i >= state.unsafe_images, "seed": seed}
        if "style_type" in p or path.startswith("/v1/") and not v4:
            item["style_type"] = p.get("style_type", "GENERAL")
        out = (width * 2, height * 2) if ENDPOINTS[path][3] == "double" else (width, height)
        if ENDPOINTS[path][3] == "double":
            item["upscaled_resolution"] = f"{out[0]}x{out[1]}"
        if item["is_image_safe"]:
            image_id, exp = secrets.token_urlsafe(16), int(time.time() + state.url_ttl)
            state.files[image_id] = (render(*out, f"{path}\0{final}\0{seed}"), exp)
            item["url"] = (f"{request.url.scheme}://{host}/api/images/ephemeral/{image_id}.png"
                           f"?exp={exp}&sig={_sig(state, image_id, exp)}")
        data.append(item)
    body: dict[str, Any] = {"created": datetime.now(timezone.utc).isoformat(), "data": data}
    if v4:
        body["response_type"] = "url"
    return _json(body)


def _sig(state: IdeogramEmulatorState, image_id: str, exp: int) -> str:
    return hashlib.sha256(f"{state.secret}:{image_id}:{exp}".encode()).hexdigest()[:32]


async def _api(request: Request) -> Response:
    state: IdeogramEmulatorState = request.app.state.emulator
    path = request.url.path
    dialect, _, _, _, auth_status = ENDPOINTS[path]
    ctype, raw, parse_error = "", {}, None
    try:
        ctype, raw = await _read(request, path, dialect)
    except ApiError as exc:
        parse_error = exc
    text = {k: v for k, v in raw.items() if k not in FILES}
    files = {k: (v if isinstance(v, list) else [v]) for k, v in raw.items() if k in FILES}
    state.requests.append(RecordedRequest(request.method, path, {k.lower(): v for k, v in request.headers.items()},
                                          request.headers.get("content-type", ""), text, files))
    state.in_flight += 1
    try:
        deadline = time.monotonic() + state.delay
        while (left := deadline - time.monotonic()) > 0:
            if await request.is_disconnected():
                return Response(status_code=499)
            await asyncio.sleep(min(left, 0.05))
        if request.headers.get("api-key") != state.api_key:
            raise ApiError("Invalid or missing Api-Key." if auth_status == 401 else "Not authorized.", auth_status)
        if state.in_flight > state.max_in_flight:
            raise ApiError("Too many requests: the in-flight request limit was reached.", 429)
        if state.failures:
            status, body, headers = state.failures.popleft()
            return _json(body, status, headers)
        if parse_error:
            raise parse_error
        return _answer(request, state, path, _validate(path, ctype, raw))
    except ApiError as exc:
        return _json({"error": exc.message}, exc.status)
    finally:
        state.in_flight -= 1


async def _image(request: Request) -> Response:
    state: IdeogramEmulatorState = request.app.state.emulator
    state.requests.append(RecordedRequest("GET", request.url.path, {}, "", dict(request.query_params), {}))
    image_id = request.path_params["image_id"]
    entry = state.files.get(image_id)
    exp = request.query_params.get("exp", "")
    if (entry is None or exp != str(entry[1]) or time.time() > entry[1]
            or request.query_params.get("sig") != _sig(state, image_id, entry[1])):
        return Response(b"Forbidden: the link is invalid or has expired.", 403, media_type="text/plain")
    return Response(entry[0], media_type="image/png")


def create_app(state: IdeogramEmulatorState | None = None) -> Starlette:
    app = Starlette(routes=[*(Route(path, _api, methods=["POST"]) for path in ENDPOINTS),
                            Route("/api/images/ephemeral/{image_id}.png", _image, methods=["GET"])])
    app.state.emulator = state if state is not None else IdeogramEmulatorState()
    return app
