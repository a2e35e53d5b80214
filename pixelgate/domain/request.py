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
    mask_convention: Convention = "alpha"
    """How `mask` marks the area to edit, as the client's API defines it (see domain.masks)."""
    delivery: Delivery | None = None
    """url or b64_json; None: the model's default (the engine decides)."""
    stream: bool = False
    partial_images: int | None = None
    provider: str | None = None
    """Prefer channels of this provider (the vendor segment of a predictions model path)."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Vendor-only fields, validated against the model's Options before any upstream call."""
