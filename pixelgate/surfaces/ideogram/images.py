"""The images an Ideogram request sends, checked by the document's rules: JPEG, PNG or WebP of at
most 10 MB; a mask black and white only, the image's size, not all white."""

from __future__ import annotations

import asyncio
import io

from PIL import Image
from starlette.datastructures import UploadFile

from pixelgate.domain import masks
from pixelgate.domain.images import InputImage, load_image
from pixelgate.errors import InvalidRequest

MB = 1024 * 1024


async def checked(upload: UploadFile, field: str) -> InputImage:
    image = await load_image(await upload.read(), field, upload.filename)
    if image.format not in ("png", "jpeg", "webp"):
        raise InvalidRequest(f"'{field}' must be a JPEG, PNG or WebP image; got {image.format.upper()}.",
                             field=field, code="invalid_image_format")
    if len(image.data) > 10 * MB:
        raise InvalidRequest(f"'{field}' is larger than 10 MB.", field=field, code="image_too_large")
    return image


async def checked_mask(upload: UploadFile, image: InputImage) -> InputImage:
    """The document's mask rules: black and white only, the image's size, not all white (black
    marks what to edit). Lossy JPEG/WebP masks cannot hold exactly two values, so there near-black
    and near-white count (within 32 levels) and the mask is sent on as a two-tone PNG."""
    mask = await checked(upload, "mask")
    if (mask.width, mask.height) != (image.width, image.height):
        raise InvalidRequest(f"The mask ({mask.width}x{mask.height}) must be the same size as the image "
                             f"({image.width}x{image.height}).", field="mask", code="invalid_image")
    # Decoding, converting and re-encoding a large mask takes tens of milliseconds: in a thread.
    data = await asyncio.to_thread(_two_tone_png, mask)
    return InputImage(data, "png", mask.width, mask.height, False, "mask.png")


def _two_tone_png(mask: InputImage) -> bytes:
    data = mask.data
    if mask.format != "png":
        with Image.open(io.BytesIO(data)) as img:
            grey = img.convert("L")
        if any(count and 32 < level < 223 for level, count in enumerate(grey.histogram())):
            raise InvalidRequest("The mask must contain only black and white pixels.", field="mask")
        out = io.BytesIO()
        grey.point(lambda v: 0 if v < 128 else 255).save(out, "PNG")
        data = out.getvalue()
    masks.check_black_and_white(data, "mask")
    return data


async def checked_style_images(uploads: list[UploadFile]) -> list[InputImage]:
    images = [await checked(u, "style_reference_images") for u in uploads]
    if sum(len(i.data) for i in images) > 10 * MB:
        raise InvalidRequest("'style_reference_images' must total at most 10 MB.", field="style_reference_images")
    return images
