"""Stability AI's v2beta endpoints as data: each one's path and the vendor fields it takes, read by
the adapter (providers/stability.py: its models, their options and the forms it sends) and by
Stability's own API here (surfaces/stability.py: the fields each of its routes takes).

Upstream (platform.stability.ai/docs/api-reference, as recorded; every body multipart/form-data):
  POST /v2beta/stable-image/generate/ultra   prompt, negative_prompt, aspect_ratio, seed, output_format,
                                             image + strength (image-to-image)
  POST /v2beta/stable-image/generate/core    prompt, negative_prompt, aspect_ratio, seed, output_format,
                                             style_preset
  POST /v2beta/stable-image/generate/sd3     prompt, model (sd3.5-large | -large-turbo | -medium |
                                             sd3.5-flash), mode text-to-image (aspect_ratio) |
                                             image-to-image (image, strength), negative_prompt, cfg_scale,
                                             seed, output_format (jpeg | png)
  POST /v2beta/stable-image/edit/{inpaint, outpaint, search-and-replace, search-and-recolor,
                                  remove-background, erase}      image (+ mask: white = edit) + fields
  POST /v2beta/stable-image/upscale/{fast, conservative}         image (+ prompt, creativity)
  POST /v2beta/stable-image/upscale/creative                     -> {"id"} (a job: providers/stability.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, create_model

from pixelgate.providers.base import VendorOptions

MAX_SEED = 4294967294
RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
STYLE_PRESETS = ("3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance",
                 "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami",
                 "photographic", "pixel-art", "tile-texture")
SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash")
ULTRA, CORE = "stable-image-ultra", "stable-image-core"
GENERATE_PATH = "/v2beta/stable-image/generate/"

# The vendor's fields, as (type, pydantic Field) for the options models; creativity's range is
# each endpoint's own (Endpoint.creativity).
_TEXT = (str | None, Field(default=None, min_length=1, max_length=10000))
_PIXELS = (int | None, Field(default=None, ge=0, le=2000))
FIELDS: dict[str, tuple[Any, Any]] = {
    "negative_prompt": (str | None, Field(default=None, max_length=10000)),
    "aspect_ratio": (Literal[RATIOS] | None, None),  # type: ignore[valid-type]
    "style_preset": (Literal[STYLE_PRESETS] | None, None),  # type: ignore[valid-type]
    "strength": (float | None, Field(default=None, ge=0, le=1)),
    "cfg_scale": (float | None, Field(default=None, ge=1, le=10)),
    "grow_mask": (int | None, Field(default=None, ge=0, le=20)),
    "search_prompt": _TEXT, "select_prompt": _TEXT,
    "left": _PIXELS, "right": _PIXELS, "up": _PIXELS, "down": _PIXELS,
}


@dataclass(frozen=True)
class Endpoint:
    path: str
    fields: tuple[str, ...]
    """Vendor fields taken besides prompt, seed, output_format, image and mask."""
    prompt: Literal["required", "optional", "none"] = "required"
    required: tuple[str, ...] = ()
    creativity: tuple[float, float] | None = None
    mask: bool = False
    formats: tuple[str, ...] = ("png", "jpeg", "webp")
    """output_format values the endpoint takes (the engine converts to any other)."""
    seed: bool = True
    asynchronous: bool = False


_EDIT, _UPSCALE = "/v2beta/stable-image/edit/", "/v2beta/stable-image/upscale/"
_SEARCH = ("negative_prompt", "grow_mask", "style_preset")
OPERATION_MODELS: dict[str, Endpoint] = {
    "stability-inpaint": Endpoint(_EDIT + "inpaint", _SEARCH, mask=True),
    "stability-outpaint": Endpoint(_EDIT + "outpaint", ("left", "right", "up", "down", "style_preset"),
                                   "optional", creativity=(0, 1)),
    "stability-search-and-replace": Endpoint(_EDIT + "search-and-replace", ("search_prompt", *_SEARCH),
                                             required=("search_prompt",)),
    "stability-search-and-recolor": Endpoint(_EDIT + "search-and-recolor", ("select_prompt", *_SEARCH),
                                             required=("select_prompt",)),
    "stability-remove-background": Endpoint(_EDIT + "remove-background", (), "none", formats=("png", "webp"),
                                            seed=False),
    "stability-erase": Endpoint(_EDIT + "erase", ("grow_mask",), "none", mask=True),
    "stability-upscale-fast": Endpoint(_UPSCALE + "fast", (), "none", seed=False),
    "stability-upscale-conservative": Endpoint(_UPSCALE + "conservative", ("negative_prompt",),
                                               creativity=(0.2, 0.5)),
    "stability-upscale-creative": Endpoint(_UPSCALE + "creative", ("negative_prompt", "style_preset"),
                                           creativity=(0.1, 0.5), asynchronous=True),
}
GENERATORS: dict[str, Endpoint] = {
    ULTRA: Endpoint(GENERATE_PATH + "ultra", ("negative_prompt", "aspect_ratio", "strength")),
    CORE: Endpoint(GENERATE_PATH + "core", ("negative_prompt", "aspect_ratio", "style_preset")),
    **{m: Endpoint(GENERATE_PATH + "sd3", ("negative_prompt", "aspect_ratio", "strength", "cfg_scale"),
                   formats=("png", "jpeg")) for m in SD3_MODELS},
}
INPAINT = OPERATION_MODELS["stability-inpaint"]
ENDPOINTS = {**GENERATORS, **OPERATION_MODELS}


def options_model(model: str, endpoint: Endpoint) -> type[VendorOptions]:
    """The endpoint's vendor fields as the model's options (Capabilities.options), which check them."""
    fields = {name: FIELDS[name] for name in endpoint.fields}
    if endpoint.creativity:
        lo, hi = endpoint.creativity
        fields["creativity"] = (float | None, Field(default=None, ge=lo, le=hi))
    name = "".join(part.capitalize() for part in model.replace(".", "-").split("-")) + "Options"
    return create_model(name, __base__=VendorOptions, **fields)  # type: ignore[call-overload]
