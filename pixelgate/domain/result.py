"""What comes back: images the vendor returned, and what the gateway delivers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class UpstreamImage:
    """One image as a vendor returned it: exactly one of b64, data or url is set."""

    b64: str | None = None
    data: bytes | None = None
    url: str | None = None
    revised_prompt: str | None = None


@dataclass(slots=True)
class Finished:
    images: list[UpstreamImage]
    meta: dict[str, Any] = field(default_factory=dict)
    """Vendor facts worth echoing (OpenAI: background, output_format, quality, size, usage)."""


@dataclass(slots=True)
class Submitted:
    """The vendor accepted a job and will finish it later: from here on it is pinned to its
    channel, because resubmitting elsewhere would be paid twice."""

    job_id: str
    poll_url: str | None = None


@dataclass(slots=True)
class Pending:
    progress: float | None = None


@dataclass(slots=True)
class StreamPartial:
    """A preview of an image that is still being made (OpenAI partial_image)."""

    b64: str
    index: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DeliveredImage:
    """An image stored by the gateway, ready to hand to the client."""

    id: str
    format: str
    url: str | None = None
    b64: str | None = None
    revised_prompt: str | None = None


@dataclass(slots=True)
class ImageResult:
    request_id: str
    model: str
    images: list[DeliveredImage]
    created: int
    meta: dict[str, Any] = field(default_factory=dict)
