"""What one model can do (Capabilities, with the vendor-only fields it takes): data that each
provider declares and that the domain's validator checks every request against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pydantic import BaseModel, ConfigDict

from pixelgate.domain.request import Delivery, Operation
from pixelgate.domain.sizes import Size


class VendorOptions(BaseModel):
    """Base for a model's vendor-only fields; unknown fields are refused, never dropped."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Capabilities:
    """What one model can do. The engine's validator is the only consumer; a provider never
    checks these itself."""

    operations: frozenset[Operation]
    """Operations the model performs; any other is a 400 naming `model`."""
    max_prompt: int | None = None
    """Longest prompt in characters; None for no limit."""
    prompt_required: frozenset[Operation] = frozenset({Operation.GENERATE, Operation.EDIT})
    """Operations whose prompt may not be empty."""
    check_prompt: Callable[[str], None] | None = None
    """The vendor's own prompt syntax (Midjourney's `--v 7 --q 2`), checked on every API; raises
    InvalidRequest naming `prompt`. None: the prompt is plain text."""
    max_n: int = 10
    """Most images one request may ask for."""
    surface_max_n: Mapping[str, int] = field(default_factory=dict)
    """A stricter `max_n` on one public API, where its documents say so (dall-e-3: n=1 on the
    OpenAI API, while the predictions API fans out up to `max_n`)."""
    n_option: str | None = None
    """A vendor option that also sets n (Imagen's numberOfImages); a different explicit n is a
    400 naming it."""
    n_per_call: int | None = None
    """Most images one upstream call makes; the engine fans out concurrent calls above it
    (None: max_n)."""
    fit_size: Callable[[Size], Any] | None = None
    """Maps any parsed size to what the vendor can make (nearest match) or raises
    InvalidRequest; used when `sizes` is None. None accepts any WxH up to `max_side`."""
    sizes: tuple[str, ...] | None = None
    """Allowed `size` values; None accepts any WxH within `max_side`."""
    sizes_by_operation: Mapping[Operation, tuple[str, ...]] = field(default_factory=dict)
    """Overrides `sizes` for one operation."""
    max_side: int = 4096
    qualities: tuple[str, ...] | None = None
    """Allowed `quality` values; None means the field is not accepted."""
    styles: tuple[str, ...] | None = None
    backgrounds: tuple[str, ...] | None = None
    output_formats: tuple[str, ...] | None = None
    output_compression: bool = False
    moderation: tuple[str, ...] | None = None
    input_fidelity: tuple[str, ...] | None = None
    """Allowed `input_fidelity` values (edits only); None means not accepted."""
    stream: bool = False
    max_images: int = 1
    """Most input images an edit takes."""
    image_formats: tuple[str, ...] = ("png",)
    image_max_bytes: int = 4 * 1024 * 1024
    square_images: bool = False
    """Input images (and so masks) must be square."""
    image_needs_alpha_without_mask: bool = False
    """dall-e-2: an edit without a mask uses the image's own transparency as the mask."""
    max_concurrent_calls: int | None = None
    """Most upstream calls of one fan-out in flight at once (BFL caps active jobs per key)."""
    default_delivery: Delivery = Delivery.URL
    """How images are delivered when the client does not say (response_format)."""
    surface_delivery: Mapping[str, Delivery] = field(default_factory=dict)
    """The same, where a surface's own vendor has another default (OpenAI: GPT image models
    always answer base64, and clients read b64_json)."""
    asynchronous: bool = False
    """The vendor answers with a job to poll; the predictions API then answers at once with a
    task instead of waiting."""
    options: type[VendorOptions] | None = None
    """Vendor-only fields the model takes (request.extras); None takes none."""
