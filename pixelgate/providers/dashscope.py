"""Alibaba Cloud DashScope (Model Studio): Qwen-Image generation and instruction editing.

Upstream (authority: ../shared/upstreams/dashscope.md), `Authorization: Bearer <key>`:
  sync   POST /services/aigc/multimodal-generation/generation
         {"model", "input": {"messages": [{"role": "user", "content":
              [{"image": "data:image/png;base64,..."} (edits: 1-3), {"text": <prompt>}]}]},
          "parameters": {"size": "1328*1328", "n", "negative_prompt", "prompt_extend", "watermark", "seed"}}
         -> {"output": {"choices": [{"message": {"content": [{"image": <url>}, ...]}}]}, "usage", "request_id"}
  async  POST /services/aigc/text2image/image-synthesis   with `X-DashScope-Async: enable`
         {"model", "input": {"prompt"}, "parameters": {...as above...}}
         -> {"output": {"task_id", "task_status": "PENDING"}, "request_id"}
         GET /tasks/{task_id} -> {"output": {"task_status": PENDING | RUNNING | SUSPENDED | SUCCEEDED |
                                  FAILED | CANCELED | UNKNOWN, "results": [{"url", "actual_prompt"}],
                                  "code"?, "message"?}}
  errors: flat {"request_id", "code", "message"}; task failures arrive with HTTP 200.

Endpoint per model (a channel has no option for it, so the model id decides):
  qwen-image, -plus, -max, qwen-image-edit, -edit-plus, -edit-max  sync: one round trip, and the
      only endpoint that serves -max and the edit models.
  qwen-image-async, qwen-image-plus-async  the same upstream models through the task endpoint
      (DashScope offers it for qwen-image and -plus only): the call returns at once with a task id,
      so no connection stays open through a minute of generation and prompt rewriting.

Sizes (every vocabulary goes through domain.sizes; the nearest-match rule is documented there):
  qwen-image/-plus/-max  five fixed sizes. The source document's Qwen list maps as: 1024*1024 (its
      default, also used for auto) -> 1328*1328, 768*1024 -> 1104*1472, 768*512 -> 1472*1104,
      1024*576 -> 1664*928, 512*1024 and 576*1024 -> 928*1664; tiers are 1:1 -> 1328*1328.
  qwen-image-edit-plus/-max  any W*H with each side 512-2048: larger or smaller asks are scaled
      into range at their aspect ratio; auto sends no size (the output follows the last input).
  qwen-image-edit  DashScope takes no size: accepted (the source document lists sizes for the whole
      Qwen series) but not sent; the output keeps the last input image's aspect at about 1 MP.
  qwen-image-2.0*  any W*H of 512*512-2048*2048 pixels; qwen-image-3.0* the same up to 2560*2560 at
      1:8-8:1 (third-party schemas: no vendor page for 3.0 was read).
  wan2.7-image*  1K/2K (4K on -pro: the vendor's tiers) or W*H of 768*768-2048*2048 pixels at
      1:8-8:1 (the range from third-party copies); -pro makes 4K and up to 4096*4096 for text to
      image only, so an edit asking for 4K gets 2K and a larger W*H edit is refused.

Wan 2.7 Image (wan2.7-image, -pro): the vendor's "Wan 2.7 image generation and editing" reference:
one endpoint for generation and edits of 0-9 images, 1-4 images a call, prompt up to 5000
characters, thinking_mode; no negative_prompt or prompt_extend.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from functools import partial
from typing import Any

from pydantic import Field, field_validator

from pixelgate.domain import sizes
from pixelgate.domain.request import ImageRequest
from pixelgate.domain.result import Finished, Pending, Submitted, UpstreamImage
from pixelgate.domain.sizes import Size
from pixelgate.errors import (InvalidRequest, UpstreamBadResponse, UpstreamContentFiltered,
                              UpstreamError, UpstreamRateLimited, UpstreamRejected, UpstreamUnavailable)
from pixelgate.providers.base import (EDIT, GENERATE, Capabilities, Channel, Provider, UpstreamCall,
                                      UpstreamReply, VendorOptions, error_for_status)

MAX_SEED = 2147483647
FIXED_SIZES = ("1664*928", "1472*1104", "1328*1328", "1104*1472", "928*1664")
_FIXED = [sizes.parse(s) for s in FIXED_SIZES]
_SOURCE_DEFAULT = Size(1024, 1024)  # the source document's Qwen default, where DashScope's is 16:9
SIDE_MIN, SIDE_MAX = 512, 2048


def _fixed(size: Size) -> str | None:
    best = sizes.nearest(_SOURCE_DEFAULT if size.is_auto else size, _FIXED,
                         allowed_text=", ".join(FIXED_SIZES) + " (or a size or ratio near one)")
    return best.wxh("*")


def _sides(size: Size) -> str | None:
    if size.is_auto:
        return None
    w, h = (size.width, size.height) if size.width else sizes.pixels_for(size, 1024 * 1024, max_side=8192)
    scale = min(1.0, SIDE_MAX / max(w, h))
    scale = max(scale, SIDE_MIN / min(w, h))
    fitted = Size(*(min(SIDE_MAX, max(SIDE_MIN, round(v * scale))) for v in (w, h)))
    sizes.nearest(size, [fitted], allowed_text=f"WIDTH*HEIGHT with each side between {SIDE_MIN} and {SIDE_MAX}")
    return fitted.wxh("*")


PIXELS_MIN, PIXELS_MAX = 512 * 512, 2048 * 2048


def _area_text(area: int) -> str:
    side = round(area ** 0.5)
    return f"{side}*{side}"


def _pixel_range(size: Size, least: int = PIXELS_MIN, most: int = PIXELS_MAX, aspect: float | None = None,
                 ratio_area: int | None = None) -> str | None:
    """Any W*H with total pixels in [least, most] (and an aspect ratio within 1:aspect..aspect:1);
    a tier gets its pixels up to the most allowed, a ratio `ratio_area` (default: the most)."""
    if size.is_auto:
        return None
    target = most if size.tier else ratio_area or most
    w, h = (size.width, size.height) if size.width else sizes.pixels_for(size, target, max_side=1 << 16)
    if not size.width:
        scale = min(1.0, (target / (w * h)) ** 0.5)
        w, h = int(w * scale) // 16 * 16, int(h * scale) // 16 * 16
    if not least <= w * h <= most or aspect and not 1 / aspect <= w / h <= aspect:
        shape = f" at an aspect ratio within 1:{aspect:g} and {aspect:g}:1" if aspect else ""
        raise InvalidRequest(f"Invalid value: '{sizes.describe(size)}'. For this model 'size' is WIDTH*HEIGHT "
                             f"with between {_area_text(least)} and {_area_text(most)} pixels in total{shape}.",
                             field="size")
    return f"{w}*{h}"


WAN_MIN, WAN_2K = 768 * 768, 2048 * 2048


def _wan_size(size: Size, largest: int = WAN_2K) -> str | None:
    """Wan 2.7: the vendor's 1K/2K/4K tiers, or W*H; a tier above the model's largest becomes it."""
    if size.tier:
        return size.tier if sizes.TIER_PIXELS[size.tier] <= largest else "2K"
    return _pixel_range(size, WAN_MIN, largest, aspect=8, ratio_area=WAN_2K)


def _no_size(size: Size) -> str | None:
    return None


class QwenOptions(VendorOptions):
    """The source document's Qwen fields, plus DashScope's own negative_prompt."""

    watermark: bool = True  # the source document's default; DashScope's own is false
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    refer_image: str | None = None
    negative_prompt: str | None = Field(default=None, max_length=500)

    @field_validator("refer_image")
    @classmethod
    def _empty_only(cls, value: str | None) -> str | None:
        # The source document's example sends "" (no reference); DashScope's Qwen-Image has no
        # reference-image input, so only the empty value can be honoured.
        if value:
            raise ValueError("Qwen-Image takes no reference image; send input images to an edit "
                             "model (qwen-image-edit*) through /v1/images/edits")
        return value


class RewritingOptions(QwenOptions):
    prompt_extend: bool = False  # DashScope defaults to true (an LLM rewrites the prompt): opt-in here


class WanOptions(VendorOptions):
    """Wan 2.7's fields: no negative_prompt and no prompt rewriting."""

    watermark: bool = True  # the source document's default, as for Qwen; DashScope's own is false
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    thinking_mode: bool | None = None  # the vendor's default is on; it applies to text-to-image only


