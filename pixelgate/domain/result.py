"""What comes back: images the vendor returned, and what the gateway delivers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class UpstreamImage:
    """One image as a vendor returned it: exactly one of b64, data or url is set."""

    b64: str | memoryview | None = None
    """A memoryview when lifted from the vendor's JSON answer (pixelgate/wirejson.py)."""
    data: bytes | None = None
    url: str | None = None
    revised_prompt: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Vendor facts about this one image that a surface may echo (Ideogram: seed, style_type)."""


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
    meta: dict[str, Any] = field(default_factory=dict)
    """Vendor facts from the submit answer (Midjourney: its result code). `existing`: the vendor
    answered with a job it already had, which a task may already follow."""


@dataclass(slots=True)
class Pending:
    progress: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    """Vendor facts about the running job that a surface shows (Midjourney: status, buttons);
    a task keeps them (Task.meta)."""
    preview: UpstreamImage | None = None
    """A look at the unfinished image, re-hosted by the task poller when it changes."""


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
    b64: str | memoryview | None = None
    """The vendor's own base64 when it needed no conversion: rendered by wirejson, uncopied."""
    revised_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    """Pixel size of the stored image (None if it could not be read)."""
    details: dict[str, Any] = field(default_factory=dict)
    """UpstreamImage.details, passed through."""


@dataclass(slots=True)
class ImageResult:
    request_id: str
    model: str
    images: list[DeliveredImage]
    created: int
    meta: dict[str, Any] = field(default_factory=dict)
