"""AWS Bedrock runtime: Stability AI's models on Bedrock and Amazon Nova Canvas, through
InvokeModel. Calls are built unsigned here; the engine signs them (SigV4, services/cloud_auth.py).

Upstream (reference: boto3's bedrock-runtime client), base https://bedrock-runtime.{region}.amazonaws.com:
  POST /model/{modelId}/invoke   (the id URL-quoted: stability.sd3-5-large-v1%3A0)
  Stability (stability.sd3-5-large-v1:0, stability.stable-image-ultra-v1:1, stability.stable-image-core-v1:1):
    {prompt, negative_prompt?, aspect_ratio?, seed?, output_format?, mode?, image?, strength?}
    -> {"images": [b64], "seeds": [int], "finish_reasons": [null | "Filter reason: ..."]}
  Nova Canvas (amazon.nova-canvas-v1:0):
    {"taskType": "TEXT_IMAGE", "textToImageParams": {"text", "negativeText"?},
     "imageGenerationConfig": {"numberOfImages", "width", "height", "cfgScale", "seed", "quality"}}
    {"taskType": "IMAGE_VARIATION", "imageVariationParams": {"images": [b64], "text"?, "similarityStrength"}}
    {"taskType": "INPAINTING", "inPaintingParams": {"image", "text", "maskImage" | "maskPrompt"}}
    -> {"images": [b64], "error": null | "..."}
errors: JSON {"message"} with the type in the `x-amzn-ErrorType` header (ValidationException 400,
AccessDeniedException 403, ResourceNotFoundException 404, ThrottlingException 429,
ModelNotReadyException 429, ServiceUnavailableException 503, ModelTimeoutException 408,
ModelErrorException 424, InternalServerException 500).
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import quote

import pybase64
from pydantic import BaseModel, ConfigDict, Field

from pixelgate.domain import masks, sizes
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.domain.result import Finished, UpstreamImage
from pixelgate.domain.sizes import Size
from pixelgate.errors import (InvalidRequest, UpstreamBadResponse, UpstreamContentFiltered, UpstreamError,
                              UpstreamRateLimited, UpstreamRejected, UpstreamUnavailable)
from pixelgate.providers.base import (EDIT, GENERATE, VARIATION, Capabilities, Channel, Provider, UpstreamCall,
                                      UpstreamReply, VendorOptions, error_for_status)

MB = 1024 * 1024
STABILITY_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
SD35, ULTRA, CORE, NOVA = ("stability.sd3-5-large-v1:0", "stability.stable-image-ultra-v1:1",
                           "stability.stable-image-core-v1:1", "amazon.nova-canvas-v1:0")


class BedrockOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")


class StabilityOptions(VendorOptions):
    negative_prompt: str | None = Field(default=None, max_length=10000)
    strength: float | None = Field(default=None, ge=0, le=1)
    """Image to image (SD3.5 Large): how much the input image is changed (1: entirely)."""


class NovaOptions(VendorOptions):
    negative_prompt: str | None = Field(default=None, min_length=1, max_length=1024)
    cfgScale: float | None = Field(default=None, ge=1.1, le=10)
    similarityStrength: float | None = Field(default=None, ge=0.2, le=1)
    """Variations: how close to the input image (1: closest)."""
    maskPrompt: str | None = Field(default=None, min_length=1, max_length=1024)
    """Inpainting: what to repaint, in words, instead of a mask image."""


def _stability_fit(size: Size) -> Size | None:
    if size.is_auto:
        return None
    options = [Size(ratio=tuple(map(int, r.split(":")))) for r in STABILITY_RATIOS]  # type: ignore[arg-type]
    return sizes.nearest(size, options, allowed_text=", ".join(STABILITY_RATIOS))


NOVA_MIN, NOVA_MAX, NOVA_PIXELS = 320, 4096, 4_194_304


def nova_size(size: Size) -> tuple[int, int] | None:
    """Nova Canvas: width and height in steps of 16, 320-4096 a side, aspect 1:4-4:1, at most
    4,194,304 pixels; a ratio or tier becomes such a size (1K: about 1 MP)."""
    if size.is_auto:
        return None
    if size.width and size.height:
        w, h = size.width, size.height
    else:
        w, h = sizes.pixels_for(size, 1024 * 1024, max_side=NOVA_MAX)
        w, h = max(NOVA_MIN, w // 16 * 16), max(NOVA_MIN, h // 16 * 16)
        while w * h > NOVA_PIXELS:
            scale = math.sqrt(NOVA_PIXELS / (w * h))
            w, h = int(w * scale) // 16 * 16, int(h * scale) // 16 * 16
    problem = None
    if w % 16 or h % 16:
        problem = "both sides must be multiples of 16"
    elif min(w, h) < NOVA_MIN or max(w, h) > NOVA_MAX:
        problem = "each side must be 320 to 4096"
    elif max(w, h) > 4 * min(w, h):
        problem = "the aspect ratio must be between 1:4 and 4:1"
    elif w * h > NOVA_PIXELS:
        problem = "it may have at most 4,194,304 pixels (2048x2048)"
    if problem:
        raise InvalidRequest(f"Invalid value: '{sizes.describe(size)}'. For Nova Canvas 'size' is WIDTHxHEIGHT, "
                             f"and {problem}.", field="size")
    return w, h


_STABILITY = dict(max_prompt=10000, n_per_call=1, fit_size=_stability_fit, output_formats=("png", "jpeg", "webp"),
                  options=StabilityOptions)
MODELS = {
    SD35: Capabilities(operations=frozenset({GENERATE, EDIT}), max_images=1, image_formats=("png", "jpeg", "webp"),
                       image_max_bytes=10 * MB, **_STABILITY),
    ULTRA: Capabilities(operations=frozenset({GENERATE}), **_STABILITY),
    CORE: Capabilities(operations=frozenset({GENERATE}), **_STABILITY),
    NOVA: Capabilities(operations=frozenset({GENERATE, EDIT, VARIATION}), max_prompt=1024, max_n=5, n_per_call=5,
                       fit_size=nova_size, max_side=NOVA_MAX, qualities=("standard", "premium"),
                       output_formats=("png", "jpeg", "webp"), max_images=1, image_formats=("png", "jpeg"),
                       image_max_bytes=10 * MB, options=NovaOptions),
}
_FILTERED = re.compile(r"content filter|blocked by our content|filter reason", re.I)


class Bedrock(Provider):
    name = "bedrock"
    credentials = "aws-sigv4"
    channel_options = BedrockOptions
    timeout = 180.0
    models = MODELS

    def base_url(self, channel: Channel) -> str:
        region = channel.options.get("region", "us-east-1")
        return (channel.base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        body = _nova(req) if model.startswith("amazon.nova") else _stability(req, model)
        url = f"{self.base_url(channel)}/model/{quote(model, safe='')}/invoke"
        return UpstreamCall("POST", url, {"Accept": "application/json"}, json=body)

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished:
        body = reply.json(lift=("images",))
        if not isinstance(body, dict) or not isinstance(body.get("images", []), list):
            raise UpstreamBadResponse("Bedrock's reply has no 'images' list.")
        if body.get("error"):  # Nova: an error beside (or instead of) the images
            raise UpstreamRejected(str(body["error"])[:500], code="upstream_error")
        reasons = [str(r) for r in body.get("finish_reasons") or [] if r]
        if any(_FILTERED.search(r) for r in reasons):
            raise UpstreamContentFiltered(f"Bedrock withheld the image ({reasons[0]}).")
        images = [UpstreamImage(b64=b) for b in body.get("images") or []]
        if not images:
            raise UpstreamBadResponse("Bedrock answered without an image.")
        seeds = body.get("seeds")
        return Finished(images, {"seeds": seeds} if isinstance(seeds, list) else {})

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        body = reply.json_or_none()
        message = str((body or {}).get("message") or (body or {}).get("Message") or "") if isinstance(body, dict) else ""
        kind = reply.headers.get("x-amzn-errortype", "").split(":")[0]
        message = message or f"Bedrock answered HTTP {reply.status} {kind}".rstrip()
        if kind == "ValidationException" and _FILTERED.search(message):
            return UpstreamContentFiltered(message)
        if kind in ("ThrottlingException", "ModelNotReadyException", "ServiceQuotaExceededException"):
            return UpstreamRateLimited(message, code=_snake(kind))
        if kind in ("ResourceNotFoundException", "AccessDeniedException"):
            # The model is not enabled for this account or region: another channel may serve it.
            return UpstreamUnavailable(message, code=_snake(kind))
        if kind == "ValidationException":
            return UpstreamRejected(message, field=_param(message), code="validation_exception")
        return error_for_status(reply.status, message, code=_snake(kind) if kind else None)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.removesuffix("Exception")).lower()


# Words in a Bedrock validation message -> our parameter name
_PARAMS = {"aspect_ratio": "size", "width": "size", "height": "size", "seed": "seed", "prompt": "prompt",
           "negative": "negative_prompt", "numberofimages": "n", "cfgscale": "cfgScale", "image": "image",
           "strength": "strength"}


def _param(message: str) -> str | None:
    lowered = message.lower()
    return next((f for word, f in _PARAMS.items() if word in lowered), None)


def _b64(data: bytes) -> str:
    return pybase64.b64encode(data).decode()


def _stability(req: ImageRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": req.prompt or ""}
    if req.extras.get("negative_prompt"):
        body["negative_prompt"] = req.extras["negative_prompt"]
    if req.seed is not None:
        if not 0 <= req.seed <= 4294967294:
            raise InvalidRequest("'seed' must be 0 to 4294967294 on Stability models.", field="seed")
        body["seed"] = req.seed
    if req.output_format in ("png", "jpeg"):  # webp: the engine converts from png
        body["output_format"] = req.output_format
    if req.operation is Operation.EDIT:
        if req.mask is not None:
            raise InvalidRequest("Stability models on Bedrock edit a whole image (image to image) and take no mask.",
                                 field="mask", code="unsupported_parameter")
        body.update(mode="image-to-image", image=_b64(req.images[0].data), strength=req.extras.get("strength", 0.7))
        return body  # the output takes the input's shape: no aspect_ratio
    if "strength" in req.extras:
        raise InvalidRequest("'strength' applies to edits (image to image) only.", field="strength")
    fitted = _stability_fit(sizes.parse(req.size)) if req.size else None
    if fitted is not None:
        body["aspect_ratio"] = fitted.colon()
    if model == SD35:
        body["mode"] = "text-to-image"
    return body


def _nova(req: ImageRequest) -> dict[str, Any]:
    config: dict[str, Any] = {"numberOfImages": req.n}
    if req.size and (fitted := nova_size(sizes.parse(req.size))):
        config["width"], config["height"] = fitted
    if req.quality:
        config["quality"] = req.quality
    if "cfgScale" in req.extras:
        config["cfgScale"] = req.extras["cfgScale"]
    if req.seed is not None:
        if not 0 <= req.seed <= 2147483646:
            raise InvalidRequest("'seed' must be 0 to 2147483646 on Nova Canvas.", field="seed")
        config["seed"] = req.seed
    negative = {"negativeText": req.extras["negative_prompt"]} if req.extras.get("negative_prompt") else {}
    if req.operation is Operation.VARIATION:
        params: dict[str, Any] = {"images": [_b64(req.images[0].data)], **negative}
        if req.prompt:
            params["text"] = req.prompt
        if "similarityStrength" in req.extras:
            params["similarityStrength"] = req.extras["similarityStrength"]
        return {"taskType": "IMAGE_VARIATION", "imageVariationParams": params, "imageGenerationConfig": config}
    if req.operation is Operation.EDIT:
        params = {"image": _b64(req.images[0].data), "text": req.prompt, **negative}
        if req.mask is not None:
            params["maskImage"] = _b64(masks.convert(req.mask.data, req.mask_convention, "black"))
        elif req.extras.get("maskPrompt"):
            params["maskPrompt"] = req.extras["maskPrompt"]
        else:
            raise InvalidRequest("Nova Canvas inpainting needs a 'mask' image or a 'maskPrompt'.", field="mask")
        config.pop("width", None), config.pop("height", None)  # inpainting keeps the input's size
        return {"taskType": "INPAINTING", "inPaintingParams": params, "imageGenerationConfig": config}
    return {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": req.prompt, **negative},
            "imageGenerationConfig": config}
