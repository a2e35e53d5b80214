"""Google Gemini API: Imagen 4 through `:predict`, and the Gemini image models ("Nano Banana")
through `:generateContent` (text-to-image and instruction editing). Both answer synchronously.

Upstream (authority: ../shared/upstreams/google.md), base https://generativelanguage.googleapis.com/v1beta,
header `x-goog-api-key`:
  POST /models/{imagen model}:predict
    {"instances": [{"prompt"}], "parameters": {"sampleCount": 1..4, "aspectRatio": "16:9",
     "sampleImageSize": "1K"|"2K", "personGeneration", "includeRaiReason": true,
     "outputOptions": {"mimeType": "image/jpeg", "compressionQuality": 0..100}}}
    -> {"predictions": [{"bytesBase64Encoded", "mimeType"} | {"raiFilteredReason"}]}  ({} if all filtered)
  POST /models/{gemini model}:generateContent
    {"contents": [{"role": "user", "parts": [{"text"}, {"inlineData": {"mimeType", "data"}}, ...]}],
     "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "seed",
                          "imageConfig": {"aspectRatio": "16:9", "imageSize": "1K"|"2K"|"4K"}}}
    -> {"candidates": [{"content": {"parts": [{"text"}, {"inlineData": {"mimeType", "data"}}]},
                        "finishReason": "STOP"}], "promptFeedback"?: {"blockReason"}, "usageMetadata"}
  errors: {"error": {"code", "message", "status", "details"}}
Safety blocks arrive with HTTP 200: Imagen drops the images (or lists `raiFilteredReason`);
Gemini sets `promptFeedback.blockReason` or a candidate `finishReason` such as IMAGE_SAFETY.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pybase64
from pydantic import BeforeValidator, Field

from pixelgate.domain import sizes
from pixelgate.domain.request import ImageRequest
from pixelgate.domain.result import Finished, UpstreamImage
from pixelgate.domain.sizes import Size
from pixelgate.errors import (InvalidRequest, UpstreamBadResponse, UpstreamContentFiltered,
                              UpstreamError, UpstreamRateLimited, UpstreamRejected,
                              UpstreamUnavailable)
from pixelgate.providers.base import (EDIT, GENERATE, Capabilities, Channel, Provider,
                                      UpstreamCall, UpstreamReply, VendorOptions, error_for_status)

MB = 1024 * 1024
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
GEMINI3_RATIOS = GEMINI_RATIOS + ("1:4", "4:1", "1:8", "8:1")


@dataclass(frozen=True)
class Spec:
    """How one upstream model is reached and which sizes it makes."""

    method: Literal["predict", "generateContent"]
    ratios: tuple[str, ...]
    tiers: tuple[str | None, ...]
    """Resolution tiers, smallest first; (None,): the model takes no resolution field."""

    def fit(self, size: Size) -> Size | None:
        """The (ratio, tier) nearest to any size vocabulary; None for auto (the vendor's default,
        which for Gemini edits is the input image's ratio)."""
        if size.is_auto:
            return None
        options = [Size(ratio=tuple(map(int, r.split(":"))), tier=t)  # type: ignore[arg-type]
                   for t in self.tiers for r in self.ratios]
        shown = ", ".join(self.ratios) + ("" if self.tiers == (None,) else " at " + "/".join(self.tiers))
        return sizes.nearest(size, options, allowed_text=shown)


SPECS: dict[str, Spec] = {
    "imagen-4.0-fast-generate-001": Spec("predict", IMAGEN_RATIOS, (None,)),  # no sampleImageSize
    "imagen-4.0-generate-001": Spec("predict", IMAGEN_RATIOS, ("1K", "2K")),
    "imagen-4.0-ultra-generate-001": Spec("predict", IMAGEN_RATIOS, ("1K", "2K")),
    "imagen-3.0-generate-002": Spec("predict", IMAGEN_RATIOS, (None,)),
    "gemini-2.5-flash-image": Spec("generateContent", GEMINI_RATIOS, (None,)),  # ~1 MP always
    "gemini-2.5-flash-image-preview": Spec("generateContent", GEMINI_RATIOS, (None,)),
    "gemini-3-pro-image-preview": Spec("generateContent", GEMINI3_RATIOS, ("1K", "2K", "4K")),
    "gemini-3.1-flash-image-preview": Spec("generateContent", GEMINI3_RATIOS, ("1K", "2K", "4K")),
    # GA ids (ai.google.dev changelog): 3 Pro and 3.1 Flash on 2026-05-28, 3.1 Flash Lite (1K only)
    # on 2026-06-30, Nano Banana 2.1 on 2026-10-06
    "gemini-3-pro-image": Spec("generateContent", GEMINI3_RATIOS, ("1K", "2K", "4K")),
    "gemini-3.1-flash-image": Spec("generateContent", GEMINI3_RATIOS, ("1K", "2K", "4K")),
    "gemini-3.1-flash-lite-image": Spec("generateContent", GEMINI3_RATIOS, ("1K",)),
    "gemini-nano-banana-2.1": Spec("generateContent", GEMINI3_RATIOS, ("1K", "2K", "4K")),
}
ALIASES = {"nano-banana": "gemini-2.5-flash-image", "nano-banana-pro": "gemini-3-pro-image",
           "nano-banana-2": "gemini-3.1-flash-image"}


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class ImagenOptions(VendorOptions):
    numberOfImages: int | None = Field(default=None, ge=1, le=4)
    """The source document's Imagen field (the SDK's name for sampleCount); it sets n."""
    # The enum is case-insensitive upstream (the SDK sends ALLOW_ADULT); allow_all is refused
    # on the Gemini API.
    personGeneration: Annotated[Literal["dont_allow", "allow_adult"], BeforeValidator(_lower)] | None = None


def _caps(spec: Spec) -> Capabilities:
    common = dict(max_n=10, fit_size=spec.fit, output_formats=("png", "jpeg", "webp"),
                  output_compression=True)
    if spec.method == "predict":
        # sampleCount defaults to 4 upstream, so it is always sent; above 4 the engine fans out.
        return Capabilities(operations=frozenset({GENERATE}), n_per_call=4, n_option="numberOfImages",
                            options=ImagenOptions, **common)
    # One image per response and no `n`; 3.x models take up to 14 references, 2.5 "works best with 3".
    return Capabilities(operations=frozenset({GENERATE, EDIT}), n_per_call=1,
                        max_images=3 if spec.tiers == (None,) else 14,
                        image_formats=("png", "jpeg", "webp"), image_max_bytes=14 * MB, **common)


MODELS = {**{m: _caps(s) for m, s in SPECS.items()}, **{a: _caps(SPECS[m]) for a, m in ALIASES.items()}}

# Gemini candidates ending like this were withheld by the safety system (google.md §3).
FILTERED = {"SAFETY", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER",
            "PROHIBITED_CONTENT", "NO_IMAGE", "BLOCKLIST", "SPII", "RECITATION"}
# Words in a Google error message -> our parameter name (Google errors carry no `param`).
PARAMS = {"aspectratio": "size", "imagesize": "size", "samplecount": "n", "prompt": "prompt",
          "inlinedata": "image", "seed": "seed", "persongeneration": "personGeneration"}
_POLICY = re.compile(r"violate|usage guidelines|responsible ai|safety (filter|polic)", re.I)


class Google(Provider):
    name = "google"
    default_base_url = "https://generativelanguage.googleapis.com/v1beta"
    timeout = 300.0  # Nano Banana Pro at 4K can take minutes when Google is busy
    models = MODELS

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        model = ALIASES.get(model, model)
        spec = SPECS.get(model) or SPECS.get(ALIASES.get(req.model, req.model)) or _guess(model)
        fitted = spec.fit(sizes.parse(req.size)) if req.size else None
        url = f"{self.base_url(channel)}/models/{model}:{spec.method}"
        body = _imagen(req, spec, fitted, self.imagen_seed) if spec.method == "predict" else _gemini(req, spec, fitted)
        return UpstreamCall("POST", url, self.auth_headers(channel), json=body)

    imagen_seed = False
    """Whether Imagen takes `seed` here (Vertex AI: yes, without the watermark; the Gemini API: no)."""

    def auth_headers(self, channel: Channel) -> dict[str, str]:
        return {"x-goog-api-key": channel.api_key or ""}

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished:
        body = reply.json(lift=("bytesBase64Encoded", "data"))
        if not isinstance(body, dict):
            raise UpstreamBadResponse("Google answered with something other than a JSON object.")
        try:
            # Imagen answers {"predictions": [...]}, or {} when everything was filtered.
            return _predictions(body) if "predictions" in body or not body else _candidates(body)
        except (AttributeError, TypeError, KeyError):
            raise UpstreamBadResponse("Google's reply does not have the documented shape.") from None

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        body = reply.json_or_none()
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return error_for_status(reply.status, f"upstream answered HTTP {reply.status}")
        message = str(err.get("message") or f"upstream answered HTTP {reply.status}")
        status = str(err.get("status") or "")
        details = [d for d in err.get("details") or [] if isinstance(d, dict)]
        if any(d.get("reason") == "API_KEY_INVALID" for d in details):
            # A wrong key is a 400 INVALID_ARGUMENT at Google, but it is the channel's fault.
            return error_for_status(401, message)
        if status in ("FAILED_PRECONDITION", "NOT_FOUND"):
            # Region not served, billing off, model not offered: this channel cannot, another may.
            return UpstreamUnavailable(message, code=f"upstream_{status.lower()}")
        if reply.status == 429 or status == "RESOURCE_EXHAUSTED":
            delay = next((d["retryDelay"] for d in details if isinstance(d.get("retryDelay"), str)), "")
            seconds = delay.rstrip("s").split(".")[0]
            return UpstreamRateLimited(message, code="resource_exhausted",
                                       headers={"retry-after": seconds} if seconds.isdigit() else None)
        if reply.status == 400 and _POLICY.search(message):
            return UpstreamContentFiltered(message)
        if 400 <= reply.status < 500 and reply.status not in (401, 403):
            return UpstreamRejected(message, field=_param(message), code=status.lower() or None)
        return error_for_status(reply.status, message)


def _guess(model: str) -> Spec:
    """A model id this module does not know yet (a channel's model_map): its family's basics."""
    return Spec("predict", IMAGEN_RATIOS, (None,)) if model.startswith("imagen") \
        else Spec("generateContent", GEMINI_RATIOS, (None,))


def _count(req: ImageRequest) -> int:
    wanted = req.extras.get("numberOfImages")
    if wanted is None:
        return req.n
    # Valid pairs never fan out (numberOfImages <= n_per_call); for n above 4 the engine splits the
    # request before this check can see the n the client asked for.
    if req.n not in (1, wanted):
        raise InvalidRequest(f"'numberOfImages' ({wanted}) and 'n' ({req.n}) disagree; give one of them.",
                             field="numberOfImages")
    return wanted


def _imagen(req: ImageRequest, spec: Spec, fitted: Size | None, seeded: bool = False) -> dict:
    if req.seed is not None and not seeded:  # Vertex-only on Imagen; the Gemini API has no seed for it
        raise InvalidRequest("'seed' is not supported by Imagen on the Gemini API.", field="seed")
    # includeRaiReason makes filtered images visible, so "all filtered" is told from a bad reply.
    params: dict[str, Any] = {"sampleCount": _count(req), "includeRaiReason": True}
    if req.seed is not None:  # Vertex refuses a seed with the (default) SynthID watermark on
        params.update(seed=req.seed, addWatermark=False)
    if fitted is not None:
        params["aspectRatio"] = fitted.colon()
        if fitted.tier:
            params["sampleImageSize"] = fitted.tier
    if req.output_format in ("png", "jpeg"):  # webp: the engine converts from png
        params["outputOptions"] = {"mimeType": f"image/{req.output_format}"}
        if req.output_format == "jpeg" and req.output_compression is not None:
            params["outputOptions"]["compressionQuality"] = req.output_compression
    if "personGeneration" in req.extras:
        params["personGeneration"] = req.extras["personGeneration"]
    return {"instances": [{"prompt": req.prompt}], "parameters": params}


def _gemini(req: ImageRequest, spec: Spec, fitted: Size | None) -> dict:
    if req.mask is not None:
        raise InvalidRequest("Gemini image models edit by instruction and take no mask; describe the "
                             "change in the prompt.", field="mask", code="unsupported_parameter")
    parts: list[dict] = [{"text": req.prompt or ""}]
    parts += [{"inlineData": {"mimeType": img.mime, "data": pybase64.b64encode(img.data).decode()}}
              for img in req.images]
    config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}  # without IMAGE: text only
    if fitted is not None:
        config["imageConfig"] = {"aspectRatio": fitted.colon(), **({"imageSize": fitted.tier} if fitted.tier else {})}
    if req.seed is not None:
        config["seed"] = req.seed
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}


