"""Ideogram: 4.0 (`V4`, `ideogram-v4`, `V_4_0`), 3.0 (`V3`, `ideogram-v3`, `V_3`) and the legacy
models V_1 ... V_2A_TURBO. Synchronous.

Upstream (authority: ../shared/upstreams/ideogram.md), header `Api-Key: <key>`:
  POST /v1/ideogram-v4/generate            multipart {text_prompt | json_prompt (one of them),
                                           resolution "2560x1440" (one of 21 2K sizes; none: the
                                           model picks), rendering_speed TURBO|DEFAULT|QUALITY, seed}
                                           (developer.ideogram.ai/api-reference/api-reference/generate-v4;
                                           the resolution list and seed are third parties')
  POST /v1/ideogram-v3/generate            multipart or JSON {prompt, aspect_ratio "16x9" |
                                           resolution "1312x736", rendering_speed, magic_prompt,
                                           style_type, negative_prompt, num_images 1-8, seed, ...}
  POST /v1/ideogram-v3/{edit,remix,reframe,replace-background}
                                           multipart: image (+ mask, black = edit) + fields
  POST /generate                           JSON {"image_request": {prompt, model, aspect_ratio
                                           "ASPECT_16_9" | resolution "RESOLUTION_1280_720",
                                           magic_prompt_option, style_type, num_images, ...}}
  POST /edit                               multipart: image_file, mask, prompt, model (V_2, V_2_TURBO)
  POST /remix, /upscale                    multipart: image_request (a JSON string) + image_file
  POST /describe                           multipart: image_file -> {"descriptions": [{"text"}]}
  -> {"created": "<ISO time>", "data": [{url | null, prompt, resolution, is_image_safe, seed,
      style_type}]}; errors 400/401 (remix: 403)/429, 422 {"error": "...safety check..."}
Operations: generate, edit, remix, upscale, describe on every model that has them upstream, and
reframe and replace_background on 3.0 only (see MODEL_OPS); 4.0 only generates, one image a call.
Upscale and describe are legacy endpoints whatever the model. Describe finishes with no images and
meta["descriptions"].
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Callable, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from pixelgate.domain import masks, sizes
from pixelgate.domain.images import EXTENSION, MIME_BY_FORMAT, sniff_format
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.domain.result import Finished, UpstreamImage
from pixelgate.domain.sizes import Size
from pixelgate.errors import (InvalidRequest, UpstreamBadResponse, UpstreamContentFiltered,
                              UpstreamError)
from pixelgate.providers.base import (EDIT, GENERATE, Capabilities, Channel, FilePart, Provider,
                                      UpstreamCall, UpstreamReply, VendorOptions, error_for_status)

REMIX, REFRAME, REPLACE_BACKGROUND = Operation.REMIX, Operation.REFRAME, Operation.REPLACE_BACKGROUND
UPSCALE, DESCRIBE = Operation.UPSCALE, Operation.DESCRIBE

MB = 1024 * 1024
MAX_SEED = 2147483647
V3_RATIOS = ("1x3", "3x1", "1x2", "2x1", "9x16", "16x9", "10x16", "16x10", "2x3", "3x2", "3x4",
             "4x3", "4x5", "5x4", "1x1")
V3_RESOLUTIONS = tuple(
    "512x1536 576x1408 576x1472 576x1536 640x1344 640x1408 640x1472 640x1536 704x1152 704x1216 "
    "704x1280 704x1344 704x1408 704x1472 736x1312 768x1088 768x1216 768x1280 768x1344 800x1280 "
    "832x960 832x1024 832x1088 832x1152 832x1216 832x1248 864x1152 896x960 896x1024 896x1088 "
    "896x1120 896x1152 960x832 960x896 960x1024 960x1088 1024x832 1024x896 1024x960 1024x1024 "
    "1088x768 1088x832 1088x896 1088x960 1120x896 1152x704 1152x832 1152x864 1152x896 1216x704 "
    "1216x768 1216x832 1248x832 1280x704 1280x768 1280x800 1312x736 1344x640 1344x704 1344x768 "
    "1408x576 1408x640 1408x704 1472x576 1472x640 1472x704 1536x512 1536x576 1536x640".split())
# 4.0's "2K resolutions": the vendor's page names the enum, Replicate's and ComfyUI's schemas list it.
V4_RESOLUTIONS = tuple(
    "2048x2048 1440x2880 2880x1440 1664x2496 2496x1664 1792x2240 2240x1792 1440x2560 2560x1440 "
    "1600x2560 2560x1600 1728x2304 2304x1728 1296x3168 3168x1296 1152x2944 2944x1152 1248x3328 "
    "3328x1248 1280x3072 3072x1280".split())
LEGACY_RATIOS = tuple(f"ASPECT_{r}" for r in "10_16 16_10 9_16 16_9 3_2 2_3 4_3 3_4 1_1 1_3 3_1".split())
# The legacy enum is 3.0's list without 800x1280, plus ten sizes 3.0 dropped.
LEGACY_RESOLUTIONS = tuple(f"RESOLUTION_{w}_{h}" for w, h in sorted(
    tuple(map(int, r.split("x"))) for r in {*V3_RESOLUTIONS, "640x1024", "720x1280", "768x1024",
                                            "768x1152", "768x1232", "1024x640", "1024x768", "1152x768",
                                            "1232x768", "1280x720"} - {"800x1280"}))
STYLE_PRESETS = tuple(
    "80S_ILLUSTRATION 90S_NOSTALGIA ABSTRACT_ORGANIC ANALOG_NOSTALGIA ART_BRUT ART_DECO ART_POSTER AURA "
    "AVANT_GARDE BAUHAUS BLUEPRINT BLURRY_MOTION BRIGHT_ART C4D_CARTOON CHILDRENS_BOOK COLLAGE "
    "COLORING_BOOK_I COLORING_BOOK_II CUBISM DARK_AURA DOODLE DOUBLE_EXPOSURE DRAMATIC_CINEMA EDITORIAL "
    "EMOTIONAL_MINIMAL ETHEREAL_PARTY EXPIRED_FILM FLAT_ART FLAT_VECTOR FOREST_REVERIE GEO_MINIMALIST "
    "GLASS_PRISM GOLDEN_HOUR GRAFFITI_I GRAFFITI_II HALFTONE_PRINT HIGH_CONTRAST HIPPIE_ERA ICONIC "
    "JAPANDI_FUSION JAZZY LONG_EXPOSURE MAGAZINE_EDITORIAL MINIMAL_ILLUSTRATION MIXED_MEDIA MONOCHROME "
    "NIGHTLIFE OIL_PAINTING OLD_CARTOONS PAINT_GESTURE POP_ART RETRO_ETCHING RIVIERA_POP SPOTLIGHT_80S "
    "STYLIZED_RED SURREAL_COLLAGE TRAVEL_POSTER VINTAGE_GEO VINTAGE_POSTER WATERCOLOR WEIRD WOODBLOCK_PRINT".split())
SPEED_BY_QUALITY = {"low": "TURBO", "medium": "DEFAULT", "high": "QUALITY"}
# The source document's defaults, sent explicitly where a model takes the field: Ideogram's own
# differ (style_type GENERAL on 3.0; magic prompt chosen by the server).
DEFAULTS = {"rendering_speed": "DEFAULT", "magic_prompt": "AUTO", "style_type": "AUTO"}
V3_IDS = frozenset({"V3", "ideogram-v3", "V_3"})
V4_IDS = frozenset({"V4", "ideogram-v4", "V_4_0"})
V4_PATH = "/v1/ideogram-v4/generate"

# Endpoints by operation name, and the fields each one takes: a field the source documents let
# a client send where the vendor has none (aspect_ratio or negative_prompt on an edit, style_type
# on replace-background) is accepted and left out of the call.
_V3_GEN = frozenset({"prompt", "seed", "aspect_ratio", "resolution", "rendering_speed", "magic_prompt",
                     "negative_prompt", "num_images", "style_type", "style_preset", "color_palette"})
V3_ENDPOINTS: dict[str, tuple[str, frozenset[str]]] = {
    "generate": ("/v1/ideogram-v3/generate", _V3_GEN),
    "remix": ("/v1/ideogram-v3/remix", _V3_GEN | {"image_weight"}),
    "edit": ("/v1/ideogram-v3/edit", frozenset({"prompt", "seed", "rendering_speed", "magic_prompt",
                                                "num_images", "style_type", "style_preset", "color_palette"})),
    "reframe": ("/v1/ideogram-v3/reframe", frozenset({"resolution", "seed", "rendering_speed", "num_images",
                                                      "style_preset", "color_palette"})),
    "replace_background": ("/v1/ideogram-v3/replace-background", frozenset({
        "prompt", "seed", "rendering_speed", "magic_prompt", "num_images", "style_preset", "color_palette"})),
}
_LEGACY_REQ = frozenset({"prompt", "aspect_ratio", "resolution", "model", "magic_prompt_option",
                         "magic_prompt_version", "seed", "style_type", "negative_prompt", "num_images",
                         "color_palette"})
# operation -> (path, fields, how they travel: "json" wrapped in image_request, "wrapped" as an
# image_request JSON string part of a multipart form, "form" as plain parts)
LEGACY_ENDPOINTS: dict[str, tuple[str, frozenset[str], str]] = {
    "generate": ("/generate", _LEGACY_REQ, "json"),
    "remix": ("/remix", _LEGACY_REQ | {"image_weight"}, "wrapped"),
    "edit": ("/edit", frozenset({"prompt", "model", "magic_prompt_option", "num_images", "seed",
                                 "style_type"}), "form"),
    "upscale": ("/upscale", frozenset({"prompt", "resemblance", "detail", "magic_prompt_option",
                                       "magic_prompt_version", "num_images", "seed"}), "wrapped"),
    "describe": ("/describe", frozenset({"describe_model_version"}), "form"),
}


def _ratio_option(allowed: tuple[str, ...]):
    """An aspect_ratio option in any vocabulary (16:9, 16x9, ASPECT_16_9), one the model has."""
    by_ratio = {round(sizes.parse(a).aspect, 4): a for a in allowed}

    def check(value: str) -> str:
        try:
            wanted = sizes.parse(value, "aspect_ratio")
        except InvalidRequest:
            wanted = None
        if wanted is None or wanted.ratio is None or round(wanted.aspect, 4) not in by_ratio:
            raise ValueError(f"'{value}' is not one of {', '.join(allowed)}")
        return by_ratio[round(wanted.aspect, 4)]
    return Annotated[str, AfterValidator(check)]


class _Member(BaseModel):
    model_config = ConfigDict(extra="forbid")
    color_hex: str = Field(pattern=r"^#(?:[0-9a-fA-F]{3}){1,2}$")
    color_weight: float | None = Field(default=None, ge=0.05, le=1.0)


class ColorPalette(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["EMBER", "FRESH", "JUNGLE", "MAGIC", "MELON", "MOSAIC", "PASTEL", "ULTRAMARINE"] | None = None
    members: list[_Member] | None = Field(default=None, min_length=1, max_length=8)

    @model_validator(mode="after")
    def _one_of(self) -> ColorPalette:
        if (self.name is None) == (self.members is None):
            raise ValueError("give either a preset 'name' or 'members', not both or neither")
        return self


Magic = Literal["AUTO", "ON", "OFF"]
Weight = Annotated[int, Field(ge=1, le=100)]


class OperationOptions(VendorOptions):
    """Fields of one operation each (ONLY_FOR), on every model: remix's image_weight, upscale's
    resemblance and detail, describe's describe_model_version."""

    image_weight: Weight | None = None
    resemblance: Weight | None = None
    detail: Weight | None = None
    describe_model_version: Literal["V_2", "V_3"] | None = None


