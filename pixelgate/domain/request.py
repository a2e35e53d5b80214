"""ImageRequest: the one internal request that every public API parses into."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pixelgate.domain.images import InputImage
from pixelgate.domain.masks import Convention


class Operation(str, Enum):
    GENERATE = "generate"
    EDIT = "edit"
    VARIATION = "variation"
    REMIX = "remix"
    """Image-to-image guided by a prompt (Ideogram remix; `extras["image_weight"]`)."""
    REFRAME = "reframe"
    """Outpaint an image to a new size (Ideogram 3.0 reframe; `size` is the target)."""
    REPLACE_BACKGROUND = "replace_background"
    """Keep the subject, redraw the background from the prompt."""
    UPSCALE = "upscale"
    """Enlarge an image, redrawing detail (Ideogram: `extras` resemblance, detail)."""
    DESCRIBE = "describe"
    """Text from an image: the result carries `meta["descriptions"]` and no images."""
    BLEND = "blend"
    """Several images (2-5) merged into a new one (Midjourney /blend)."""
    CHANGE = "change"
    """A follow-up on a vendor's finished job: `extras` name the job and what to do to it
    (Midjourney change: UPSCALE / VARIATION / REROLL with an index)."""
    ACTION = "action"
    """A follow-up by button: `extras` name the job and the button (Midjourney customId)."""
    MODAL = "modal"
    """The confirmation a vendor's job waits for (Midjourney remix prompt, custom zoom, region mask)."""


FOLLOW_UPS = frozenset({Operation.CHANGE, Operation.ACTION, Operation.MODAL})
"""Operations on an earlier upstream job: they take no input images, and must reach the channel
that holds the job (`ImageRequest.channel`)."""


class Delivery(str, Enum):
    URL = "url"
    B64 = "b64_json"


@dataclass(slots=True)
class ImageRequest:
    operation: Operation
    model: str
    prompt: str | None = None
    n: int = 1
    size: str | None = None
    """As the client wrote it; checked against the model's capabilities by the engine."""
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    input_fidelity: str | None = None
    seed: int | None = None
    user: str | None = None
    images: list[InputImage] = field(default_factory=list)
    mask: InputImage | None = None
    style_images: list[InputImage] = field(default_factory=list)
    """Style reference images (Ideogram 3.0's style_reference_images). Only the ideogram provider
    reads them; the one surface that sets them routes to Ideogram channels only."""
    mask_convention: Convention = "alpha"
    """How `mask` marks the area to edit, as the client's API defines it (see domain.masks)."""
    delivery: Delivery | None = None
    """url or b64_json; None: the model's default (the engine decides)."""
    stream: bool = False
    partial_images: int | None = None
    provider: str | None = None
    """Prefer channels of this provider (the vendor segment of a predictions model path)."""
    channel: str | None = None
    """Only this channel may serve the request: a follow-up (FOLLOW_UPS) on an upstream job goes
    where the job is."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Vendor-only fields, validated against the model's Options before any upstream call."""
    deliver_size: tuple[int, int] | None = None
    """Pixels to deliver when the model that makes the images cannot make the size the client
    asked for (a retired model's successor: dall-e-2's 256x256 is made at 1024x1024 and scaled)."""
