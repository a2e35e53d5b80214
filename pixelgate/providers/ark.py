"""Volcengine Ark: Doubao Seedream 3.0 / 4.0 / 4.5 / 5.0-lite / 5.0 Pro / 5.0 Flash and SeedEdit 3.0.

Upstream (authority: ../shared/upstreams/volcengine-ark.md), synchronous, Bearer auth, JSON only:
  POST /api/v3/images/generations
    {model, prompt, size: "2K" | "2048x2048" | "adaptive", image: <url|data URL> | [... <= 14],
     seed, guidance_scale (3.0 only), sequential_image_generation: "auto" | "disabled",
     sequential_image_generation_options: {max_images: 1..15}, watermark, response_format, stream,
     output_format (5.x), tools (5.0-lite)}
  -> {"model", "created", "data": [{"b64_json" | "url", "size"} | {"error": {code, message}}], "usage"}
  stream=true: SSE `image_generation.partial_succeeded` (one finished image), `.partial_failed`,
      `.completed`, then `data: [DONE]`
  errors: {"error": {"code", "message", "param", "type"}}; moderation codes *SensitiveContentDetected
There is no `n` (one image per call unless sequential generation is "auto", when the model makes up
to max_images, maybe fewer) and no mask (edits are described in the prompt).
5.0 Flash (doubao-seedream-5-0-flash-260915) is served with 5.0 Pro's rules (one image a call, no
stream, 1K/2K up to 2048x2048, 10 references): third-party integrations report the same limits,
no vendor page for it was read.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pixelgate.domain import sizes
from pixelgate.domain.request import ImageRequest
from pixelgate.domain.result import Finished, UpstreamImage
from pixelgate.domain.sizes import Size
from pixelgate.errors import (InvalidRequest, UpstreamBadResponse, UpstreamContentFiltered,
                              UpstreamError, UpstreamRateLimited, UpstreamRejected,
                              UpstreamUnavailable)
from pixelgate.providers.base import (EDIT, GENERATE, Capabilities, Channel, Provider, UpstreamCall,
                                      UpstreamReply, VendorOptions, error_for_status)

MB = 1024 * 1024
SEED_MAX = 2147483647
MAX_REFS = 14
GROUP_LIMIT = 15  # reference images + generated images


@dataclass(frozen=True)
class Family:
    """A model family's `size` rules: keywords (our tier -> the vendor's keyword; a tier missing
    here is refused when there are any), a pixel-area and aspect range, and recommended sizes."""

    keywords: dict[str, str]
    min_area: int
    max_area: int
    max_aspect: float
    recommended: tuple[str, ...]
    default_area: int = 2048 * 2048
    min_side: int = 1
    max_side: int = 1 << 20
    adaptive: bool = False  # SeedEdit: the output follows the input image


_REC_40 = ("2048x2048", "2304x1728", "1728x2304", "2560x1440", "1440x2560", "2496x1664", "1664x2496",
           "3024x1296")
_REC_45 = ("2048x2048", "2304x1728", "1728x2304", "2848x1600", "1600x2848", "2496x1664", "1664x2496",
           "3136x1344")
FAMILIES = {
    "3.0": Family({}, 512 * 512, 2048 * 2048, 4, ("1024x1024", "864x1152", "1152x864", "1280x720",
                  "720x1280", "832x1248", "1248x832", "1512x648"), 1024 * 1024, 512, 2048),
    "edit": Family({}, 0, 0, 1, (), adaptive=True),
    "4.0": Family({"1K": "1K", "2K": "2K", "4K": "4K"}, 921600, 4096 * 4096, 16, _REC_40),
    # The source document: "1K (not supported by the Doubao 4-5 series)".
    "4.5": Family({"2K": "2K", "4K": "4K"}, 2560 * 1440, 4096 * 4096, 16, _REC_45),
    # 5.0-lite makes 2K and 3K only (sources disagree on 4K): the source document's 1K and 4K
    # become its nearest tiers, and the pixel ceiling is 3072x3072 for the same reason.
    "5.0": Family({"1K": "2K", "2K": "2K", "4K": "3K"}, 2560 * 1440, 3072 * 3072, 16, _REC_45),
    # 5.0 Pro: 1K/2K, up to 2048x2048 pixels; a 4K asked for becomes its largest, 2K
    "5.0-pro": Family({"1K": "1K", "2K": "2K", "4K": "2K"}, 1280 * 720, 2048 * 2048, 16, (), 2048 * 2048),
}


def _fits(f: Family, w: int, h: int) -> bool:
    return (f.min_area <= w * h <= f.max_area and 1 / f.max_aspect <= w / h <= f.max_aspect
            and f.min_side <= min(w, h) and max(w, h) <= f.max_side)


def _clamp(f: Family, w: float, h: float) -> Size:
    """The same shape, scaled (and at worst squeezed) into the family's pixel rules."""
    aspect = min(max(w / h, 1 / f.max_aspect), f.max_aspect)
    area = min(max(w * h, f.min_area), f.max_area)
    width = math.sqrt(area * aspect)
    width = min(max(width, f.min_side * max(1, aspect)), f.max_side * min(1, aspect))
    height = width / aspect
    tries = [(round(width), round(height)), (math.ceil(width), math.ceil(height)),
             (math.floor(width), math.floor(height))]
    return Size(*next((t for t in tries if _fits(f, *t)), tries[0]))


