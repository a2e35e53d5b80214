"""The provider interface: what every vendor module implements.

A provider is capabilities (data) + a request builder + reply parsers, with no I/O of its own.
The engine owns the HTTP client, timeouts, failover, polling, storage and the request log;
a vendor module only translates between ImageRequest and the vendor's wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import orjson
from pydantic import BaseModel, ConfigDict

from pixelgate import wirejson
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.sizes import Size
from pixelgate.domain.result import Finished, Pending, StreamPartial, Submitted
from pixelgate.errors import (UpstreamBadResponse, UpstreamError, UpstreamRateLimited,
                              UpstreamRejected, UpstreamUnavailable)

GENERATE, EDIT, VARIATION = Operation.GENERATE, Operation.EDIT, Operation.VARIATION


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
    prompt_required: frozenset[Operation] = frozenset({GENERATE, EDIT})
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


@dataclass(slots=True)
class FilePart:
    data: bytes
    filename: str
    content_type: str


@dataclass(slots=True)
class UpstreamCall:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    form: list[tuple[str, str | FilePart]] | None = None
    stream: bool = False
    listen: "Listen | None" = None
    """A websocket to read JSON messages from instead of a request (ComfyUI's progress)."""
    content: bytes | None = None
    """The body as bytes, sent as they are (headers name their type): what a signature covers."""


@dataclass(slots=True)
class Listen:
    """How long to listen on a websocket: until `enough` says so of a message, or `seconds`.
    The reply's payload is the list of messages read."""

    seconds: float
    enough: Callable[[Any], bool]


@dataclass(slots=True)
class UpstreamReply:
    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    payload: Any = None
    """Already-decoded body, for in-process transports that need no serialization."""
    url: str = ""
    """The URL called (set by the engine), for answers that name files relative to it."""

    def json_or_none(self) -> Any:
        """The body as JSON, or None when it is not JSON (error replies often are not)."""
        try:
            return self.json()
        except UpstreamBadResponse:
            return None

    def json(self, lift: tuple[str, ...] = ()) -> Any:
        """The body as JSON; long base64 values of the keys in `lift` come as memoryviews of the
        body, neither parsed nor copied (see pixelgate/wirejson.py)."""
        if self.payload is not None:
            return self.payload
        try:
            return wirejson.loads(self.body, lift)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse(
                f"upstream answered HTTP {self.status} with a body that is not JSON") from None


@dataclass(slots=True)
class Channel:
    """A configured upstream as the engine sees it (no secrets are ever logged from here)."""

    name: str
    provider: str
    base_url: str | None
    api_key: str | None
    models: tuple[str, ...]
    model_map: Mapping[str, str]
    priority: int = 0
    weight: int = 1
    timeout: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    """The provider's own channel settings (Provider.channel_options), already checked."""

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)


class Provider:
    """Base class. Subclasses set the class attributes and implement build/parse."""

    name: ClassVar[str]
    models: ClassVar[dict[str, Capabilities]] = {}
    """Models this vendor defines, with their capabilities (the catalog reads this)."""
    generic: ClassVar[Capabilities | None] = None
    """Capabilities for a model name the provider does not know (e.g. any model behind an
    OpenAI-compatible gateway); None refuses unknown names."""
    transport: ClassVar[str] = "http"
    """Which engine transport carries its calls: "http", or "sandbox" for the in-process one."""
    channel_options: ClassVar[type[BaseModel] | None] = None
    """A pydantic model of the settings a channel of this provider takes beyond base_url and
    api_key (ChannelConfig.options); None takes none."""
    credentials: ClassVar[str | None] = None
    """A credential scheme of services/cloud_auth.py that the engine applies to every built call
    (a token exchanged for an access token, a request signature): I/O a pure provider cannot do.
    None: the call goes as built."""
    needs_base_url: ClassVar[bool] = False
    key_required: ClassVar[bool] = True
    """False where the upstream may run without a key (a self-hosted server on a private network)."""
    default_base_url: ClassVar[str | None] = None
    cancellable: ClassVar[bool] = False
    """Whether an accepted job may be canceled (tasks API); the vendor must allow it, and
    `build_cancel` says how to tell it."""
    timeout: ClassVar[float] = 120.0
    """Seconds one upstream call may take; image models are slow. A channel may override."""
    image_hosts: ClassVar[tuple[str, ...]] = ()
    """Where the vendor's image URLs may point besides the channel's own origin: its delivery
    hosts, as shell patterns (`*` any run of characters). The engine downloads a vendor's image
    from nowhere else (and the operator's `upstream_image_hosts`), so an answer cannot make the
    gateway read another service; these hosts must also be public."""

    def base_url(self, channel: Channel) -> str:
        return (channel.base_url or self.default_base_url or "").rstrip("/")

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        raise NotImplementedError

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Submitted:
        raise NotImplementedError

    def build_poll(self, job: Submitted, channel: Channel) -> UpstreamCall:
        raise NotImplementedError(f"{self.name} has no asynchronous jobs")

    def parse_poll(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Pending:
        raise NotImplementedError(f"{self.name} has no asynchronous jobs")

    def build_uploads(self, req: ImageRequest, model: str, channel: Channel) -> list[UpstreamCall]:
        """Calls the engine makes, each to succeed, before `build`'s (a self-hosted server's input
        images uploaded first). `build` names what they made without reading their replies, so
        the names must be fixed in advance (a content hash)."""
        return []

    def build_progress(self, job: Submitted, channel: Channel) -> UpstreamCall | None:
        """A second look at a running job whose poll told no progress (ComfyUI's websocket);
        asked by the task poller only. None: the poll says all there is."""
        return None

    def parse_progress(self, job: Submitted, reply: UpstreamReply) -> float | None:
        return None

    def build_cancel(self, job: Submitted, channel: Channel) -> UpstreamCall | None:
        """The call that cancels an accepted job; None when there is nothing to tell the vendor."""
        return None

    def parse_stream_event(self, req: ImageRequest, event: str,
                           data: Any) -> StreamPartial | Finished | None:
        raise NotImplementedError(f"{self.name} does not stream")

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        """Default mapping of an HTTP error status; vendors refine it from their error body."""
        return error_for_status(reply.status, f"upstream answered HTTP {reply.status}")


def error_for_status(status: int, message: str, field: str | None = None,
                     code: str | None = None) -> UpstreamError:
    """The gateway error class for an upstream HTTP status, before any vendor refinement."""
    if status == 429:
        return UpstreamRateLimited(message, code=code)
    if status in (401, 403):
        # The channel's own key is wrong or lacks access: the client is not at fault and
        # nothing was accepted, so another channel may serve it.
        return UpstreamUnavailable(f"upstream refused the channel's credentials: {message}",
                                   code="upstream_auth_failed")
    if 400 <= status < 500:
        return UpstreamRejected(message, field=field, code=code)
    return UpstreamUnavailable(message, code=code)
