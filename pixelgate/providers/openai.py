"""OpenAI Images API (gpt-image-2, gpt-image-2.5-*, gpt-image-2.6-*, and the retired dall-e-2,
dall-e-3, gpt-image-1, gpt-image-1-mini, gpt-image-1.5), and `openai-compatible`: any upstream
that speaks the same wire format, such as another gateway.

Upstream (authority: ../shared/upstreams/openai.md), Bearer auth:
  POST /v1/images/generations  JSON {model, prompt, n, size, quality, ...}
  POST /v1/images/edits        multipart: image | image[] (<= 16), mask, prompt, ...
  POST /v1/images/variations   multipart: image, model=dall-e-2, n, size
  -> {"created", "data": [{"b64_json" | "url", "revised_prompt"?}], background?, output_format?,
      quality?, size?, usage?}
  stream=true (GPT image): SSE `event: image_generation.partial_image` ... `.completed`
  errors: {"error": {"message", "type", "param", "code"}}
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pixelgate.domain import sizes
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.sizes import Size
from pixelgate.domain.result import Finished, StreamPartial, UpstreamImage
from pixelgate.errors import (InvalidRequest, UpstreamContentFiltered, UpstreamError, UpstreamRejected,
                              UpstreamUnavailable)
from pixelgate.providers.base import (EDIT, GENERATE, VARIATION, Capabilities, Channel, FilePart,
                                      Provider, UpstreamCall, UpstreamReply, VendorOptions,
                                      error_for_status)

MB = 1024 * 1024
DALLE2_SIZES = ("256x256", "512x512", "1024x1024")
GPT_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")

_DALLE2 = Capabilities(
    operations=frozenset({GENERATE, EDIT, VARIATION}), max_prompt=1000, sizes=DALLE2_SIZES,
    qualities=("standard", "auto"), max_images=1, image_formats=("png",), image_max_bytes=4 * MB,
    square_images=True, image_needs_alpha_without_mask=True)
_DALLE3 = Capabilities(
    operations=frozenset({GENERATE}), max_prompt=4000, max_n=10, n_per_call=1, surface_max_n={"openai": 1},
    sizes=("1024x1024", "1792x1024", "1024x1792"), qualities=("standard", "hd", "auto"),
    styles=("vivid", "natural"))
_GPT_IMAGE = Capabilities(
    operations=frozenset({GENERATE, EDIT}), max_prompt=32000, sizes=GPT_SIZES,
    qualities=("low", "medium", "high", "auto"), backgrounds=("transparent", "opaque", "auto"),
    output_formats=("png", "jpeg", "webp"), output_compression=True, moderation=("low", "auto"),
    input_fidelity=("high", "low"), stream=True, max_images=16,
    image_formats=("png", "webp", "jpeg"), image_max_bytes=50 * MB, surface_delivery={"openai": Delivery.B64})
_GPT_IMAGE_MINI = Capabilities(**{**_GPT_IMAGE.__dict__, "input_fidelity": None})

# gpt-image-2 and later: any WxH with both sides divisible by 16, aspect between 1:3 and 3:1,
# at most 3840x2160 (openai.md §2); the lower pixel bound is the 2.5/2.6 one, the strictest known.
GPT2_MAX_EDGE, GPT2_MAX_PIXELS, GPT2_MIN_PIXELS = 3840, 3840 * 2160, 655_360


def gpt2_size(size: Size) -> str:
    """The `size` to send a gpt-image-2 model: `auto`, the exact WxH when it is valid, or a
    ratio or tier made concrete (at least 1 MP, steps of 16); else InvalidRequest."""
    if size.is_auto:
        return "auto"
    if size.width and size.height:
        w, h = size.width, size.height
    else:
        w, h = sizes.pixels_for(size, 1024 * 1024, max_side=GPT2_MAX_EDGE)
        while w * h > GPT2_MAX_PIXELS:  # a 4K tier at 16:9 is 3840x2160; wider ratios shrink
            w, h = w - 16 * max(1, round(w / h)), h - 16
    problem = None
    if w % 16 or h % 16:
        problem = "both sides must be multiples of 16"
    elif max(w, h) > 3 * min(w, h):
        problem = "the aspect ratio must be between 1:3 and 3:1"
    elif max(w, h) > GPT2_MAX_EDGE or w * h > GPT2_MAX_PIXELS:
        problem = "it may be at most 3840x2160 (8,294,400 pixels, 3840 a side)"
    elif w * h < GPT2_MIN_PIXELS:
        problem = "it must have at least 655,360 pixels (e.g. 1024x640)"
    if problem:
        raise InvalidRequest(f"Invalid value: '{sizes.describe(size)}'. For this model 'size' is 'auto' or "
                             f"WIDTHxHEIGHT, and {problem}.", field="size")
    return f"{w}x{h}"


class ComplexityOptions(VendorOptions):
    """gpt-image-2.6's `complexity` (OpenAI image generation guide): how elaborate the image is,
    separate from `quality`; no extra charge."""

    complexity: str | None = Field(default=None, pattern="^(low|medium|high)$")


_GPT_IMAGE_2 = Capabilities(**{**_GPT_IMAGE.__dict__, "sizes": None, "fit_size": gpt2_size,
                               "max_side": GPT2_MAX_EDGE})
_GPT_IMAGE_26 = Capabilities(**{**_GPT_IMAGE_2.__dict__, "options": ComplexityOptions})


class CompatibleOptions(VendorOptions):
    """Fields the source documents pass through "when the upstream supports them"."""

    watermark: bool | None = None
    seed: int | None = Field(default=None, ge=-1, le=2147483647)


_GENERIC = Capabilities(
    operations=frozenset({GENERATE, EDIT, VARIATION}), max_prompt=32000,
    qualities=("standard", "hd", "low", "medium", "high", "auto"), styles=("vivid", "natural"),
    backgrounds=("transparent", "opaque", "auto"), output_formats=("png", "jpeg", "webp"),
    output_compression=True, moderation=("low", "auto"), input_fidelity=("high", "low"),
    stream=True, max_images=16, image_formats=("png", "webp", "jpeg"), image_max_bytes=50 * MB,
    options=CompatibleOptions)

# The reply and stream fields GPT image models echo back.
_ECHOED = ("background", "output_format", "quality", "size", "usage")


def _is_gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


class OpenAI(Provider):
    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    # dall-e URLs: https://oaidalleapiprodscus.blob.core.windows.net/private/... (upstreams/openai.md)
    image_hosts = ("oaidalleapiprod*.blob.core.windows.net",)
    timeout = 180.0
    models = {"dall-e-2": _DALLE2, "dall-e-3": _DALLE3, "gpt-image-1": _GPT_IMAGE,
              "gpt-image-1-mini": _GPT_IMAGE_MINI, "gpt-image-1.5": _GPT_IMAGE, "chatgpt-image-latest": _GPT_IMAGE,
              "gpt-image-2": _GPT_IMAGE_2, "gpt-image-2-2026-04-21": _GPT_IMAGE_2,
              "gpt-image-2.5-sunburst": _GPT_IMAGE_2, "gpt-image-2.5-sunburst-2026-09-08": _GPT_IMAGE_2,
              "gpt-image-2.5-flare": _GPT_IMAGE_2, "gpt-image-2.5-flare-2026-09-08": _GPT_IMAGE_2,
              "gpt-image-2.6-sunburst": _GPT_IMAGE_26, "gpt-image-2.6-flare": _GPT_IMAGE_26}

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        fields: dict[str, Any] = {"model": model, "n": req.n}
        if req.operation is not Operation.VARIATION:
            fields["prompt"] = req.prompt
        for name in ("size", "quality", "style", "background", "output_format",
                     "output_compression", "moderation", "input_fidelity", "user", "partial_images"):
            value = getattr(req, name)
            if value is not None:
                fields[name] = value
        if req.size is not None and self.models.get(model, self.generic) in (_GPT_IMAGE_2, _GPT_IMAGE_26):
            fields["size"] = gpt2_size(sizes.parse(req.size))
        if req.stream:
            fields["stream"] = True
        if not _is_gpt_image(model):
            # GPT image models always answer base64 and refuse the field; for the others we
            # ask for the bytes, since we store every image ourselves before answering.
            fields["response_format"] = "b64_json"
        fields.update(req.extras)
        headers = {"Authorization": f"Bearer {channel.api_key or ''}"}
        base = self.base_url(channel)
        if req.operation is Operation.GENERATE:
            return UpstreamCall("POST", f"{base}/images/generations", headers, json=fields,
                                stream=req.stream)
        form: list[tuple[str, Any]] = [(k, _form_value(v)) for k, v in fields.items()]
        image_field = "image" if len(req.images) == 1 else "image[]"
        for i, image in enumerate(req.images):
            form.append((image_field, FilePart(image.data, image.filename or f"image{i}.{image.format}",
                                               image.mime)))
        if req.mask is not None:
            form.append(("mask", FilePart(req.mask.data, "mask.png", "image/png")))
        path = "edits" if req.operation is Operation.EDIT else "variations"
        return UpstreamCall("POST", f"{base}/images/{path}", headers, form=form, stream=req.stream)

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished:
        body = reply.json(lift=("b64_json",))
        try:
            images = [UpstreamImage(b64=item.get("b64_json"), url=item.get("url"),
                                    revised_prompt=item.get("revised_prompt"))
                      for item in body["data"]]
        except (KeyError, TypeError, AttributeError):
            raise UpstreamError("upstream reply has no 'data' list of images",
                                code="upstream_bad_response") from None
        if any(img.b64 is None and img.url is None for img in images):
            raise UpstreamError("upstream reply has an image with neither b64_json nor url",
                                code="upstream_bad_response")
        return Finished(images, {k: body[k] for k in _ECHOED if k in body})

    def parse_stream_event(self, req: ImageRequest, event: str, data: Any) -> StreamPartial | Finished | None:
        return stream_event(event, data)

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        body = reply.json_or_none()
        return error_from_body(reply.status, body)


def stream_event(event: str, data: Any) -> StreamPartial | Finished | None:
    """One SSE frame of an OpenAI image stream, in our types."""
    if isinstance(data, dict) and "error" in data:
        raise error_from_body(500, data)
    kind = (data.get("type") if isinstance(data, dict) else None) or event
    if kind.endswith(".partial_image"):
        meta = {k: data[k] for k in _ECHOED if k in data}
        return StreamPartial(b64=data["b64_json"], index=data.get("partial_image_index", 0), meta=meta)
    if kind.endswith(".completed"):
        return Finished([UpstreamImage(b64=data["b64_json"])], {k: data[k] for k in _ECHOED if k in data})
    return None


def error_from_body(status: int, body: Any) -> UpstreamError:
    """Our error class for an OpenAI-shaped error body."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return error_for_status(status, f"upstream answered HTTP {status}")
    message = str(err.get("message") or f"upstream answered HTTP {status}")
    code, param = err.get("code"), err.get("param")
    if code in ("content_policy_violation", "moderation_blocked"):
        return UpstreamContentFiltered(message, field=param)
    if code in ("model_not_found", "insufficient_quota", "billing_hard_limit_reached"):
        # The channel is misconfigured or out of credit, not the client's fault.
        return UpstreamUnavailable(message, code=code)
    if 400 <= status < 500 and status not in (401, 403, 429):
        return UpstreamRejected(message, field=param, code=code or "upstream_rejected")
    return error_for_status(status, message, field=param)


class OpenAICompatible(OpenAI):
    """Any upstream speaking the OpenAI Images API; unknown model names are passed through."""

    name = "openai-compatible"
    default_base_url = None
    image_hosts = ()  # whoever it is: its own origin, or what the operator adds (upstream_image_hosts)
    needs_base_url = True
    models = {}
    generic = _GENERIC


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
