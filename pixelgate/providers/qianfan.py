"""Baidu Qianfan V2 images: irag-1.0 (ERNIE iRAG), ernie-irag-edit (erase / repaint / variation),
qwen-image, and the other models Qianfan serves on the same endpoints (flux.1-schnell,
qwen-image-edit). Synchronous and OpenAI-shaped.

Upstream (authority: ../shared/upstreams/qianfan.md), `Authorization: Bearer <API key>`:
  POST /v2/images/generations  {"model", "prompt", "n" (1-4), "size": "WxH" (512-2048 a side),
                                "refer_image"? (irag-1.0: URL or data URL), "seed"?, "steps"?,
                                "guidance"?, "watermark"?, "prompt_extend"?, "negative_prompt"?, "user"?}
  POST /v2/images/edits        {"model": "ernie-irag-edit", "feature": "erase"|"repaint"|"variation",
                                "image": <data URL>, "mask"?: <data URL, white = edit>, "prompt"?, "size"?}
                               {"model": "qwen-image-edit", "image", "prompt", "size"?}
  -> {"id": "as-...", "created", "data": [{"url"}]}
  errors: {"error": {"code", "message", "type"}, "id"}; some failures come back with HTTP 200 and
  that same envelope (or the V1 style {"error_code", "error_msg"}), so parse() checks for them.

How the OpenAI surface maps onto ernie-irag-edit (the vendor option `feature` overrides it):
  /v1/images/edits with a mask and a prompt -> repaint; with a mask and no prompt -> erase;
  without a mask -> variation (it needs a prompt); /v1/images/variations -> variation.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from pixelgate.domain import masks, sizes
from pixelgate.domain.images import InputImage
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.domain.result import Finished, UpstreamImage
from pixelgate.domain.sizes import Size
from pixelgate.errors import (InvalidRequest, UpstreamBadResponse, UpstreamContentFiltered,
                              UpstreamError, UpstreamRateLimited, UpstreamRejected,
                              UpstreamUnavailable)
from pixelgate.providers.base import (EDIT, GENERATE, VARIATION, Capabilities, Channel, Provider,
                                      UpstreamCall, UpstreamReply, VendorOptions, error_for_status)

MB = 1024 * 1024
MIN_SIDE, MAX_SIDE = 512, 2048
SIZE_RULE = "WIDTHxHEIGHT with each side between 512 and 2048 (e.g. 1024x1024, 1024x768, 2048x1152)"
SEED_MAX = 2147483647


def _fit(size: Size) -> tuple[int, int] | None:
    """Qianfan makes any WxH with both sides in 512..2048: exact sizes inside that are kept; others
    (ratios, tiers, sizes out of range) are scaled to fit at their aspect ratio, and refused when
    the nearest possible shape is too far from it (sizes.nearest's rule)."""
    if size.is_auto:
        return None
    if size.width and MIN_SIDE <= size.width <= MAX_SIDE and MIN_SIDE <= (size.height or 0) <= MAX_SIDE:
        return size.width, size.height or 0
    w, h = sizes.pixels_for(size, 1024 * 1024, multiple=1, min_side=1, max_side=1 << 20)
    scale = min(1.0, MAX_SIDE / max(w, h))
    scale = max(scale, MIN_SIDE / min(w, h))
    fitted = [min(MAX_SIDE, max(MIN_SIDE, round(v * scale / 16) * 16)) for v in (w, h)]
    best = sizes.nearest(size, [Size(*fitted)], allowed_text=SIZE_RULE)
    return best.width or 0, best.height or 0


def _data_url(image: InputImage) -> str:
    # The V2 edit API documents URLs; data URLs are what its clients send (and what refer_image
    # documents), so the gateway never has to host the client's image somewhere public.
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode()}"


_REFER = re.compile(r"^(https?://\S+|data:image/(png|jpe?g|webp|bmp|x-icon|vnd\.microsoft\.icon);base64,\S+)$")


def _refer_image(value: str) -> str:
    if value and not (_REFER.match(value) and (len(value.encode()) <= 1024 or value.startswith("data:"))):
        raise ValueError("refer_image takes an http(s) URL of at most 1024 bytes or a "
                         "data:image/<png|jpeg|webp|bmp|x-icon>;base64,... URL")
    return value


class IragOptions(VendorOptions):
    refer_image: str = ""
    """"" (as the source document's example sends it) means none and is left out."""
    watermark: bool | None = None
    guidance: float | None = Field(default=None, ge=0, le=100)
    """The source document's iRAG example sends it; irag-1.0 has no such field: accepted, not sent."""

    @field_validator("refer_image")
    @classmethod
    def _check_refer(cls, value: str) -> str:
        return _refer_image(value)