MB = 1024 * 1024
# `quality` is a common field of the source document; DashScope has no such knob, so it is
# accepted with the source document's values and not sent.
_GEN = Capabilities(operations=frozenset({GENERATE}), max_prompt=800, max_n=10, n_per_call=1,
                    fit_size=_fixed, qualities=("low", "medium", "high"), options=RewritingOptions)
_EDIT = Capabilities(operations=frozenset({EDIT}), max_prompt=800, max_n=10, n_per_call=1,
                     fit_size=_no_size, qualities=("low", "medium", "high"), max_images=3,
                     image_formats=("png", "jpeg", "webp", "gif"), image_max_bytes=10 * MB,
                     options=QwenOptions)  # qwen-image-edit has no prompt_extend
_EDIT_PLUS = replace(_EDIT, n_per_call=6, fit_size=_sides, options=RewritingOptions)
_GEN_TASK = replace(_GEN, asynchronous=True)
# Qwen-Image 2.0: generation and instruction edits (0-3 images) in one model, 1-6 images a call
_QWEN2 = replace(_GEN, operations=frozenset({GENERATE, EDIT}), n_per_call=6, fit_size=_pixel_range, max_images=3,
                 image_formats=_EDIT.image_formats, image_max_bytes=_EDIT.image_max_bytes,
                 prompt_required=frozenset({GENERATE, EDIT}))