ONLY_FOR = {"image_weight": REMIX, "resemblance": UPSCALE, "detail": UPSCALE, "describe_model_version": DESCRIBE}


class V3Options(OperationOptions):
    rendering_speed: Literal["FLASH", "TURBO", "BALANCED", "DEFAULT", "QUALITY"] | None = None
    magic_prompt: Magic | None = None
    style_type: Literal["AUTO", "GENERAL", "REALISTIC", "DESIGN", "CUSTOM", "FICTION", "STYLIZED"] | None = None
    negative_prompt: str | None = None
    aspect_ratio: _ratio_option(V3_RATIOS) | None = None
    style_preset: Literal[STYLE_PRESETS] | None = None  # type: ignore[valid-type]
    color_palette: ColorPalette | None = None


class V4Options(VendorOptions):
    """4.0's own fields. FLASH is left out: the vendor answers it 400 ("coming soon")."""

    rendering_speed: Literal["TURBO", "DEFAULT", "QUALITY"] | None = None
    json_prompt: dict[str, Any] | None = None
    """The structured prompt, instead of a text prompt (the vendor takes exactly one)."""


class LegacyOptions(OperationOptions):
    """What every legacy model takes; `magic_prompt` is accepted as on 3.0 and sent under the
    legacy name `magic_prompt_option`. The per-model rules (style_type from V_2 on,
    negative_prompt and color_palette not on every model) are which subclass a model gets."""

    magic_prompt: Magic | None = None
    magic_prompt_option: Magic | None = None
    magic_prompt_version: Literal["V_0", "V_0_1", "V_0_2", "V_0_3", "V_0_4", "V_0_5", "V_0_6",
                                  "V_0_7", "V_0_8"] | None = None
    aspect_ratio: _ratio_option(LEGACY_RATIOS) | None = None

    @model_validator(mode="after")
    def _one_name(self) -> LegacyOptions:
        if self.magic_prompt is not None and self.magic_prompt_option is not None:
            raise ValueError("give magic_prompt or magic_prompt_option, not both")
        return self