class QwenOptions(VendorOptions):
    watermark: bool = True
    """The source document's Qwen default."""
    refer_image: Literal[""] = ""
    """Sent empty by the source document's Qwen example; qwen-image takes no reference image."""
    prompt_extend: bool | None = None
    negative_prompt: str | None = Field(default=None, max_length=500)


class FluxOptions(VendorOptions):
    steps: int | None = Field(default=None, ge=1, le=50)
    guidance: float | None = Field(default=None, ge=0, le=20)
    watermark: bool | None = None


class EditOptions(VendorOptions):
    feature: Literal["erase", "repaint", "variation"] | None = None
    """The upstream's own operation name; when absent it follows from the request (docstring)."""


_IMAGES = dict(image_formats=("png", "jpeg", "webp"), image_max_bytes=10 * MB, fit_size=_fit, max_n=10)
MODELS = {
    # n 1-10 for clients (source document); the engine fans out above what one call makes.
    "irag-1.0": Capabilities(operations=frozenset({GENERATE, EDIT}), max_prompt=220, n_per_call=4,
                             options=IragOptions, **_IMAGES),
    # Qianfan's endpoint takes n 1-4, but qwen-image itself makes one image per call.
    "qwen-image": Capabilities(operations=frozenset({GENERATE}), max_prompt=800, n_per_call=1,
                               options=QwenOptions, **_IMAGES),
    "flux.1-schnell": Capabilities(operations=frozenset({GENERATE}), max_prompt=512, n_per_call=4,
                                   options=FluxOptions, **_IMAGES),
    # n is unconfirmed on the edit endpoint: one image per call, never sent.
    "ernie-irag-edit": Capabilities(operations=frozenset({EDIT, VARIATION}), max_prompt=220,
                                    prompt_required=frozenset(), n_per_call=1, options=EditOptions,
                                    **_IMAGES),
    "qwen-image-edit": Capabilities(operations=frozenset({EDIT}), max_prompt=800, n_per_call=1,
                                    **_IMAGES),
}
SEEDED = ("qwen-image", "flux.1-schnell")
"""Models whose upstream takes `seed`; the others have no such field."""

# Qianfan documents no moderation code, so a refusal is recognised by these likely names or by
# words in its message (an assumption; the emulator answers `sensitive_content`).
MODERATION_CODES = {"sensitive_content", "content_filter", "content_policy_violation", "unsafe_content",
                    "risk_content", "prompt_blocked"}
MODERATION_WORDS = ("sensitive", "unsafe", "敏感", "违规", "不合规")
# V2 names, plus the numeric codes of Baidu's V1 `error_code` envelope.
RATE_LIMIT_CODES = {"rate_limit_exceeded", "rpm_rate_limit_exceeded", "tpm_rate_limit_exceeded",
                    "qps_rate_limit_exceeded", "4", "17", "18", "336501", "336502"}
CHANNEL_CODES = {"invalid_model", "access_denied", "invalid_iam_token", "no_permission",
                 "quota_exceeded", "6", "13", "14", "15", "110", "111"}
"""Codes that blame the channel's key or account, not the client: another channel may serve."""
SERVER_CODES = {"internal_error", "server_high_load", "1", "2", "336000", "336100"}


