"""Black Forest Labs (FLUX). Every model is asynchronous: submit, then poll the polling_url.

Upstream (authority: ../shared/upstreams/bfl.md), header `x-key` on submit and on polls, JSON only:
  POST /v1/flux-2-{pro,max,flex,klein-4b,klein-9b}
       {"prompt", "width", "height", "input_image", "input_image_2".."_8" (bare base64),
        "seed", "safety_tolerance" 0-5, "output_format", ["steps", "guidance" (flex)]}
  POST /v1/flux-kontext-{pro,max}  {"prompt", "aspect_ratio": "16:9", "input_image".."_4", "seed",
                                    "safety_tolerance" 0-6 (<= 2 with an input image), "output_format"}
  POST /v1/flux-pro-1.1, /v1/flux-dev      {"prompt", "width", "height" (256-1440, x32), ...}
  POST /v1/flux-pro-1.1-ultra              {"prompt", "aspect_ratio", "raw", ...}
  POST /v1/flux-pro-1.0-fill               {"prompt", "image", "mask" (white = inpaint), ...}
  POST /v1/flux-3-image  {"prompt" (the only required field; bounding boxes are a JSON array in
                          it), "images": [<= 10 URLs or bare base64], "aspect_ratio": "auto" (the
                          default: the first image's shape) | one of 15 ratios, "resolution":
                          "768sq" | "1k" (default) | "1.5k" | "2k" | "4k", "grounding" (default
                          true), "safety_tolerance" 0-4}; no seed, width/height or output_format
                          (docs.bfl.ai/flux_3/flux3_image_overview; the ratio and resolution lists
                          and the 0-4 range are third parties': Replicate, fal, Comfy, Vercel)
    -> {"id", "polling_url"}
  GET  <polling_url>  -> {"id", "status": "Pending" | "Ready" | "Request Moderated" |
                          "Content Moderated" | "Error" | "Task not found",
                          "result": {"sample": <URL, valid 10 min; FLUX 3: 1 hour>, "prompt"
                                     (FLUX 3: the expanded prompt), "seed"} | null,
                          "progress", "details"}
  errors: 422 {"detail": [{"loc": ["body", field], "msg", "type"}]}, else {"detail": "..."}
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, create_model, field_validator

from pixelgate.domain import masks, sizes
from pixelgate.domain.request import Delivery, ImageRequest
from pixelgate.domain.result import Finished, Pending, Submitted, UpstreamImage
from pixelgate.domain.sizes import Size
from pixelgate.errors import (InvalidRequest, UpstreamBadResponse, UpstreamContentFiltered,
                              UpstreamError, UpstreamRejected, UpstreamUnavailable)
from pixelgate.providers.base import (EDIT, GENERATE, Capabilities, Channel, Provider,
                                      UpstreamCall, UpstreamReply, VendorOptions, error_for_status)

MB = 1024 * 1024
FILL = "flux-pro-1.0-fill"
FLUX3 = "flux-3-image"
# Third parties' lists (fal's and Comfy's schemas agree; BFL's pages read here name none): 15
# ratios plus auto, and five resolutions, 768sq about 0.6 MP up to 4k about 16.8 MP.
FLUX3_RATIOS = ("21:9", "2:1", "16:9", "3:2", "7:5", "4:3", "5:4", "1:1", "4:5", "3:4", "5:7", "2:3",
                "9:16", "1:2", "9:21")
FLUX3_RESOLUTIONS = {"768sq": 768 * 768, "1k": MB, "1.5k": 1536 * 1536, "2k": 4 * MB, "4k": 16 * MB}
# A size tier or exact pixels reach the resolution billed alike (sizes.tier_of); 768sq and 1.5k
# only when asked by name.
FLUX3_BY_TIER = {"1K": "1k", "2K": "2k", "4K": "4k"}
DEFAULT_RATIO = (16, 9)  # the source document's default aspect_ratio for every Flux model
ALIASES = {"FLUX.1-Kontext-pro": "flux-kontext-pro", "FLUX.1-Kontext-max": "flux-kontext-max"}


class FluxOptions(VendorOptions):
    """The source document's Flux fields. safety_tolerance is 0-5 there, but its own example
    sends 6 (BFL's FLUX.1 range), so 6 is accepted and lowered where a model stops at 5."""

    safety_tolerance: int = Field(default=2, ge=0, le=6)
    aspect_ratio: str = "16:9"
    seed: int | None = None
    raw: bool = False

    @field_validator("aspect_ratio")
    @classmethod
    def _is_ratio(cls, value: str) -> str:
        if sizes.parse(value, "aspect_ratio").ratio is None:
            raise ValueError("expected a ratio such as 16:9, 1:1 or 4:3")
        return value


class Flux1Options(FluxOptions):
    prompt_upsampling: bool | None = None


class Flux3Options(VendorOptions):
    """FLUX 3 Image's own fields. safety_tolerance takes the other models' 0-6, as the source
    document's examples send 6, and is lowered to FLUX 3's 4."""

    safety_tolerance: int = Field(default=2, ge=0, le=6)
    aspect_ratio: Literal["auto", *FLUX3_RATIOS] | None = None  # type: ignore[valid-type]
    resolution: Literal[*FLUX3_RESOLUTIONS] | None = None  # type: ignore[valid-type]
    grounding: bool | None = None
    """Web and image search before generating (the vendor's default: on)."""


def _tuned(name: str, steps: tuple[int, int], guidance: tuple[float, float]) -> type[VendorOptions]:
    """Models that take steps and guidance, each model with its own ranges."""
    return create_model(name, __base__=Flux1Options,
                        steps=(int | None, Field(default=None, ge=steps[0], le=steps[1])),
                        guidance=(float | None, Field(default=None, ge=guidance[0], le=guidance[1])))


def _pixels(multiple: int, lo: int, hi: int, max_area: int | None = None) -> Callable[..., dict]:
    """width/height models: exact sizes snapped to the vendor's grid and shrunk into its limits
    keeping the shape; ratios and tiers at their area (1 MP when none)."""
    allowed = (f"WIDTHxHEIGHT with sides {lo}-{hi} in multiples of {multiple}"
               + (f" and at most {max_area // MB} MP" if max_area else "")
               + ", a ratio such as 16:9, 1K/2K/4K or auto")
    limit = max_area or hi * hi

    def fit(size: Size, field: str = "size") -> dict:
        if size.is_auto:
            return {}
        area = size.area or MB
        w, h = (size.width, size.height) if size.width else (
            math.sqrt(area * size.aspect), math.sqrt(area / size.aspect))
        scale = min(1.0, math.sqrt(limit / (w * h)), hi / w, hi / h)
        w, h = (max(lo, min(hi, round(v * scale / multiple) * multiple)) for v in (w, h))
        while w * h > limit:  # rounding up may have crossed the area limit
            w, h = (w - multiple, h) if w >= h else (w, h - multiple)
        sizes.nearest(size, [Size(width=w, height=h)], field, allowed)  # refuses a distorted shape
        return {"width": w, "height": h}
    return fit


def _ratio(size: Size, field: str = "size") -> dict:
    """aspect_ratio models (Kontext, Ultra): any ratio from 21:9 to 9:21; the pixels are theirs."""
    if size.width is None and size.ratio is None:
        return {}
    if 9 / 21 <= size.aspect <= 21 / 9:
        return {"aspect_ratio": size.colon()}
    ends = [Size(ratio=(21, 9)), Size(ratio=(9, 21))]
    return {"aspect_ratio": sizes.nearest(size, ends, field, "ratios from 21:9 to 9:21").colon()}


def _flux3(size: Size, field: str = "size") -> dict:
    """Any size -> the nearest of FLUX 3's ratios and the resolution its tier bills as; a tier
    alone sends a resolution only (auto: the model keeps an input image's shape)."""
    if size.is_auto:
        return {}
    out: dict[str, str] = {}
    if size.width or size.ratio:
        ratios = [Size(ratio=(int(w), int(h))) for w, h in (r.split(":") for r in FLUX3_RATIOS)]
        out["aspect_ratio"] = sizes.nearest(size, ratios, field, ", ".join(FLUX3_RATIOS) + " or auto").colon()
    tier = sizes.tier_of(size.width, size.height) if size.width and size.height else size.tier
    if tier:
        out["resolution"] = FLUX3_BY_TIER[tier]
    return out


_any_size: Callable[..., dict] = lambda size, field="size": {}  # noqa: E731 (Fill keeps its input's size)


@dataclass(frozen=True)
class Wire:
    fit: Callable[..., dict]
    max_safety: int = 6
    edit_max_safety: int = 6
    refs: int = 0
    """input_image fields the model takes (0: it does not edit)."""
    raw: bool = False


_FLUX2 = _pixels(16, 64, 4096, 4 * MB)  # 4096: our cap, the upstream only states the 4 MP total
_FLUX1 = _pixels(32, 256, 1440)
WIRE: dict[str, Wire] = {
    "flux-2-pro": Wire(_FLUX2, 5, 5, 8), "flux-2-max": Wire(_FLUX2, 5, 5, 8),
    "flux-2-flex": Wire(_FLUX2, 5, 5, 8),
    "flux-2-klein-4b": Wire(_FLUX2, 5, 5, 4), "flux-2-klein-9b": Wire(_FLUX2, 5, 5, 4),
    "flux-kontext-pro": Wire(_ratio, 6, 2, 4), "flux-kontext-max": Wire(_ratio, 6, 2, 4),
    "flux-pro-1.1": Wire(_FLUX1), "flux-dev": Wire(_FLUX1),
    "flux-pro-1.1-ultra": Wire(_ratio, raw=True), FILL: Wire(_any_size, refs=1),
    FLUX3: Wire(_flux3, 4, 4, 10),
}
OPTIONS = {**{m: FluxOptions for m in WIRE if m.startswith("flux-2-")},
           "flux-2-flex": _tuned("FlexOptions", (1, 50), (1.5, 10)),
           "flux-dev": _tuned("DevOptions", (1, 50), (1.5, 5)), FILL: _tuned("FillOptions", (15, 50), (1.5, 100)),
           FLUX3: Flux3Options}


def _caps(model: str) -> Capabilities:
    wire = WIRE[ALIASES.get(model, model)]
    fill = wire.fit is _any_size
    return Capabilities(
        operations=frozenset({EDIT} if fill else {GENERATE, EDIT} if wire.refs else {GENERATE}),
        prompt_required=frozenset() if fill else frozenset({GENERATE, EDIT}),
        max_n=10, n_per_call=1,  # BFL has no n: one task, one image
        fit_size=wire.fit, qualities=("low", "medium", "high"),
        output_formats=("png", "jpeg", "webp"),  # webp: made as png, converted by the engine
        max_images=max(wire.refs, 1), image_formats=("png", "jpeg", "webp"),
        image_max_bytes=20 * MB, image_needs_alpha_without_mask=fill, asynchronous=True,
        # BFL allows 6 active tasks per key on kontext-max and 24 elsewhere (bfl.md §1).
        max_concurrent_calls=6 if ALIASES.get(model, model) == "flux-kontext-max" else 24,
        # The first source document reads FLUX.1-Kontext-pro's one-step answer from data[0].b64_json.
        default_delivery=Delivery.B64 if model.startswith("FLUX.1-Kontext") else Delivery.URL,
        options=OPTIONS.get(ALIASES.get(model, model), Flux1Options))


# Our names for the fields a 422 names, so the client sees its own parameter.
CLIENT_FIELD = {"width": "size", "height": "size", "images": "image"}
PENDING = {"Pending", "Reasoning", "Generating"}  # the last two: newer revisions (unconfirmed)
MODERATED = {"Request Moderated": "the prompt or input image", "Content Moderated": "the generated image"}
FAILED = (*MODERATED, "Error", "Task not found")
_MODERATION_WORDS = re.compile(r"moderat|nsfw|safety|content policy", re.I)


class BlackForestLabs(Provider):
    name = "bfl"
    default_base_url = "https://api.bfl.ai/v1"
    # result.sample: signed URLs on delivery-eu1.bfl.ai and the like; older ones on Azure (upstreams/bfl.md)
    image_hosts = ("delivery*.bfl.ai", "bfldeliveryprod.blob.core.windows.net")
    models = {m: _caps(m) for m in (*WIRE, *ALIASES)}

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        name = ALIASES.get(model, model)
        wire = WIRE.get(name) or WIRE.get(ALIASES.get(req.model, req.model)) or WIRE["flux-2-pro"]
        x = req.extras
        if name == FLUX3 and req.mask is None:
            return self._build_flux3(req, channel)
        body: dict[str, Any] = {"prompt": req.prompt or ""}
        seed = req.seed if req.seed is not None else x.get("seed")
        if seed is not None:
            body["seed"] = seed
        if req.output_format:
            body["output_format"] = "jpeg" if req.output_format == "jpeg" else "png"
        safety = x.get("safety_tolerance", FluxOptions.model_fields["safety_tolerance"].default)
        passthrough = ("steps", "guidance", "prompt_upsampling")
        if req.mask is not None or name == FILL:
            # FLUX.2 and Kontext edit by instruction only; a mask means inpainting, which is Fill's.
            if len(req.images) != 1:
                raise InvalidRequest("An edit with a mask (FLUX.1 Fill) takes exactly one image.",
                                     field="image")
            body["image"] = _b64(req.images[0].data)
            if req.mask is not None:
                body["mask"] = _b64(masks.convert(req.mask.data, req.mask_convention, "white"))
            if name != FILL:  # steps/guidance ranges differ between models: only Fill's own go
                passthrough = ("prompt_upsampling",)
            name, wire = FILL, WIRE[FILL]
        else:
            body.update(wire.fit(*self._shape(req)))
            for i, image in enumerate(req.images):
                body["input_image" if i == 0 else f"input_image_{i + 1}"] = _b64(image.data)
        body["safety_tolerance"] = min(safety, wire.edit_max_safety if req.images else wire.max_safety)
        if wire.raw:
            body["raw"] = x.get("raw", False)
        body.update({k: x[k] for k in passthrough if x.get(k) is not None})
        return UpstreamCall("POST", f"{self.base_url(channel)}/{name}",
                            {"x-key": channel.api_key or ""}, json=body)

    def _build_flux3(self, req: ImageRequest, channel: Channel) -> UpstreamCall:
        """FLUX 3 Image: the reference images as one `images` list, the size as aspect_ratio and
        resolution (the client's own fields win), nothing for what the model has no field for."""
        if req.seed is not None:
            raise InvalidRequest("'seed' is not supported by FLUX 3 Image (the API has no seed).",
                                 field="seed", code="unsupported_parameter")
        x, wire = req.extras, WIRE[FLUX3]
        body: dict[str, Any] = {"prompt": req.prompt or ""}
        if req.images:
            body["images"] = [_b64(image.data) for image in req.images]
        body.update(wire.fit(sizes.parse(req.size) if req.size else Size()))
        body.update({k: x[k] for k in ("aspect_ratio", "resolution", "grounding") if x.get(k) is not None})
        body["safety_tolerance"] = min(x.get("safety_tolerance", 2), wire.max_safety)
        # output_format: FLUX 3 has none; the engine converts what it delivers
        return UpstreamCall("POST", f"{self.base_url(channel)}/{FLUX3}", {"x-key": channel.api_key or ""}, json=body)

    @staticmethod
    def _shape(req: ImageRequest) -> tuple[Size, str]:
        """The size asked, the aspect_ratio field overriding its shape; without either a
        generation gets the documented 16:9 and an edit keeps its input image's shape."""
        size = sizes.parse(req.size) if req.size else Size()
        if ratio := req.extras.get("aspect_ratio"):
            return Size(ratio=sizes.parse(ratio, "aspect_ratio").ratio, tier=size.tier), "aspect_ratio"
        if size.width or size.ratio:
            return size, "size"
        if not req.images:
            return Size(ratio=DEFAULT_RATIO, tier=size.tier), "size"
        if not size.tier:
            return size, "size"
        w, h = req.images[0].width, req.images[0].height
        return Size(ratio=(w // math.gcd(w, h), h // math.gcd(w, h)), tier=size.tier), "size"

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Submitted:
        body = reply.json()
        if isinstance(body, dict) and body.get("status") not in FAILED and body.get("id"):
            poll = body.get("polling_url")
            return Submitted(job_id=str(body["id"]), poll_url=poll if isinstance(poll, str) else None)
        raise _refusal(reply.status, body)

    def build_poll(self, job: Submitted, channel: Channel) -> UpstreamCall:
        base = self.base_url(channel)
        # The polling URL must be followed verbatim (it may name another cluster), but it carries
        # our x-key: only to the channel's own host or to BFL's, or a tampered or misrouted
        # reply could collect the key.
        url = job.poll_url or f"{base}/get_result?id={quote(job.job_id)}"
        if not _trusted(url, base):
            raise UpstreamBadResponse(f"Refusing to poll {urlsplit(url).hostname or url!r}: the polling "
                                      "URL is neither on the channel's host nor under bfl.ai.")
        return UpstreamCall("GET", url, {"x-key": channel.api_key or ""})

    def parse_poll(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Pending:
        body = reply.json()
        status = body.get("status") if isinstance(body, dict) else None
        if status in PENDING:
            progress = body.get("progress")
            return Pending(float(progress) if isinstance(progress, (int, float)) else None)
        if status != "Ready":
            raise _refusal(reply.status, body)
        result = body.get("result")
        sample = result.get("sample") if isinstance(result, dict) else None
        if not isinstance(sample, str) or not sample:
            raise UpstreamBadResponse("The FLUX job is Ready but its result has no sample URL.")
        prompt = result.get("prompt")
        revised = prompt if isinstance(prompt, str) and prompt and prompt != req.prompt else None
        return Finished([UpstreamImage(url=sample, revised_prompt=revised)])

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        try:
            return _refusal(reply.status, reply.json())
        except UpstreamError:
            return _refusal(reply.status, None)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()  # bare: a data: prefix is not documented as accepted


def _trusted(url: str, base: str) -> bool:
    poll, own = urlsplit(url), urlsplit(base)
    if poll.username is not None or poll.password is not None:
        return False
    host = poll.hostname or ""
    if (poll.scheme, host, poll.port) == (own.scheme, own.hostname, own.port):
        return True
    return poll.scheme == "https" and (host == "bfl.ai" or host.endswith(".bfl.ai"))


def _detail(body: Any) -> tuple[str | None, str | None]:
    """Message and client field from FastAPI's detail (string or list) or a {message} body."""
    if not isinstance(body, dict):
        return None, None
    detail = body.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = [str(p) for p in detail[0].get("loc") or [] if p != "body"] or [""]
        field = "image" if loc[0].startswith("input_image") else CLIENT_FIELD.get(loc[0], loc[0] or None)
        return f"{detail[0].get('msg') or 'invalid value'} ({'.'.join(loc)})", field
    text = next((body[k] for k in ("detail", "message", "error") if isinstance(body.get(k), str)), None)
    return text or None, None


def _refusal(status: int, body: Any) -> UpstreamError:
    """Our error for an HTTP error reply, or for a 200 reply without a job or an image: BFL
    reports job failures as a `status` in 200 bodies, and proxies in front of it answer some
    refusals with 200 and an error body."""
    state = body.get("status") if isinstance(body, dict) else None
    if state in FAILED or (status == 200 and state):
        return _status_error(state, body)
    message, field = _detail(body)
    if status == 200 and message is None:
        return UpstreamBadResponse("The FLUX reply has neither a job id, a known status nor an error.")
    message = message or f"upstream answered HTTP {status}"
    if status == 402:  # the channel's account is out of credits, not the client's fault
        return UpstreamUnavailable(f"upstream is out of credits: {message}", code="upstream_insufficient_credits")
    if status in (200, 400, 422) and _MODERATION_WORDS.search(message):
        return UpstreamContentFiltered(message, field=field)
    return UpstreamRejected(message, field=field) if status == 200 else error_for_status(status, message, field)


def _status_error(status: Any, body: dict) -> UpstreamError:
    details = body.get("details")
    reasons = details.get("Moderation Reasons") if isinstance(details, dict) else None
    why = f": {', '.join(map(str, reasons))}" if isinstance(reasons, list) and reasons else ""
    if status in MODERATED:
        return UpstreamContentFiltered(f"Black Forest Labs' moderation refused {MODERATED[status]}{why}.")
    if status in ("Error", "Task not found"):
        what = "failed" if status == "Error" else "was not found upstream (unknown or expired)"
        return UpstreamError(f"The FLUX job {what}{f': {details}' if details else ''}.", code="upstream_job_failed")
    return UpstreamBadResponse(f"The FLUX job reported an unknown status {status!r}.")
