"""Mask conventions, converted into each other as a target needs.

  "alpha"  OpenAI: fully transparent pixels (alpha 0) mark what to edit; opaque pixels are kept
  "black"  Ideogram: black marks what to edit, white what to keep
  "white"  BFL Fill, Baidu iRAG edit: white marks what to edit, black what to keep

Every mask is reduced to one "edit region" (L mode, 255 = edit) and rendered from it.
"""

from __future__ import annotations

import io
from typing import Literal

from PIL import Image, ImageOps

from pixelgate.errors import InvalidRequest

Convention = Literal["alpha", "black", "white"]


def edit_region(data: bytes, convention: Convention) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    if convention == "alpha":
        alpha = img.convert("RGBA").getchannel("A")
        return alpha.point(lambda a: 255 if a == 0 else 0)
    grey = img.convert("L")
    region = grey.point(lambda v: 255 if v < 128 else 0)  # dark pixels
    return region if convention == "black" else ImageOps.invert(region)


def render(region: Image.Image, convention: Convention) -> bytes:
    if convention == "alpha":
        out = Image.new("RGBA", region.size, (0, 0, 0, 255))
        out.putalpha(ImageOps.invert(region))
    elif convention == "black":
        out = ImageOps.invert(region).convert("L")
    else:
        out = region.convert("L")
    buf = io.BytesIO()
    out.save(buf, "PNG")
    return buf.getvalue()


def convert(data: bytes, source: Convention, target: Convention) -> bytes:
    if source == target:
        return data
    return render(edit_region(data, source), target)


def check_black_and_white(data: bytes, field: str = "mask") -> None:
    """Ideogram's rule for its own masks: only black and white, and not all white (nothing to edit)."""
    grey = Image.open(io.BytesIO(data)).convert("L")
    lo, hi = grey.getextrema()
    colours = {v for v, count in enumerate(grey.histogram()) if count}
    if colours - {0, 255}:
        raise InvalidRequest("The mask must contain only black and white pixels.", field=field)
    if lo == 255 and hi == 255:
        raise InvalidRequest("The mask is all white: it marks nothing to edit.", field=field)