LegacyStyle = Literal["AUTO", "GENERAL", "FICTION", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME",
                      "CUSTOM", "STYLIZED"]


class V1Options(LegacyOptions):
    negative_prompt: str | None = None


class V2AOptions(LegacyOptions):
    style_type: LegacyStyle | None = None


class V2Options(V1Options, V2AOptions):
    color_palette: ColorPalette | None = None


def _fitter(ratios: tuple[str, ...], resolutions: tuple[str, ...]) -> Callable[[Size], tuple[str, str] | None]:
    """size -> ("aspect_ratio" | "resolution", the vendor's word), by sizes.nearest: a ratio goes
    to the nearest aspect ratio; exact pixels and tiers to the nearest resolution, where the
    model takes resolutions (V_1 takes only aspect ratios)."""
    by_ratio = {a: sizes.parse(a) for a in ratios}
    by_pixels = {r: sizes.parse(r) for r in resolutions}
    shown = ", ".join(sizes.describe(s) for s in by_ratio.values())
    if by_pixels:
        shown += " or one of the resolutions " + ", ".join(s.wxh() for s in by_pixels.values())

    def fit(size: Size) -> tuple[str, str] | None:
        if size.is_auto:
            return None
        field, pool = ("resolution", by_pixels) if by_pixels and size.ratio is None else ("aspect_ratio", by_ratio)
        best = sizes.nearest(size, list(pool.values()), allowed_text=shown)
        return field, next(word for word, s in pool.items() if s is best)
    return fit