def _allowed(f: Family) -> str:
    if f.adaptive:
        return "auto (the output follows the input image)"
    words = ", ".join(k for k, v in f.keywords.items() if k == v)
    return (f"{words + ', ' if words else ''}auto, or WIDTHxHEIGHT with {f.min_area} to {f.max_area} "
            f"pixels, aspect ratio within 1:{f.max_aspect:g} to {f.max_aspect:g}:1"
            + (f" and each side {f.min_side}-{f.max_side}" if f.max_side < 1 << 20 else ""))


def fit(f: Family, size: Size) -> str | None:
    """The vendor's `size` for any parsed size (None: leave it to the model), or InvalidRequest."""
    if f.adaptive:
        if size.is_auto:
            return "adaptive"
        raise InvalidRequest(f"Invalid value: '{sizes.describe(size)}'. Allowed: {_allowed(f)}.", field="size")
    if size.is_auto:
        return None
    if size.tier and f.keywords:
        if size.tier in f.keywords:
            return f.keywords[size.tier]
        raise InvalidRequest(f"Invalid value: '{size.tier}'. Allowed: {_allowed(f)}.", field="size")
    if size.width and size.height:  # exact pixels: as asked, or scaled into the vendor's range
        options = [_clamp(f, size.width, size.height)]
    else:  # a ratio: the vendor's recommended size for it, if any; else the ratio at the tier's area
        options = [o for o in map(sizes.parse, f.recommended if size.ratio else ())
                   if sizes.distance(size, o)[0] < 0.01]
        area = sizes.pixels_for(size, f.default_area, multiple=8, min_side=1, max_side=1 << 20)
        options = options or [_clamp(f, *area)]
    return sizes.nearest(size, options, allowed_text=_allowed(f)).wxh()


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_images: int = Field(default=15, ge=1, le=15)


class _Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["web_search"]


class ArkOptions(VendorOptions):
    watermark: bool = True
    guidance: float | None = Field(default=None, ge=1, le=10)
    """The source documents' name; Ark's own is guidance_scale. Seedream 3.0 / SeedEdit only."""
    guidance_scale: float | None = Field(default=None, ge=1, le=10)

    @field_validator("*", mode="before")
    @classmethod
    def _json_text(cls, value: Any) -> Any:
        if isinstance(value, str) and value[:1] in "{[":  # multipart edits carry objects as JSON text
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        return value


class SeedreamOptions(ArkOptions):
    sequential_image_generation: Literal["auto", "disabled"] = "disabled"
    sequential_image_generation_options: _Group | None = None
    image: str | list[str] | None = None
    """Reference images as http(s) URLs or data URLs (the source documents' common `image`)."""

    @field_validator("image")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        for ref in [value] if isinstance(value, str) else value or []:
            if ref and not ref.startswith(("http://", "https://", "data:image/")):
                raise ValueError("each reference image must be an http(s) URL or a data:image/... URL")
        return value


class Seedream50Options(SeedreamOptions):
    tools: list[_Tool] | None = None  # web search


class Seedream50ProOptions(ArkOptions):
    """5.0 Pro makes one image a call: no group mode (refused by the vendor even when disabled)."""

    image: str | list[str] | None = None
    _refs = field_validator("image")(SeedreamOptions._refs.__func__)


_COMMON = dict(max_n=10, n_per_call=1, qualities=("low", "medium", "high", "auto"),
               output_formats=("png", "jpeg", "webp"), image_formats=("png", "jpeg", "webp", "gif"),
               image_max_bytes=10 * MB)
_SEEDREAM = dict(_COMMON, operations=frozenset({GENERATE, EDIT}), stream=True, max_images=MAX_REFS)

def _caps(family: str, **fields: Any) -> Capabilities:
    return Capabilities(**fields, fit_size=partial(fit, FAMILIES[family]))