class Qianfan(Provider):
    name = "qianfan"
    default_base_url = "https://qianfan.baidubce.com/v2"
    # url answers: qianfan-img-gen.bj.bcebos.com (upstreams/qianfan.md)
    image_hosts = ("qianfan-*.bcebos.com",)
    timeout = 180.0
    models = MODELS

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        opts = self._options(req, model)
        body: dict[str, Any] = {"model": model}
        if req.seed is not None:
            if model not in SEEDED:
                raise InvalidRequest(f"'seed' is not supported by model '{req.model}'.", field="seed",
                                     code="unsupported_parameter")
            if not 0 <= req.seed <= SEED_MAX:
                raise InvalidRequest(f"Invalid value: {req.seed}. 'seed' must be between 0 and {SEED_MAX}.",
                                     field="seed")
            body["seed"] = req.seed
        fitted = _fit(sizes.parse(req.size)) if req.size else None
        if model in ("ernie-irag-edit", "qwen-image-edit"):
            self._edit_fields(req, model, opts, body)
            path = "edits"
        else:
            body.update(prompt=req.prompt, n=req.n)
            if req.user:
                body["user"] = req.user
            # upstream's own default, sent so that a changed default cannot change the price
            fitted = fitted or (1024, 1024)
            if model == "irag-1.0":
                opts.pop("guidance", None)  # see IragOptions.guidance
            if model == "irag-1.0" and req.images:
                if req.mask is not None:
                    raise InvalidRequest("irag-1.0 takes a reference image, not a mask.", field="mask",
                                         code="unknown_parameter")
                if opts.get("refer_image"):
                    raise InvalidRequest("Give the reference image as 'image' or 'refer_image', not both.",
                                         field="refer_image")
                opts["refer_image"] = _data_url(req.images[0])
            if not opts.get("refer_image"):
                opts.pop("refer_image", None)
            body.update(opts)
            path = "generations"
        if fitted:
            body["size"] = f"{fitted[0]}x{fitted[1]}"
        headers = {"Authorization": f"Bearer {channel.api_key or ''}"}
        return UpstreamCall("POST", f"{self.base_url(channel)}/images/{path}", headers, json=body)

    @staticmethod
    def _options(req: ImageRequest, model: str) -> dict[str, Any]:
        """The request's vendor options with the model's defaults filled in (None: not sent)."""
        caps = MODELS.get(model) or MODELS.get(req.model)
        options = caps.options if caps and caps.options else None
        values = options.model_validate(req.extras).model_dump() if options else dict(req.extras)
        return {k: v for k, v in values.items() if v is not None}

    @staticmethod
    def _edit_fields(req: ImageRequest, model: str, opts: dict[str, Any], body: dict[str, Any]) -> None:
        body["image"] = _data_url(req.images[0])
        if model == "qwen-image-edit":
            if req.mask is not None:
                raise InvalidRequest("qwen-image-edit edits from the prompt and takes no mask.",
                                     field="mask", code="unknown_parameter")
            body["prompt"] = req.prompt
            return
        prompt = (req.prompt or "").strip()
        feature = opts.get("feature") or (
            "variation" if req.operation is Operation.VARIATION or req.mask is None
            else "repaint" if prompt else "erase")
        if feature == "variation" and req.mask is not None:
            raise InvalidRequest("The variation feature takes no mask.", field="mask", code="unknown_parameter")
        if feature != "variation" and req.mask is None:
            raise InvalidRequest(f"The {feature} feature needs a mask (the area to {feature}).", field="mask",
                                 code="missing_required_parameter")
        if feature != "erase" and not prompt:
            raise InvalidRequest(f"Missing required parameter: 'prompt' (the {feature} feature needs one).",
                                 field="prompt", code="missing_required_parameter")
        body["feature"] = feature
        if prompt:
            body["prompt"] = req.prompt
        if req.mask is not None:
            white = masks.convert(req.mask.data, req.mask_convention, "white")
            body["mask"] = f"data:image/png;base64,{base64.b64encode(white).decode()}"

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished:
        body = reply.json()
        if isinstance(body, dict) and (isinstance(body.get("error"), dict) or "error_code" in body):
            # read as a refusal of the request unless its code says otherwise
            raise error_from_body(reply.status if reply.status >= 400 else 400, body)
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) and i.get("url") for i in items):
            raise UpstreamBadResponse("Qianfan reply has no 'data' list of image URLs.")
        return Finished([UpstreamImage(url=item["url"]) for item in items])

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        try:
            body = reply.json()
        except UpstreamError:  # auth failures may come with an empty body and X-Bce-Error-Code
            body = {"error_code": reply.headers.get("X-Bce-Error-Code"),
                    "error_msg": reply.headers.get("X-Bce-Error-Message")}
        return error_from_body(reply.status, body)


def error_from_body(status: int, body: Any) -> UpstreamError:
    """Our error class for a Qianfan error body: V2 {"error": {...}} or V1 {"error_code", "error_msg"}."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code, message = err.get("code"), err.get("message")
    elif isinstance(body, dict):
        code, message = body.get("error_code"), body.get("error_msg")
    else:
        code = message = None
    code = str(code) if code not in (None, "") else None
    message = f"Qianfan: {message or f'HTTP {status}'}" + (f" ({code})" if code else "")
    lowered = message.lower()
    if code in MODERATION_CODES or any(word in lowered for word in MODERATION_WORDS):
        return UpstreamContentFiltered(message)
    # The vendor's code stays in the message; retryable classes keep the gateway's own codes.
    if code in RATE_LIMIT_CODES or status == 429:
        return UpstreamRateLimited(message)
    if status in (401, 403):
        return error_for_status(status, message)
    if code in CHANNEL_CODES or code in SERVER_CODES or status >= 500:
        return UpstreamUnavailable(message)
    return UpstreamRejected(message, code=code or "upstream_rejected")