def _fit_v4(size: Size) -> tuple[str, str] | None:
    """Any size -> the nearest of 4.0's resolutions (a ratio too: 4.0 takes no aspect_ratio);
    auto -> nothing sent, so the model picks."""
    if size.is_auto:
        return None
    pool = {r: sizes.parse(r) for r in V4_RESOLUTIONS}
    best = sizes.nearest(size, list(pool.values()), allowed_text=", ".join(V4_RESOLUTIONS))
    return "resolution", next(word for word, s in pool.items() if s is best)


def _caps(options: type[VendorOptions], fit: Callable, ops: frozenset[Operation],
          qualities: tuple[str, ...] | None = None) -> Capabilities:
    return Capabilities(
        operations=ops, prompt_required=frozenset({GENERATE, EDIT, REMIX, REPLACE_BACKGROUND}),
        max_n=10, n_per_call=8,
        fit_size=fit, qualities=qualities, output_formats=("png", "jpeg", "webp"), output_compression=True,
        max_images=1, image_formats=("png", "jpeg", "webp"), image_max_bytes=10 * MB,
        image_needs_alpha_without_mask=True, options=options)


# Which model does what: /edit takes only V_2 and V_2_TURBO; reframe and replace-background are
# 3.0 endpoints; /upscale and /describe take no model, so every model offers them.
_LEGACY_OPS = frozenset({GENERATE, REMIX, UPSCALE, DESCRIBE})
MODEL_OPS = {"V3": _LEGACY_OPS | {EDIT, REFRAME, REPLACE_BACKGROUND}, "V_2": _LEGACY_OPS | {EDIT},
             "V_1": _LEGACY_OPS, "V_2A": _LEGACY_OPS}