_CAPS = {
    "3.0": _caps("3.0", **_COMMON, operations=frozenset({GENERATE}), options=ArkOptions),
    "edit": _caps("edit", **_COMMON, operations=frozenset({EDIT}), max_images=1, options=ArkOptions),
    "4.0": _caps("4.0", **_SEEDREAM, options=SeedreamOptions),
    "4.5": _caps("4.5", **_SEEDREAM, options=SeedreamOptions),
    "5.0": _caps("5.0", **_SEEDREAM, options=Seedream50Options),
    "5.0-pro": _caps("5.0-pro", **{**_SEEDREAM, "stream": False, "max_images": 10}, options=Seedream50ProOptions),
}
# model id -> family; the source document's ids first, then the vendor's own.
FAMILY_OF = {"doubao-seedream-4-0": "4.0", "doubao-seedream-4-5": "4.5", "doubao-seedream-5.0-lite": "5.0",
             "doubao-seedream-3-0-t2i-250415": "3.0", "doubao-seededit-3-0-i2i-250628": "edit",
             "doubao-seedream-4-0-250828": "4.0", "doubao-seedream-4-5-251128": "4.5",
             "doubao-seedream-5-0-260128": "5.0", "doubao-seedream-5-0-lite-260128": "5.0",
             "doubao-seedream-5-0-pro-260628": "5.0-pro", "doubao-seedream-5-0-flash-260915": "5.0-pro"}
ALIASES = {"doubao-seedream-4-0": "doubao-seedream-4-0-250828",
           "doubao-seedream-4-5": "doubao-seedream-4-5-251128",
           "doubao-seedream-5.0-lite": "doubao-seedream-5-0-260128"}
SENSITIVE = "SensitiveContentDetected"
CHANNEL_FAULTS = ("InvalidEndpointOrModel", "ModelNotOpen", "UnsupportedModel", "AccountOverdue",
                  "AccessDenied", "AuthenticationError")


