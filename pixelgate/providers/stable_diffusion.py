"""What the self-hosted Stable Diffusion servers (comfyui, automatic1111) share: the model names
are the operator's, so every one of them is served with the same generic capabilities, and the
same few Stable Diffusion settings ride along as vendor fields."""

from __future__ import annotations

import secrets

from pydantic import Field

from pixelgate.domain import sizes
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.domain.sizes import Size
from pixelgate.errors import InvalidRequest
from pixelgate.providers.base import EDIT, GENERATE, Capabilities, VendorOptions

MB = 1024 * 1024
MIN_SIDE, MAX_SIDE = 64, 4096
DEFAULTS = {"negative_prompt": "", "steps": 20, "cfg_scale": 7.0, "sampler_name": "euler",
            "denoising_strength": 0.75}
"""What a request that does not say gets (denoising_strength: for edits; generations use 1)."""


class StableDiffusionOptions(VendorOptions):
    negative_prompt: str | None = Field(default=None, max_length=10_000)
    steps: int | None = Field(default=None, ge=1, le=150)
    cfg_scale: float | None = Field(default=None, ge=0, le=30)
    sampler_name: str | None = Field(default=None, min_length=1, max_length=64)
    denoising_strength: float | None = Field(default=None, ge=0, le=1)
    """How much of an edited image is redrawn (0: none, 1: all)."""


def fit(size: Size, field: str = "size") -> tuple[int, int]:
    """Exact pixels in multiples of 8 (latents are an eighth of the image); ratios and tiers at
    their area, 1 MP when none (SDXL's native size)."""
    if size.width and not all(MIN_SIDE <= side <= MAX_SIDE for side in (size.width, size.height or 0)):
        raise InvalidRequest(f"Invalid value: '{size.wxh()}'. Each side must be between {MIN_SIDE} and "
                             f"{MAX_SIDE}.", field=field)
    return sizes.pixels_for(size, MB, multiple=8, min_side=MIN_SIDE, max_side=MAX_SIDE)


CAPABILITIES = Capabilities(
    operations=frozenset({GENERATE, EDIT}), max_n=8, fit_size=fit,
    output_formats=("png", "jpeg", "webp"),  # made as PNG, converted by the engine
    max_images=1, image_formats=("png", "jpeg", "webp"), image_max_bytes=20 * MB,
    options=StableDiffusionOptions)


def dimensions(req: ImageRequest) -> tuple[int, int]:
    """The size asked; without one an edit keeps its image's size (to a multiple of 8), and a
    generation is 1024x1024."""
    if req.size and not (wanted := sizes.parse(req.size)).is_auto:
        return fit(wanted)
    if req.images and req.operation is not Operation.GENERATE:
        return fit(Size(width=req.images[0].width, height=req.images[0].height))
    return 1024, 1024


def setting(req: ImageRequest, name: str):
    """A Stable Diffusion setting: the client's, else the default."""
    value = req.extras.get(name)
    if value is not None:
        return value
    if name == "denoising_strength" and not req.images:
        return 1.0
    return DEFAULTS[name]


def seed(req: ImageRequest) -> int:
    """The client's seed; a random one for none or a negative one (so it can be reported)."""
    return req.seed if req.seed is not None and req.seed >= 0 else secrets.randbelow(2**32)