# Qwen-Image 3.0: as 2.0, up to 2560*2560 pixels at 1:8-8:1 (third-party schemas)
_QWEN3 = replace(_QWEN2, fit_size=partial(_pixel_range, most=2560 * 2560, aspect=8, ratio_area=PIXELS_MAX))
# Wan 2.7 Image: generation and edits of 0-9 images, 1-4 images a call
_WAN = replace(_QWEN2, max_prompt=5000, n_per_call=4, fit_size=_wan_size, max_images=9,
               image_formats=("png", "jpeg", "webp", "bmp"), image_max_bytes=20 * MB, options=WanOptions)
_WAN_PRO = replace(_WAN, fit_size=partial(_wan_size, largest=4096 * 4096))

# public id -> (DashScope model, asynchronous endpoint?, capabilities)
MODELS: dict[str, tuple[str, bool, Capabilities]] = {
    "qwen-image": ("qwen-image", False, _GEN),
    "qwen-image-plus": ("qwen-image-plus", False, _GEN),
    "qwen-image-max": ("qwen-image-max", False, _GEN),
    "qwen-image-async": ("qwen-image", True, _GEN_TASK),
    "qwen-image-plus-async": ("qwen-image-plus", True, _GEN_TASK),
    "qwen-image-edit": ("qwen-image-edit", False, _EDIT),
    "qwen-image-edit-plus": ("qwen-image-edit-plus", False, _EDIT_PLUS),
    "qwen-image-edit-max": ("qwen-image-edit-max", False, _EDIT_PLUS),
    "qwen-image-2.0": ("qwen-image-2.0", False, _QWEN2),
    "qwen-image-2.0-pro": ("qwen-image-2.0-pro", False, _QWEN2),
    "qwen-image-3.0": ("qwen-image-3.0", False, _QWEN3),
    "qwen-image-3.0-pro": ("qwen-image-3.0-pro", False, _QWEN3),
    "wan2.7-image": ("wan2.7-image", False, _WAN),
    "wan2.7-image-pro": ("wan2.7-image-pro", False, _WAN_PRO),
}