def _predictions(body: dict) -> Finished:
    predictions = body.get("predictions", [])
    if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
        raise UpstreamBadResponse("Imagen answered without a 'predictions' list.")
    images = [UpstreamImage(b64=p["bytesBase64Encoded"]) for p in predictions if p.get("bytesBase64Encoded")]
    reasons = [str(p["raiFilteredReason"]) for p in predictions if p.get("raiFilteredReason")]
    if not images:
        if predictions and not reasons:
            raise UpstreamBadResponse("Imagen answered predictions without images.")
        # Every image filtered: the reply is {} or only raiFilteredReason entries, with HTTP 200.
        raise UpstreamContentFiltered(reasons[0] if reasons else "Google's safety filters removed every image.")
    meta = {"partial": f"{len(reasons)} image(s) removed by Google's safety filters"} if reasons else {}
    return Finished(images, meta)


def _candidates(body: dict) -> Finished:
    reason = (body.get("promptFeedback") or {}).get("blockReason")
    if reason:
        raise UpstreamContentFiltered(f"Google blocked the prompt (blockReason {reason}).")
    images, texts, finishes = [], [], []
    for cand in body.get("candidates") or []:
        finishes.append(cand.get("finishReason"))
        for part in (cand.get("content") or {}).get("parts") or []:
            if part.get("thought"):  # 3.x "thinking" parts, interim images included
                continue
            data = part.get("inlineData") or part.get("inline_data")
            if isinstance(data, dict) and data.get("data"):
                images.append(UpstreamImage(b64=data["data"]))
            elif part.get("text"):
                texts.append(part["text"])
    if images:  # usageMetadata bills the call (token-priced models)
        usage = body.get("usageMetadata")
        return Finished(images, {"usage_metadata": usage} if isinstance(usage, dict) else {})
    if filtered := [f for f in finishes if f in FILTERED]:
        raise UpstreamContentFiltered(f"Google withheld the image (finishReason {filtered[0]}).")
    if texts:  # the model chose to answer in words (often a refusal or a question back)
        raise UpstreamRejected("The model answered with text and no image: " + " ".join(texts)[:500],
                               code="upstream_no_image")
    raise UpstreamBadResponse(f"Google answered without an image (finishReason {finishes[0] if finishes else None}).")


def _param(message: str) -> str | None:
    lowered = re.sub(r"[_ ]", "", message.lower())  # aspect_ratio, aspect ratio and aspectRatio alike
    return next((field for word, field in PARAMS.items() if word in lowered), None)