class Ark(Provider):
    name = "ark"
    default_base_url = "https://ark.cn-beijing.volces.com/api/v3"
    # url answers: ark-content-generation-v2-cn-beijing.tos-cn-beijing.volces.com (upstreams/volcengine-ark.md);
    # BytePlus keeps the same bucket names on its own domain
    image_hosts = ("ark-content-generation-*.tos-*.volces.com", "ark-content-generation-*.tos-*.bytepluses.com")
    timeout = 180.0  # a group of 4K images takes minutes
    models = {model: _CAPS[family] for model, family in FAMILY_OF.items()}

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        family = FAMILY_OF.get(model) or FAMILY_OF.get(req.model) or "4.0"
        opts = dict(req.extras)
        body: dict[str, Any] = {"model": ALIASES.get(model, model), "prompt": req.prompt or "",
                                "response_format": "b64_json", "watermark": opts.pop("watermark", True)}
        size = fit(FAMILIES[family], sizes.parse(req.size or "auto"))
        if size:
            body["size"] = size
        if req.seed is not None:
            if not -1 <= req.seed <= SEED_MAX:
                raise InvalidRequest(f"Invalid value: {req.seed}. 'seed' must be between -1 and {SEED_MAX}.",
                                     field="seed")
            body["seed"] = req.seed
        guidance = opts.pop("guidance_scale", None), opts.pop("guidance", None)
        guidance = guidance[0] if guidance[0] is not None else guidance[1]
        if guidance is not None and family in ("3.0", "edit"):
            body["guidance_scale"] = guidance  # 4.x and 5.x have no guidance: left out
        if req.mask is not None:
            raise InvalidRequest("Ark models take no mask: describe the edit in the prompt.", field="mask",
                                 code="unsupported_parameter")
        refs = [_data_url(img.data, img.format) for img in req.images]
        extra = opts.pop("image", None)
        refs += [_lower_data_url(r) for r in ([extra] if isinstance(extra, str) else extra or []) if r]
        most = 10 if family == "5.0-pro" else MAX_REFS
        if len(refs) > most:
            raise InvalidRequest(f"At most {most} reference images; got {len(refs)}.", field="image")
        if refs:
            body["image"] = refs[0] if len(refs) == 1 else refs
        group = opts.pop("sequential_image_generation_options", None)
        if opts.get("sequential_image_generation") == "auto":
            wanted = (group or {}).get("max_images")
            if wanted is not None and len(refs) + wanted > GROUP_LIMIT:
                raise InvalidRequest(
                    f"Reference images plus generated images may be at most {GROUP_LIMIT}: "
                    f"{len(refs)} reference image(s) leave room for {GROUP_LIMIT - len(refs)}, "
                    f"but max_images is {wanted}.", field="sequential_image_generation_options.max_images")
            body["sequential_image_generation_options"] = {"max_images": wanted or GROUP_LIMIT - len(refs)}
        if req.stream:
            if req.n > 1 or req.partial_images:
                field = "n" if req.n > 1 else "partial_images"
                raise InvalidRequest(f"Ark streams finished images of one call only: '{field}' cannot be "
                                     "used with stream (use sequential_image_generation 'auto' for a group).",
                                     field=field)
            body["stream"] = True
        if family in ("5.0", "5.0-pro") and req.output_format in ("png", "jpeg"):
            body["output_format"] = req.output_format  # 4.x always answer JPEG: the engine converts
        body.update(opts)
        headers = {"Authorization": f"Bearer {channel.api_key or ''}"}
        return UpstreamCall("POST", f"{self.base_url(channel)}/images/generations", headers, json=body,
                            stream=req.stream)

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished:
        body = reply.json(lift=("b64_json",))
        if not isinstance(body, dict):
            raise UpstreamBadResponse("upstream reply is not a JSON object")
        if body.get("error"):  # nothing was generated, said in an HTTP 200
            raise error_from(None, body["error"])
        items = body.get("data")
        if not isinstance(items, list):
            raise UpstreamBadResponse("upstream reply has no 'data' list of images")
        images, failed = [], []
        for item in items:
            if isinstance(item, dict) and item.get("error"):
                failed.append(item["error"])  # one image of a group refused; the others stand
            elif isinstance(item, dict) and (item.get("b64_json") or item.get("url")):
                images.append(UpstreamImage(b64=item.get("b64_json"), url=item.get("url")))
            else:
                raise UpstreamBadResponse("upstream reply has an image with neither b64_json nor url")
        if not images:
            if failed:
                raise error_from(None, failed[0])
            raise UpstreamBadResponse("The upstream answered without any image.")
        meta = {}
        if failed:
            codes = ", ".join(sorted({str(e.get("code")) for e in failed if isinstance(e, dict)}))
            meta["partial"] = f"{len(failed)} of {len(items)} images were withheld by the upstream ({codes})"
        return Finished(images, meta)

    def parse_stream_event(self, req: ImageRequest, event: str, data: Any) -> Finished | None:
        if not isinstance(data, dict):
            raise UpstreamBadResponse("upstream sent an event that is not a JSON object")
        kind = data.get("type") or event
        if kind == "image_generation.partial_succeeded":
            if not (data.get("b64_json") or data.get("url")):
                raise UpstreamBadResponse("upstream event has an image with neither b64_json nor url")
            return Finished([UpstreamImage(b64=data.get("b64_json"), url=data.get("url"))])
        if kind == "image_generation.partial_failed":
            if req.extras.get("sequential_image_generation") == "auto":
                return None  # one image of a group; the others may still come
            raise error_from(None, data.get("error") or {})  # the only image: nothing is left
        if data.get("error"):  # a failed `completed`, or a bare error frame
            raise error_from(None, data["error"])
        if kind == "image_generation.completed" and not (data.get("usage") or {}).get("generated_images", 1):
            raise UpstreamError("The upstream withheld every image of the group.", code="upstream_no_images")
        return None

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        body = reply.json_or_none()
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return error_for_status(reply.status, f"upstream answered HTTP {reply.status}")
        return error_from(reply.status, err)


def error_from(status: int | None, err: Any) -> UpstreamError:
    """Our class for an Ark error object; status None when it arrived inside an HTTP 200."""
    err = err if isinstance(err, dict) else {}
    code = str(err.get("code") or "")
    message = f"{err.get('message') or 'upstream error'} [{code or status}]"
    param = err.get("param") or None
    if status is None:
        status = 400 if code.startswith(("InvalidParameter", "MissingParameter")) else 500
    if SENSITIVE in code:
        return UpstreamContentFiltered(message, field=param)
    if code.startswith(CHANNEL_FAULTS):
        # The channel's key, account or model activation is at fault, not the client's request.
        return UpstreamUnavailable(message, code="upstream_auth_failed" if status in (401, 403) else None)
    if status == 429 or code.startswith(("RateLimitExceeded", "QuotaExceeded", "ServerOverloaded")):
        return UpstreamRateLimited(message)
    if 400 <= status < 500:
        return UpstreamRejected(message, field=param)
    return error_for_status(status, message, field=param)


def _data_url(data: bytes, fmt: str) -> str:
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode()}"


def _lower_data_url(ref: str) -> str:
    # Ark refuses an upper-case format in a data URL (data:image/PNG;...).
    if ref.startswith("data:image/"):
        head, sep, rest = ref.partition(";")
        return head.lower() + sep + rest
    return ref
