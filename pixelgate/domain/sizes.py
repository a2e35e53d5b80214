"""Every size vocabulary of the source documents and vendors, parsed into one Size and
rendered back into each target's own words.

  1024x1024, 1024*1024, 1024×1024      exact pixels
  1K, 2K, 4K                           a resolution tier (about 1, 4 and 16 megapixels)
  auto                                 the model decides
  16:9, 16x9, ASPECT_16_9, --ar 16:9   an aspect ratio ("16x9" is one when it is one of Ideogram's
                                       15 ratios; any other WxH, even 7x7, is pixels)
  16:9@2K                              an aspect ratio at a tier (OpenRouter's image_config gives both)
  RESOLUTION_1280_720                  Ideogram legacy exact pixels

Nearest match (when a target cannot make the exact size): the allowed option whose aspect ratio
is closest on a logarithmic scale (so 2:1 and 1:2 are equally far from 1:1), then, among equal
ratios, the one whose area is closest. A request is refused only when nothing is within
`MAX_RATIO_DISTANCE` (a factor of 1.5 in aspect ratio) of what was asked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pixelgate.errors import InvalidRequest

TIER_PIXELS = {"1K": 1024 * 1024, "2K": 2048 * 2048, "4K": 4096 * 4096}
MAX_RATIO_DISTANCE = math.log(1.5)

_PIXELS = re.compile(r"^\s*(\d{1,5})\s*[x*×X]\s*(\d{1,5})\s*$")
_RATIO = re.compile(r"^\s*(?:--ar\s+)?(\d{1,3})\s*[:]\s*(\d{1,3})\s*$")
_ASPECT = re.compile(r"^ASPECT_(\d{1,2})_(\d{1,2})$")
IDEOGRAM_RATIOS = frozenset({(1, 3), (3, 1), (1, 2), (2, 1), (9, 16), (16, 9), (10, 16), (16, 10), (2, 3), (3, 2),
                             (3, 4), (4, 3), (4, 5), (5, 4), (1, 1)})
"""The ratios Ideogram writes as `16x9`: the only WxH that is not pixels."""
_RESOLUTION = re.compile(r"^RESOLUTION_(\d{3,4})_(\d{3,4})$")


@dataclass(frozen=True, slots=True)
class Size:
    """Exact pixels, or an aspect ratio, or a tier, or (all empty) auto."""

    width: int | None = None
    height: int | None = None
    ratio: tuple[int, int] | None = None
    tier: str | None = None

    @property
    def is_auto(self) -> bool:
        return self.width is None and self.ratio is None and self.tier is None

    @property
    def aspect(self) -> float:
        if self.width and self.height:
            return self.width / self.height
        if self.ratio:
            return self.ratio[0] / self.ratio[1]
        return 1.0

    @property
    def area(self) -> int | None:
        if self.width and self.height:
            return self.width * self.height
        return TIER_PIXELS.get(self.tier or "")

    def wxh(self, sep: str = "x") -> str:
        return f"{self.width}{sep}{self.height}"

    def colon(self) -> str:
        w, h = self.ratio or _reduce(self.width or 1, self.height or 1)
        return f"{w}:{h}"


def _reduce(w: int, h: int) -> tuple[int, int]:
    g = math.gcd(w, h) or 1
    return w // g, h // g


def parse(text: str, field: str = "size") -> Size:
    """Parse any known vocabulary, or raise InvalidRequest naming `field`."""
    value = text.strip()
    if value.lower() == "auto" or value == "":
        return Size()
    if value.upper() in TIER_PIXELS:
        return Size(tier=value.upper())
    ratio, at, tier = value.partition("@")
    if at and tier.strip().upper() in TIER_PIXELS and (m := _RATIO.match(ratio)) and int(m.group(1)) * int(m.group(2)):
        return Size(ratio=(int(m.group(1)), int(m.group(2))), tier=tier.strip().upper())
    for pattern in (_ASPECT, _RATIO):
        if m := pattern.match(value):
            w, h = int(m.group(1)), int(m.group(2))
            if w and h:
                return Size(ratio=(w, h))
    if m := _RESOLUTION.match(value):
        return Size(width=int(m.group(1)), height=int(m.group(2)))
    if m := _PIXELS.match(value):
        w, h = int(m.group(1)), int(m.group(2))
        if w and h:
            if (w, h) in IDEOGRAM_RATIOS and "x" in value.lower():
                return Size(ratio=(w, h))  # Ideogram's "16x9"
            return Size(width=w, height=h)
    raise InvalidRequest(f"Invalid value: '{text}'. '{field}' takes WIDTHxHEIGHT (e.g. 1024x1024), "
                         "WIDTH*HEIGHT, an aspect ratio (16:9), 1K/2K/4K or auto.", field=field)


def distance(a: Size, b: Size) -> tuple[float, float]:
    """How far b is from a: aspect ratio first (log scale), then area."""
    ratio = abs(math.log(a.aspect) - math.log(b.aspect))
    area_a, area_b = a.area, b.area
    area = abs(math.log(area_a) - math.log(area_b)) if area_a and area_b else 0.0
    return round(ratio, 6), area


def nearest(wanted: Size, options: list[Size], field: str = "size", allowed_text: str | None = None) -> Size:
    """The option closest to `wanted` by the rule in this module's docstring."""
    best = min(options, key=lambda o: distance(wanted, o))
    if not wanted.is_auto and distance(wanted, best)[0] > MAX_RATIO_DISTANCE:
        shown = allowed_text or ", ".join(o.colon() if o.ratio else o.wxh() for o in options)
        raise InvalidRequest(f"No size near '{describe(wanted)}' is possible for this model. "
                             f"Allowed: {shown}.", field=field)
    return best


def tier_of(width: int, height: int) -> str:
    """The resolution tier exact pixels bill as (prices by tier, and vendors that take a tier)."""
    area = width * height
    return "1K" if area <= 1_600_000 else "2K" if area <= 6_000_000 else "4K"


def describe(size: Size) -> str:
    if size.is_auto:
        return "auto"
    if size.width:
        return size.wxh()
    if size.ratio:
        return size.colon() + (f"@{size.tier}" if size.tier else "")
    return size.tier or "auto"


def pixels_for(size: Size, default_area: int, multiple: int = 16, min_side: int = 64,
               max_side: int = 4096) -> tuple[int, int]:
    """Concrete WxH for any Size: exact sizes are kept (rounded to `multiple`); ratios and tiers
    get the area of their tier (or `default_area`) at their aspect ratio."""
    if size.width and size.height:
        w, h = size.width, size.height
    else:
        area = size.area or default_area
        w = math.sqrt(area * size.aspect)
        h = w / size.aspect
    def snap(v: float) -> int:
        return int(min(max_side, max(min_side, round(v / multiple) * multiple)))
    return snap(w), snap(h)