_V3 = _caps(V3Options, _fitter(V3_RATIOS, V3_RESOLUTIONS), MODEL_OPS["V3"],
            qualities=("low", "medium", "high", "auto"))
_V1 = _caps(V1Options, _fitter(LEGACY_RATIOS, ()), MODEL_OPS["V_1"])
_FIT_LEGACY = _fitter(LEGACY_RATIOS, LEGACY_RESOLUTIONS)
_V2, _V2A = _caps(V2Options, _FIT_LEGACY, MODEL_OPS["V_2"]), _caps(V2AOptions, _FIT_LEGACY, MODEL_OPS["V_2A"])
# 4.0's generate documents no num_images: one image a call, the engine fans out. The prompt is
# checked in _build_v4, since a json_prompt may stand in for it.
_V4 = replace(_caps(V4Options, _fit_v4, frozenset({GENERATE}), qualities=("low", "medium", "high", "auto")),
              prompt_required=frozenset(), n_per_call=1, image_needs_alpha_without_mask=False)


class Ideogram(Provider):
    name = "ideogram"
    default_base_url = "https://api.ideogram.ai"
    # result URLs: https://ideogram.ai/api/images/ephemeral/<id>.png (upstreams/ideogram.md)
    image_hosts = ("ideogram.ai",)
    models = {"V4": _V4, "ideogram-v4": _V4, "V_4_0": _V4, "V3": _V3, "ideogram-v3": _V3, "V_3": _V3,
              "V_1": _V1, "V_1_TURBO": _V1, "V_2": _V2, "V_2_TURBO": _V2, "V_2A": _V2A, "V_2A_TURBO": _V2A}

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        opts = dict(req.extras)
        if req.seed is not None and not 0 <= req.seed <= MAX_SEED:
            raise InvalidRequest(f"Invalid value: {req.seed}. 'seed' must be between 0 and {MAX_SEED}.",
                                 field="seed")
        if req.size is not None and "aspect_ratio" in opts:
            raise InvalidRequest("Give 'size' or 'aspect_ratio', not both.", field="aspect_ratio")
        for name, only in ONLY_FOR.items():
            if name in opts and req.operation is not only:
                raise InvalidRequest(f"'{name}' is only taken by the {only.value} operation.", field=name,
                                     code="unsupported_parameter")
        if model in V4_IDS:
            return self._build_v4(req, opts, channel)
        # upscale and describe are legacy endpoints whatever the model
        v3, caps = model in V3_IDS and req.operation.value in V3_ENDPOINTS, self.models.get(model) or _V3
        if req.style_images and not v3:
            raise InvalidRequest("'style_reference_images' is taken only by the Ideogram 3.0 endpoints.",
                                 field="style_reference_images", code="unsupported_parameter")
        fields: dict[str, Any] = {"prompt": req.prompt, "num_images": req.n, "seed": req.seed}
        fitted = caps.fit_size(sizes.parse(req.size or "auto"))
        if fitted:
            fields[fitted[0]] = fitted[1]
        if "magic_prompt_option" in opts:  # the legacy name, one vocabulary from here on
            opts["magic_prompt"] = opts.pop("magic_prompt_option")
        if req.quality in SPEED_BY_QUALITY:
            opts.setdefault("rendering_speed", SPEED_BY_QUALITY[req.quality])
        taken = caps.options.model_fields if caps.options else {}
        opts = {**{k: v for k, v in DEFAULTS.items() if k in taken}, **opts}
        op, headers, base = req.operation.value, {"Api-Key": channel.api_key or ""}, self.base_url(channel)
        files = _files(req, "image" if v3 else "image_file")
        if v3:
            path, allowed = V3_ENDPOINTS[op]
            body = _pick({**fields, **opts}, allowed)
            if not files and op == "generate":
                # The engine's transport sends a form without files url-encoded, which 3.0 does
                # not take; generate also takes the same fields as JSON.
                return UpstreamCall("POST", base + path, headers, json=body)
            return UpstreamCall("POST", base + path, headers, form=_form(body) + files)
        opts["magic_prompt_option"] = opts.pop("magic_prompt", None)
        path, allowed, how = LEGACY_ENDPOINTS[op]
        body = _pick({**fields, **opts, "model": model}, allowed)
        if how == "json":
            return UpstreamCall("POST", base + path, headers, json={"image_request": body})
        form = [("image_request", orjson.dumps(body).decode())] if how == "wrapped" else _form(body)
        return UpstreamCall("POST", base + path, headers, form=form + files)

    def _build_v4(self, req: ImageRequest, opts: dict[str, Any], channel: Channel) -> UpstreamCall:
        """4.0's generate: text_prompt or json_prompt (exactly one), resolution, rendering_speed,
        seed, as a multipart form (the vendor's documented encoding)."""
        if req.style_images:
            raise InvalidRequest("'style_reference_images' is not taken by Ideogram 4.0.",
                                 field="style_reference_images", code="unsupported_parameter")
        has_text, json_prompt = bool(req.prompt and req.prompt.strip()), opts.pop("json_prompt", None)
        if has_text and json_prompt is not None:
            raise InvalidRequest("Ideogram 4.0 takes a text 'prompt' or a 'json_prompt', not both.",
                                 field="json_prompt")
        if not has_text and json_prompt is None:
            raise InvalidRequest("Ideogram 4.0 needs a text 'prompt' or a 'json_prompt'.", field="prompt",
                                 code="missing_required_parameter")
        if req.quality in SPEED_BY_QUALITY:
            opts.setdefault("rendering_speed", SPEED_BY_QUALITY[req.quality])
        fields: dict[str, Any] = {"text_prompt": req.prompt if has_text else None, "json_prompt": json_prompt,
                                  "seed": req.seed, "rendering_speed": opts.get("rendering_speed", "DEFAULT")}
        fitted = _fit_v4(sizes.parse(req.size or "auto"))
        if fitted:
            fields[fitted[0]] = fitted[1]
        body = {k: v for k, v in fields.items() if v is not None}
        return UpstreamCall("POST", self.base_url(channel) + V4_PATH, {"Api-Key": channel.api_key or ""},
                            form=_form(body))

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished:
        body = reply.json()
        if isinstance(body, dict) and "error" in body and "data" not in body and "descriptions" not in body:
            raise _error(reply.status, body)  # an error inside an HTTP 200
        if req.operation is DESCRIBE:  # {"descriptions": [{"text": ...}]}: text, no images
            found = body.get("descriptions") if isinstance(body, dict) else None
            if not isinstance(found, list) or not found or not all(
                    isinstance(d, dict) and isinstance(d.get("text"), str) for d in found):
                raise UpstreamBadResponse("Ideogram's reply has no 'descriptions' list of texts.")
            return Finished([], {"descriptions": [d["text"] for d in found]})
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise UpstreamBadResponse("Ideogram's reply has no 'data' list of images.")
        images, withheld = [], []
        for item in items:
            if item.get("is_image_safe") is False:  # a per-image safety verdict: no url, no error
                withheld.append({k: item[k] for k in ("prompt", "resolution", "seed", "style_type") if k in item})
                continue
            if not isinstance(item.get("url"), str):
                raise UpstreamBadResponse("Ideogram's reply has a safe image without a url.")
            prompt = item.get("prompt")
            images.append(UpstreamImage(url=item["url"], revised_prompt=prompt if prompt != req.prompt else None,
                                        details={k: item[k] for k in ("seed", "style_type") if k in item}))
        if withheld and not images:
            raise UpstreamContentFiltered(f"Ideogram's safety filter withheld all {len(withheld)} image(s).")
        if withheld:  # the Ideogram surface lists them as Ideogram does (is_image_safe false, url null)
            return Finished(images, {"partial": f"{len(withheld)} of {len(items)} images withheld by Ideogram's "
                                                "safety filter", "withheld": withheld})
        return Finished(images)

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        body = reply.json_or_none()
        return _error(reply.status, body)


