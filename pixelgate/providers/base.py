"""The provider interface: what every vendor module implements.

A provider is capabilities (data) + a request builder + reply parsers, with no I/O of its own.
The engine owns the HTTP client, timeouts, failover, polling, storage and the request log;
a vendor module only translates between ImageRequest and the vendor's wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import orjson
from pydantic import BaseModel

from pixelgate import wirejson
from pixelgate.domain.capabilities import Capabilities, VendorOptions  # noqa: F401 (providers import them here)
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.domain.result import Finished, Pending, StreamPartial, Submitted
from pixelgate.errors import (UpstreamBadResponse, UpstreamError, UpstreamRateLimited,
                              UpstreamRejected, UpstreamUnavailable)

GENERATE, EDIT, VARIATION = Operation.GENERATE, Operation.EDIT, Operation.VARIATION


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
