"""Images coming in (decoded and checked once) and image bytes helpers."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from PIL import Image

from pixelgate.errors import InvalidRequest

# Pillow format name -> (our short name, MIME type)
FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpeg", "image/jpeg"),
           "WEBP": ("webp", "image/webp"), "GIF": ("gif", "image/gif")}
MIME_BY_FORMAT = {short: mime for short, mime in FORMATS.values()}
EXTENSION = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif"}

MAX_PIXELS = 64_000_000
"""Decompression-bomb guard: larger images are refused before they are decoded."""
INLINE_DECODE_BYTES = 64 * 1024
"""Smaller images are decoded on the event loop (microseconds); larger ones in a thread."""
INLINE_DECODE_PIXELS = 256 * 256
"""...unless they have more pixels than this: decoding costs by the pixel, and a flat 4096x4096
PNG is 50 KB that take a few hundred milliseconds to decode or convert."""


@dataclass(slots=True)
class InputImage:
    data: bytes
    format: str
    width: int
    height: int
    has_alpha: bool
    filename: str | None = None

    @property
    def mime(self) -> str:
        return MIME_BY_FORMAT[self.format]


def read_image(data: bytes, field: str, filename: str | None = None, *, decode: bool = False) -> InputImage:
    """Identify an uploaded image from its header or raise InvalidRequest naming `field`. With
    `decode`, the pixels are decoded too, so a truncated or corrupt file is refused here and not
    by whatever converts it later (where Pillow's OSError once read as a broken connection)."""
    if not data:
        raise InvalidRequest(f"'{field}' is empty.", field=field)
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            width, height = img.size
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            if fmt in FORMATS and width * height <= MAX_PIXELS and decode:
                img.load()  # every frame's first: enough to prove the data is whole
    except Exception:  # Pillow raises a zoo of types for undecodable input
        raise InvalidRequest(f"'{field}' is not a valid image (PNG, JPEG, WEBP or GIF), or it is truncated.",
                             field=field) from None
    if fmt not in FORMATS:
        raise InvalidRequest(f"'{field}' has unsupported format {fmt or 'unknown'}.", field=field)
    if width * height > MAX_PIXELS:
        raise InvalidRequest(f"'{field}' is too large: {width}x{height} pixels.", field=field)
    return InputImage(data=data, format=FORMATS[fmt][0], width=width, height=height,
                      has_alpha=has_alpha, filename=filename)


async def load_image(data: bytes, field: str, filename: str | None = None) -> InputImage:
    """read_image with a full decode, off the event loop for all but tiny images: decoding a
    4K PNG takes tens of milliseconds that every other request would wait for."""
    if len(data) <= INLINE_DECODE_BYTES and pixels(data) <= INLINE_DECODE_PIXELS:
        return read_image(data, field, filename, decode=True)
    return await asyncio.to_thread(read_image, data, field, filename, decode=True)


def pixels(data: bytes) -> int:
    """Width times height from the image header (no decode); 0 if there is none to read."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            return width * height
    except Exception:  # Pillow raises assorted types for bytes it cannot read
        return 0


def sniff_format(data: bytes) -> str:
    """Image format from magic bytes; vendors do not always say what they sent."""
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:3] == b"GIF":
        return "gif"
    return "png"


def sniff_mime(data: bytes) -> str:
    """The Content-Type a store keeps with the bytes."""
    return MIME_BY_FORMAT[sniff_format(data)]


def convert_format(data: bytes, fmt: str, compression: int | None = None,
                   size: tuple[int, int] | None = None) -> bytes:
    """Re-encode an image as `fmt` (png, jpeg or webp) when the vendor could not make it, scaled
    to `size` when the vendor could not make that either."""
    with Image.open(io.BytesIO(data)) as img:
        if size is not None and img.size != size:
            img = img.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if fmt == "jpeg":
            img.convert("RGB").save(out, "JPEG", quality=compression or 90)
        elif fmt == "webp":
            img.save(out, "WEBP", quality=compression or 90)
        else:
            img.save(out, "PNG")
        return out.getvalue()