def _error(status: int, body: Any) -> UpstreamError:
    detail = body.get("error", body.get("detail", body.get("message"))) if isinstance(body, dict) else None
    message = detail if isinstance(detail, str) else f"Ideogram answered HTTP {status}"
    # 422 with {"error": "..."} is Ideogram's safety refusal; a 422 validation list is not.
    if isinstance(body, dict) and isinstance(body.get("error"), str) and (
            status == 422 or "safety check" in message.lower()):
        return UpstreamContentFiltered(message)
    if status < 400:
        return UpstreamBadResponse(f"Ideogram answered HTTP {status} with an error: {message}")
    return error_for_status(status, message)


def _pick(fields: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k in allowed and v is not None}


def _form(body: dict[str, Any]) -> list[tuple[str, str | FilePart]]:
    return [(k, v if isinstance(v, str) else orjson.dumps(v).decode()) for k, v in body.items()]


def _files(req: ImageRequest, image_field: str) -> list[tuple[str, str | FilePart]]:
    parts: list[tuple[str, str | FilePart]] = [
        (image_field, FilePart(img.data, img.filename or f"image.{EXTENSION[img.format]}", img.mime))
        for img in req.images]
    parts += [("style_reference_images", FilePart(img.data, img.filename or f"style.{EXTENSION[img.format]}",
                                                  img.mime)) for img in req.style_images]
    if req.operation is EDIT:
        # Ideogram: black = edit. Without a mask, the image's transparent pixels are the mask,
        # as OpenAI does (the validator has made sure it has some).
        mask = (masks.convert(req.mask.data, req.mask_convention, "black") if req.mask is not None
                else masks.convert(req.images[0].data, "alpha", "black"))
        fmt = sniff_format(mask)
        parts.append(("mask", FilePart(mask, f"mask.{EXTENSION[fmt]}", MIME_BY_FORMAT[fmt])))
    return parts