# DashScope error code (or its part before the first dot) -> our class and the field it concerns
_ERRORS: dict[str, tuple[type[UpstreamError], str | None]] = {
    "DataInspectionFailed": (UpstreamContentFiltered, None),
    "data_inspection_failed": (UpstreamContentFiltered, None),
    "InvalidParameter.DataInspection": (UpstreamRejected, "image"),  # a format moderation cannot read
    "InvalidURL": (UpstreamRejected, "image"),
    "BadRequest.TooLarge": (UpstreamRejected, "image"),
    "InvalidParameter": (UpstreamRejected, None),
    "BadRequest": (UpstreamRejected, None),
    "Throttling": (UpstreamRateLimited, None),
    # The channel's account or configuration, not the client: another channel may serve it.
    "Arrearage": (UpstreamUnavailable, None),
    "ModelNotFound": (UpstreamUnavailable, None),
    "RequestTimeOut": (UpstreamUnavailable, None),  # failed calls are not billed
    "InternalError": (UpstreamUnavailable, None),
    "ServiceUnavailable": (UpstreamUnavailable, None),
}
_RUNNING = {"PENDING": 0.1, "SUSPENDED": 0.1, "RUNNING": 0.5}


class DashScope(Provider):
    name = "dashscope"
    default_base_url = "https://dashscope.aliyuncs.com/api/v1"  # Singapore: dashscope-intl.aliyuncs.com
    # results: dashscope-result-sh.oss-cn-shanghai.aliyuncs.com and other regions' buckets (upstreams/dashscope.md)
    image_hosts = ("dashscope-result-*.oss-*.aliyuncs.com",)
    timeout = 180.0  # a sync call holds the connection for the whole generation (+ prompt rewriting)
    models = {name: caps for name, (_, _, caps) in MODELS.items()}

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        # A channel may map a public id to a DashScope snapshot we do not list: it then behaves
        # as the public model it stands for and is sent under the channel's own name.
        spec = MODELS.get(model)
        if spec is None and req.model in MODELS:
            spec = (model, *MODELS[req.model][1:])
        if spec is None:
            raise UpstreamUnavailable(f"channel {channel.name!r} maps '{req.model}' to '{model}', "
                                      "which is not a Qwen-Image model")
        upstream, is_async, caps = spec
        if req.mask is not None:
            raise InvalidRequest(f"Model '{req.model}' edits by instruction and takes no mask; "
                                 "describe the region to change in the prompt.", field="mask",
                                 code="unsupported_parameter")
        assert caps.options is not None and caps.fit_size is not None
        opts = caps.options.model_validate(req.extras)
        seed = req.seed if req.seed is not None else opts.seed
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise InvalidRequest(f"Invalid value: {seed}. 'seed' must be between 0 and {MAX_SEED}.",
                                 field="seed")
        params: dict[str, Any] = {"n": req.n, "watermark": opts.watermark}
        size = caps.fit_size(sizes.parse(req.size) if req.size else Size())
        if size is not None:
            params["size"] = _edit_size(size) if req.images and isinstance(opts, WanOptions) else size
        if isinstance(opts, RewritingOptions):
            params["prompt_extend"] = opts.prompt_extend  # sent always: DashScope's default is on
        if seed is not None:
            params["seed"] = seed
        if getattr(opts, "negative_prompt", None):
            params["negative_prompt"] = opts.negative_prompt
        if getattr(opts, "thinking_mode", None) is not None:
            params["thinking_mode"] = opts.thinking_mode
        headers = {"Authorization": f"Bearer {channel.api_key or ''}"}
        base = self.base_url(channel)
        if is_async:
            body = {"model": upstream, "input": {"prompt": req.prompt}, "parameters": params}
            return UpstreamCall("POST", f"{base}/services/aigc/text2image/image-synthesis",
                                {**headers, "X-DashScope-Async": "enable"}, json=body)
        content: list[dict[str, str]] = [
            {"image": f"data:{img.mime};base64,{base64.b64encode(img.data).decode()}"} for img in req.images]
        content.append({"text": req.prompt or ""})  # images first: their order names "image 1/2/3"
        body = {"model": upstream, "input": {"messages": [{"role": "user", "content": content}]},
                "parameters": params}
        return UpstreamCall("POST", f"{base}/services/aigc/multimodal-generation/generation", headers, json=body)

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Submitted:
        body = _object(reply)
        output = body.get("output")
        if not isinstance(output, dict):
            raise _error(reply.status, body)
        if "task_id" in output:
            if output.get("task_status") in ("FAILED", "CANCELED", "UNKNOWN"):
                raise _task_error(output)
            return Submitted(job_id=str(output["task_id"]))
        try:
            parts = output["choices"][0]["message"]["content"]
            revised = next((p["text"] for p in parts if isinstance(p.get("text"), str)), None)
            images = [UpstreamImage(url=p["image"], revised_prompt=revised) for p in parts if "image" in p]
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamBadResponse("DashScope reply has no output.choices[0].message.content") from None
        if not images:
            raise UpstreamBadResponse("DashScope answered without any image")
        return Finished(images)

    def build_poll(self, job: Submitted, channel: Channel) -> UpstreamCall:
        return UpstreamCall("GET", f"{self.base_url(channel)}/tasks/{job.job_id}",
                            {"Authorization": f"Bearer {channel.api_key or ''}"})

    def parse_poll(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Pending:
        body = _object(reply)
        output = body.get("output")
        if not isinstance(output, dict) or "task_status" not in output:
            raise _error(reply.status, body)
        status = output["task_status"]
        if status in _RUNNING:
            return Pending(progress=_RUNNING[status])
        if status != "SUCCEEDED":
            raise _task_error(output)
        results = output.get("results")
        if not isinstance(results, list):
            raise UpstreamBadResponse("DashScope task SUCCEEDED without output.results")
        images = [UpstreamImage(url=r["url"], revised_prompt=_revised(r))
                  for r in results if isinstance(r, dict) and r.get("url")]
        failed = [r for r in results if isinstance(r, dict) and not r.get("url")]
        if not images:  # every image of the task failed on its own (code/message per result)
            raise _task_error(failed[0] if failed else output)
        meta = {"partial": f"{len(failed)} of {len(results)} images failed upstream"} if failed else {}
        return Finished(images, meta)

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        body = reply.json_or_none()
        return _error(reply.status, body if isinstance(body, dict) else {})


def _edit_size(size: str) -> str:
    """Wan 2.7 Pro edits stop at 2K: its 4K tier becomes 2K, a larger W*H is refused."""
    if size == "4K":
        return "2K"
    w, _, h = size.partition("*")
    if h and int(w) * int(h) > WAN_2K:
        raise InvalidRequest(f"Invalid value: '{size}'. An edit with this model makes at most 2048*2048 "
                             "pixels (4K is for text to image only).", field="size")
    return size


def _object(reply: UpstreamReply) -> dict:
    body = reply.json()
    if not isinstance(body, dict):
        raise UpstreamBadResponse("DashScope answered with JSON that is not an object")
    return body


def _revised(result: dict) -> str | None:
    actual = result.get("actual_prompt")  # differs from orig_prompt only when prompt_extend rewrote it
    return actual if actual and actual != result.get("orig_prompt") else None


def _classify(code: str) -> tuple[type[UpstreamError], str | None] | None:
    return _ERRORS.get(code) or _ERRORS.get(code.split(".")[0])


def _error(status: int, body: dict) -> UpstreamError:
    """A flat {"request_id", "code", "message"} body, with an error status or (seen) HTTP 200."""
    code, message = str(body.get("code") or ""), str(body.get("message") or f"HTTP {status}")
    text = f"DashScope {code}: {message}" if code else f"DashScope answered HTTP {status}: {message}"
    if known := _classify(code) if code else None:
        cls, field = known
        return cls(text, field=field)
    if status < 400:
        if not code:
            return UpstreamBadResponse(f"DashScope answered HTTP {status} without output or error code")
        return UpstreamError(text, code="upstream_error")
    return error_for_status(status, text)


def _task_error(output: dict) -> UpstreamError:
    """A task (or one of its results) that ended without an image: HTTP 200, code/message inside."""
    code, status = str(output.get("code") or ""), output.get("task_status", "FAILED")
    if code in ("DataInspectionFailed", "data_inspection_failed"):
        return UpstreamContentFiltered(f"DashScope {code}: {output.get('message') or 'content moderation'}")
    detail = f"{code}: {output.get('message') or ''}".strip(": ") or "no reason given"
    if status == "UNKNOWN":
        detail = "the task is unknown or expired"
    return UpstreamError(f"DashScope task {status}: {detail}", code="upstream_job_failed")
