"""THE pipeline every surface calls: route -> validate -> call (with failover) -> store -> answer.

It is the only code that talks to upstreams. Whether to try another channel is a property of
the error class (`retry_elsewhere`): yes when the failure proves the vendor accepted nothing
(connection refused, 429, 5xx, a bad channel key), never once a vendor accepted a job, and not
after a timeout, which is ambiguous (the vendor may still finish and bill).
"""

from __future__ import annotations

import asyncio
import binascii
import dataclasses
import io
import logging
import secrets
import time
import weakref
from datetime import datetime, timezone
from decimal import Decimal
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol, TypeVar

import pybase64
from PIL import Image

from pixelgate.config import Settings
from pixelgate.db.models import RequestLog
from pixelgate.domain.images import FORMATS, INLINE_DECODE_PIXELS, convert_format
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import (DeliveredImage, Finished, ImageResult, Pending, StreamPartial,
                                     Submitted, UpstreamImage)
from pixelgate.domain.validate import validate
from pixelgate.domain.prices import TokenUsage, token_usage
from pixelgate.errors import (GatewayError, ModelNotFound, NotPriced, UpstreamBadResponse, UpstreamError,
                              UpstreamTimeout)
from pixelgate.providers import REGISTRY
from pixelgate.providers.base import Capabilities, Channel, Provider, UpstreamCall, UpstreamReply
from pixelgate.services import lifecycle
from pixelgate.services.auth import Principal
from pixelgate.services.billing import Billing, Quote
from pixelgate.services.ratelimit import RateLimiter, Slot
from pixelgate.services.records import RecordWriter
from pixelgate.services.routing import KNOWN_MODELS, ChannelDirectory, Route
from pixelgate.services.storage import ImageStore, UrlSigner, file_name
from pixelgate.services.transport import upstream_errors

T = TypeVar("T")
log = logging.getLogger("pixelgate.engine")
PROMPT_LOGGED = 500
"""The first characters of a prompt kept with each stored image in the request log."""


class Transport(Protocol):
    async def send(self, call: UpstreamCall, timeout: float) -> UpstreamReply: ...
    async def stream(self, call: UpstreamCall, timeout: float) -> tuple[UpstreamReply, AsyncIterator[tuple[str, Any]]]: ...


@dataclass(slots=True, weakref_slot=True)
class RequestContext:
    """What one client request did, for its log row."""

    request_id: str
    surface: str
    base_url: str
    principal: Principal | None = None
    operation: str | None = None
    model: str | None = None
    channel: str | None = None
    images_requested: int = 0
    images_delivered: int = 0
    attempts: list[dict] = field(default_factory=list)
    stored: list[dict] = field(default_factory=list)
    cost: Decimal | None = None
    quote: Quote | None = None
    held: bool = False
    keeper: asyncio.Task | None = None
    """Renews the hold's lease while the request runs (see Engine.hold)."""
    replayed: bool = False
    """An Idempotency-Key repeat: answered with the first request's task, charged nothing."""
    answer_carries_bytes: bool = False
    """A synchronous answer with base64 images: the gateway keeps no copy (unless keep_images
    is `all`, and then writes it in the background instead of delaying the answer)."""
    started: float = field(default_factory=time.perf_counter)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Run once the request is over (a stream: once it ends): release limits and holds."""

    async def finish(self) -> None:
        while self.cleanups:
            await self.cleanups.pop()()

    def attempt(self, channel: Channel, error: GatewayError | None, since: float) -> None:
        entry: dict[str, Any] = {"channel": channel.name, "ms": round((time.perf_counter() - since) * 1000, 1)}
        if error is not None:
            entry.update(error=error.code, status=error.status, message=error.message[:300])
            if error.status >= 500:  # the vendor failed us (the message names the cause, secrets redacted)
                log.warning("channel %s failed: %s: %s", channel.name, error.code, error.message[:300],
                            extra={"request_id": self.request_id})
        self.attempts.append(entry)

    def rows(self, status: int, error: GatewayError | None = None) -> list[tuple[type, dict]]:
        """The request's log row and its stored images' rows, as plain values for a bulk insert."""
        now = datetime.now(timezone.utc)
        log = dict(
            id=self.request_id, key_id=self.principal.key_id if self.principal else None,
            surface=self.surface, operation=self.operation, model=self.model, channel=self.channel,
            status=status, error_code=error.code if error else None,
            error=error.message[:2000] if error else None, images_requested=self.images_requested,
            images_delivered=self.images_delivered,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 2), attempts=self.attempts, cost=self.cost,
            created_at=now)
        log["images"] = self.stored or None
        return [(RequestLog, log)]


@dataclass(slots=True)
class StreamCompleted:
    image: DeliveredImage
    meta: dict[str, Any]


class Engine:
    def __init__(self, settings: Settings, directory: ChannelDirectory, storage: ImageStore,
                 signer: UrlSigner, records: RecordWriter, transports: dict[str, Transport],
                 billing: Billing, limiter: RateLimiter) -> None:
        self.settings = settings
        self.billing = billing
        self.limiter = limiter
        self.directory = directory
        self.storage = storage
        self.signer = signer
        self.records = records
        self.transports = transports

    async def route_for(self, req: ImageRequest) -> Route:
        """The model's capabilities and the channels that may serve this request, best first."""
        route = await self.directory.route(req.model, req.provider)
        if req.channel is not None:  # a follow-up of an accepted job goes where the job lives
            route = Route(route.model, route.capabilities, tuple(c for c in route.channels if c.name == req.channel)
                          or (await self.directory.channel(req.channel),))
        return route

    async def prepare(self, req: ImageRequest, ctx: RequestContext) -> Route:
        """Everything that can refuse the request before anything is spent: the model, the key's
        rights, the request's validity, its price, the key's rate limits."""
        ctx.operation, ctx.model, ctx.images_requested = req.operation.value, req.model, req.n
        principal = ctx.principal
        assert principal is not None
        principal.require_model(req.model)
        retired = lifecycle.retirement(req.model, self.settings.retired_models) if req.channel is None else None
        if retired is not None and retired.policy == "refuse":
            raise lifecycle.refusal(retired, req.model)
        if retired is not None and retired.policy == "successor":
            route = await self._succeed(req, ctx, retired)
        else:
            route = await self.route_for(req)
            validate(req, route.capabilities, ctx.surface)
            self._default_delivery(req, route.capabilities, ctx)
            ctx.quote = await self.billing.quote(req, self.markup(principal))
        ctx.images_requested = req.n  # a vendor option may have set it
        slot = await self.limiter.acquire(principal)
        if slot is not None:
            keeper = asyncio.create_task(self._keep_slot(slot))
            weakref.finalize(ctx, keeper.cancel)  # a request dropped unfinished stops renewing

            async def release() -> None:
                keeper.cancel()
                await self.limiter.release(slot)

            ctx.cleanups.append(release)
        return route

    async def _succeed(self, req: ImageRequest, ctx: RequestContext, retired: lifecycle.Retirement) -> Route:
        """A retired model served by its successor: checked, defaulted and priced as the model the
        client named (its price if it has one, else the successor's), then translated in place."""
        own = KNOWN_MODELS.get(req.model)
        if own is not None:
            validate(req, own[1], ctx.surface)
            self._default_delivery(req, own[1], ctx)
        try:
            quote = await self.billing.quote(req, self.markup(ctx.principal))
        except NotPriced:
            quote = None
        try:
            successor = await self.directory.route(retired.successor, req.provider)
        except ModelNotFound:
            raise ModelNotFound(f"The model '{req.model}' was retired by its vendor on {retired.entry.shutdown}, "
                                f"and no channel serves its successor '{retired.successor}'.",
                                field="model") from None
        translated = lifecycle.translate(req, retired, successor.capabilities)
        asked = req.size
        for name in ("model", "operation", "prompt", "quality", "size", "style", "background", "output_format",
                     "output_compression", "moderation", "input_fidelity", "extras"):
            setattr(req, name, getattr(translated, name))
        validate(req, successor.capabilities, ctx.surface)
        self._default_delivery(req, successor.capabilities, ctx)
        req.deliver_size = lifecycle.delivered_size(asked, req.size)
        ctx.quote = quote or await self.billing.quote(req, self.markup(ctx.principal))
        return successor

    @staticmethod
    def _default_delivery(req: ImageRequest, caps: Capabilities, ctx: RequestContext) -> None:
        if req.delivery is None:  # the client did not say: the model's documented default
            req.delivery = caps.surface_delivery.get(ctx.surface, caps.default_delivery)

    def markup(self, principal: Principal) -> Decimal:
        """What the key pays per unit of list price: its account's markup times its group's."""
        group = self.settings.group_markups.get(principal.group, Decimal(1)) if principal.group else Decimal(1)
        return principal.account_markup * group

    async def _keep_slot(self, slot: Slot) -> None:
        """A long request keeps its concurrency slot, which would otherwise expire (so that a
        killed instance's slots free themselves)."""
        while True:
            await asyncio.sleep(self.limiter.slot_seconds / 3)
            await self.limiter.renew(slot)

    async def hold(self, req: ImageRequest, ctx: RequestContext) -> None:
        """Reserve the most the request can cost (402 if the balance cannot cover it). The hold
        is leased to this request, renewed while it runs: if the process dies before `settle`,
        the lease runs out and the sweeper releases the hold."""
        lease = self.settings.task_lease_seconds
        ctx.held = await self.billing.hold(ctx.principal.account_id, ctx.request_id, ctx.quote.unit_price, req.n,
                                           lease_seconds=lease)
        if ctx.held:
            ctx.keeper = asyncio.create_task(self._keep_hold(ctx.request_id, lease))
            # A request dropped without settling (a stream whose client left before it began)
            # stops renewing when its context is collected: the sweeper then releases the hold.
            weakref.finalize(ctx, ctx.keeper.cancel)

    async def _keep_hold(self, request_id: str, lease: float) -> None:
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.billing.renew(request_id, lease)
            except Exception:  # the database may be back before the lease runs out
                log.warning("could not renew the hold of %s", request_id, exc_info=True)

    async def settle(self, ctx: RequestContext, delivered: int, usage: TokenUsage | None = None) -> Decimal:
        """Charge the images delivered (by the vendor's reported usage for a token price), once;
        the cost is recorded even for unlimited keys (which hold nothing, so they cost no
        database round trip here)."""
        if ctx.keeper is not None:
            ctx.keeper.cancel()
        charge = ctx.quote.charge(delivered, usage)
        if not ctx.held:
            ctx.cost = charge
            return charge
        charged = await asyncio.shield(self.billing.settle(ctx.request_id, delivered, charge=charge))
        if charged is None:
            # Our own hold was settled already: the sweeper released it, taking this request for
            # dead while its process was stalled past the lease. Paid now, or not handed out (402).
            ctx.cost = Decimal(0)
            if charge:
                charged = await asyncio.shield(self.billing.charge_released(
                    ctx.principal.account_id, ctx.request_id, charge))
        ctx.cost = charged if charged is not None else Decimal(0)
        return ctx.cost

    async def generate(self, req: ImageRequest, ctx: RequestContext) -> ImageResult:
        """Make the images and wait for them, whatever the vendor's own timing, and bill them."""
        route = await self.prepare(req, ctx)
        await self.hold(req, ctx)
        try:
            result = await self.produce(route, req, ctx)
        except BaseException:
            await self.settle(ctx, 0)
            raise
        await self.settle(ctx, len(result.images), token_usage(result.meta.get("token_usage")))
        return result

    async def produce(self, route: Route, req: ImageRequest, ctx: RequestContext) -> ImageResult:
        """The images of an already prepared request, stored; billing is the caller's (a request
        holds and settles around it, a task with its own row)."""
        parts = self.split(req, route)
        limit = route.capabilities.max_concurrent_calls
        outcomes = await self._failover(route, ctx, lambda p, c: self._fan_out(p, c, parts, self._call, limit))
        finished = merge(outcomes, len(parts))
        if req.deliver_size and "size" in finished.meta:  # the vendor's echo of what it made
            finished.meta["size"] = "{}x{}".format(*req.deliver_size)
        images = await self.deliver(finished, req, ctx)
        return ImageResult(ctx.request_id, req.model, images, int(time.time()), finished.meta)

    async def submit(self, route: Route, req: ImageRequest, ctx: RequestContext) -> tuple[Channel, list[Finished | Submitted]]:
        """Submit a prepared request without waiting: asynchronous vendors answer with jobs
        (Submitted), which from here on belong to the returned channel; synchronous ones answer
        Finished. Billing is the caller's (services.tasks)."""
        parts = self.split(req, route)

        async def attempt(provider: Provider, channel: Channel):
            return channel, await self._fan_out(provider, channel, parts, self._submit,
                                                route.capabilities.max_concurrent_calls)

        return await self._failover(route, ctx, attempt)

    async def poll(self, channel_name: str, req: ImageRequest, job: Submitted) -> Finished | Pending:
        """One look at an accepted job."""
        return await self.ask(channel_name, lambda p, c: p.build_poll(job, c), lambda p, r: p.parse_poll(req, r))

    async def ask(self, channel_name: str, build: Callable[[Provider, Channel], UpstreamCall | None],
                  parse: Callable[[Provider, UpstreamReply], T]) -> T | None:
        """One call about an accepted job, to the channel that holds it (a poll, a cancel, a
        Midjourney image seed); None when `build` has nothing to send."""
        channel = await self.directory.channel(channel_name)
        provider = REGISTRY[channel.provider]
        call = build(provider, channel)
        if call is None:
            return None
        with upstream_errors(channel.name, channel.api_key):
            reply = await self._send(provider, channel, call)
            if reply.status >= 400:
                raise provider.parse_error(reply)
            return parse(provider, reply)

    @staticmethod
    def can_cancel(channel: Channel) -> bool:
        return REGISTRY[channel.provider].cancellable

    @staticmethod
    def split(req: ImageRequest, route: Route) -> list[ImageRequest]:
        """The requests to send upstream: one, or several when the model makes fewer images per
        call than asked (each with its own seed, so the images differ)."""
        per_call = route.capabilities.n_per_call or route.capabilities.max_n
        if req.n <= per_call:
            return [req]
        counts = [per_call] * (req.n // per_call) + ([req.n % per_call] if req.n % per_call else [])
        # A negative seed means "random" to vendors that have one: keep it so; others wrap in range.
        return [dataclasses.replace(req, n=k, seed=req.seed if req.seed is None or req.seed < 0
                                    else (req.seed + i * per_call) % 2**31)
                for i, k in enumerate(counts)]

    async def stream(self, req: ImageRequest, ctx: RequestContext) -> AsyncIterator[StreamPartial | StreamCompleted]:
        """Partial previews as the vendor sends them, then each finished image once stored.
        Failover happens only before the first event; after that the stream is committed."""
        route = await self.prepare(req, ctx)

        async def open_stream(provider: Provider, channel: Channel):
            call = await _build(provider, req, channel)
            reply, events = await self._transport(provider).stream(call, self._timeout(provider, channel))
            if reply.status >= 400:
                raise provider.parse_error(reply)
            return provider, channel, events

        await self.hold(req, ctx)
        try:
            provider, channel, events = await self._failover(route, ctx, open_stream)
        except BaseException:
            await self.settle(ctx, 0)
            raise
        return self._relay(provider, channel, events, req, ctx)

    async def _relay(self, provider: Provider, channel: Channel, events: AsyncIterator[tuple[str, Any]],
                     req: ImageRequest, ctx: RequestContext) -> AsyncIterator[StreamPartial | StreamCompleted]:
        # The HTTP transport's own total timeout bounds the stream; an asyncio timeout here would
        # also fire while the consumer holds the generator suspended.
        usage: TokenUsage | None = TokenUsage()
        try:
            with upstream_errors(channel.name, channel.api_key):
                async for name, data in events:
                    parsed = provider.parse_stream_event(req, name, data)
                    if isinstance(parsed, StreamPartial):
                        yield parsed
                    elif isinstance(parsed, Finished):
                        # each completed image reports its own usage: the charge is their sum
                        reported = token_usage(parsed.meta.get("usage"))
                        usage = usage + reported if usage is not None and reported is not None else None
                        for image in await self.deliver(parsed, req, ctx):
                            yield StreamCompleted(image, parsed.meta)
        finally:
            await self.settle(ctx, ctx.images_delivered, usage)  # each completed image was sent

    # -- upstream calls --

    async def _failover(self, route: Route, ctx: RequestContext,
                        attempt: Callable[[Provider, Channel], Awaitable[T]]) -> T:
        last: UpstreamError | None = None
        for channel in route.channels[: self.settings.max_attempts]:
            provider = REGISTRY[channel.provider]
            since = time.perf_counter()
            try:
                with upstream_errors(channel.name, channel.api_key):
                    outcome = await attempt(provider, channel)
            except UpstreamError as exc:
                ctx.attempt(channel, exc, since)
                last = exc
                if exc.retry_elsewhere:
                    continue
                raise
            ctx.attempt(channel, None, since)
            ctx.channel = channel.name
            return outcome
        assert last is not None
        raise last

    async def _fan_out(self, provider: Provider, channel: Channel, parts: list[ImageRequest],
                       step: Callable[[Provider, Channel, ImageRequest], Awaitable[T]],
                       limit: int | None = None) -> list[T]:
        """Run `step` for every part concurrently. If some fail, the others' results still count
        (their work was accepted and paid); only when all fail does the error decide what happens
        next (another channel, or an answer)."""
        if len(parts) == 1:
            return [await step(provider, channel, parts[0])]
        gate = asyncio.Semaphore(limit or len(parts))  # a vendor may cap the jobs one key runs at once

        async def one(part: ImageRequest) -> T:
            async with gate:
                return await step(provider, channel, part)

        results = await asyncio.gather(*(one(p) for p in parts), return_exceptions=True)
        done = [r for r in results if not isinstance(r, BaseException)]
        if not done:
            raise next(r for r in results if isinstance(r, BaseException))
        return done

    async def _submit(self, provider: Provider, channel: Channel, req: ImageRequest) -> Finished | Submitted:
        call = await _build(provider, req, channel)
        reply = await self._send(provider, channel, call)
        if reply.status >= 400:
            raise provider.parse_error(reply)
        return provider.parse(req, reply)

    async def _call(self, provider: Provider, channel: Channel, req: ImageRequest) -> Finished:
        outcome = await self._submit(provider, channel, req)
        if isinstance(outcome, Submitted):
            try:
                return await self._wait(provider, channel, req, outcome)
            except UpstreamError as exc:
                exc.retry_elsewhere = False  # the job was accepted: another channel would bill again
                raise
        return outcome

    async def _wait(self, provider: Provider, channel: Channel, req: ImageRequest, job: Submitted) -> Finished:
        """Poll an accepted job until it finishes or the synchronous deadline passes."""
        deadline = time.monotonic() + self.settings.async_wait_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(min(self.settings.poll_interval_seconds, max(0.0, deadline - time.monotonic())))
            try:
                outcome = await self.poll(channel.name, req, job)
            except UpstreamError as error:
                if error.retry_elsewhere and error.code != "upstream_auth_failed":
                    continue  # a hiccup while polling; the job itself is still there
                raise
            if isinstance(outcome, Finished):
                return outcome
        raise UpstreamTimeout(f"The job on channel {channel.name!r} did not finish within "
                              f"{self.settings.async_wait_seconds:g} s.", code="job_deadline_exceeded")

    async def _send(self, provider: Provider, channel: Channel, call: UpstreamCall) -> UpstreamReply:
        timeout = self._timeout(provider, channel)
        async with asyncio.timeout(timeout):
            return await self._transport(provider).send(call, timeout)

    def _transport(self, provider: Provider) -> Transport:
        return self.transports[provider.transport]

    @staticmethod
    def _timeout(provider: Provider, channel: Channel) -> float:
        return channel.timeout or provider.timeout

    # -- delivery --

    async def deliver(self, finished: Finished, req: ImageRequest, ctx: RequestContext) -> list[DeliveredImage]:
        if not finished.images and req.operation is not Operation.DESCRIBE:  # describe answers text
            raise UpstreamBadResponse("The upstream answered without any image.")
        delivered = await asyncio.gather(*(self._store(image, req, ctx) for image in finished.images))
        ctx.images_delivered += len(delivered)
        return list(delivered)

    async def _store(self, image: UpstreamImage, req: ImageRequest, ctx: RequestContext) -> DeliveredImage:
        # The client gets the bytes in this very answer and the gateway keeps no copy: a vendor's
        # base64 that needs no conversion goes out as it came, checked by its header alone.
        passing = req.delivery is Delivery.B64 and ctx.answer_carries_bytes and self.settings.keep_images != "all"
        if passing and image.b64 is not None:
            fmt, width, height = await _identify_b64(image.b64)
            if not _converts(req, fmt):
                return self._delivered(image, None, fmt, width, height, req, ctx, _decoded_size(image.b64), image.b64)
        if image.data is not None:
            data = image.data
        elif image.b64 is not None:
            data = await _b64decode(image.b64)
        else:
            data = await self._fetch(image.url or "", ctx)
        fmt, width, height = _identify(data)  # whatever is stored is an image, whole
        b64 = image.b64
        if _converts(req, fmt):  # the vendor could not
            fmt = req.output_format or fmt
            data = await asyncio.to_thread(convert_format, data, fmt, req.output_compression, req.deliver_size)
            b64 = None
        if passing:
            image_id = None
        elif req.delivery is Delivery.B64 and ctx.answer_carries_bytes:  # keep_images = all
            image_id = await self.storage.put_soon(data)  # the client gets the bytes in this very answer
        else:
            image_id = await self.storage.put(data)  # a link or a task must find it at once
        if (req.delivery is Delivery.B64 or req.stream) and b64 is None:  # stream events always carry the bytes
            b64 = (await _off_loop_if_large(len(data), pybase64.b64encode, data)).decode()
        delivered = self._delivered(image, image_id, fmt, width, height, req, ctx, len(data),
                                    b64 if req.delivery is Delivery.B64 or req.stream else None)
        if req.delivery is Delivery.URL:
            delivered.url = self.signer.url(ctx.base_url, file_name(delivered.id, fmt))
        return delivered

    @staticmethod
    def _delivered(image: UpstreamImage, image_id: str | None, fmt: str, width: int, height: int,
                   req: ImageRequest, ctx: RequestContext, size: int, b64: str | memoryview | None) -> DeliveredImage:
        """The answer's image and its log entry; without `image_id` it was kept nowhere (its
        random id names no file)."""
        kept = image_id is not None
        image_id = image_id or secrets.token_hex(16)
        ctx.stored.append({"id": image_id, "format": fmt, "bytes": size, **({} if kept else {"kept": False}),
                           **({"prompt": req.prompt[:PROMPT_LOGGED]} if req.prompt else {})})  # the console's gallery
        return DeliveredImage(image_id, fmt, b64=b64, revised_prompt=image.revised_prompt, width=width,
                              height=height, details=image.details)

    async def _fetch(self, url: str, ctx: RequestContext) -> bytes:
        """Download an image a vendor handed us by URL (they expire, so at once), capped at
        upstream_max_bytes, only from where the answering channel's images come: its own origin,
        trusted even on a private address (an emulator, an on-premise vendor: whatever it serves
        there, the vendor could as well have put in its answer), the delivery hosts its provider
        declares and upstream_image_hosts, public ones only unless in fetch_allow_hosts."""
        from pixelgate.services.fetch import image_source, origin

        channel = await self.directory.channel(ctx.channel or "")
        provider = REGISTRY[channel.provider]
        own = origin(provider.base_url(channel))
        hosts = (*provider.image_hosts, *self.settings.upstream_image_hosts, *self.settings.fetch_allow_hosts)
        with upstream_errors("image download"):
            async with asyncio.timeout(60):
                return await self.transports["http"].download(url, frozenset({own}), image_source(own, hosts))


LARGE = 256 * 1024
"""Bytes of work above which a step leaves the event loop for a thread (below it, the hop costs
more than the work): base64 of big images, builds that encode images or convert a mask."""


async def _off_loop_if_large(size: int, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    if size > LARGE:
        return await asyncio.to_thread(work, *args, **kwargs)
    return work(*args, **kwargs)


async def _build(provider: Provider, req: ImageRequest, channel: Channel) -> UpstreamCall:
    """The vendor call. A provider's build is pure, so one that carries large images runs in a
    thread, away from every other request's I/O: it base64-encodes their bytes, and it may decode
    their pixels (a mask converted to the vendor's convention, or Ideogram's mask made from the
    image's alpha), which costs by the pixel however well the file compressed."""
    model = channel.upstream_model(req.model)
    images = [*req.images, *req.style_images, *([req.mask] if req.mask is not None else [])]
    if (sum(len(i.data) for i in images) > LARGE
            or sum(i.width * i.height for i in images) > INLINE_DECODE_PIXELS):
        return await asyncio.to_thread(provider.build, req, model, channel)
    return provider.build(req, model, channel)


def _identify(data: bytes) -> tuple[str, int, int]:
    """Format, width and height from the image header (no full decode). Only an image of a format
    the gateway serves is stored or answered: a vendor's JSON or HTML page would go out as image/png."""
    found = _header(data)
    if found is None:
        raise UpstreamBadResponse("The upstream sent something that is not an image (PNG, JPEG, WEBP or GIF).")
    return found


def _header(data: bytes) -> tuple[str, int, int] | None:
    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as img:
            return FORMATS[img.format][0], *img.size
    except Exception:  # Pillow raises assorted types for bytes it cannot read (or a cut-off header)
        return None


_FORMATS = list(FORMATS)
SNIFF_B64 = 64 * 1024
"""Characters of base64 (48 KiB of image) decoded to read an image's header: past any PNG's or
GIF's, and a JPEG's unless its metadata is larger (then, as for WEBP, which Pillow reads whole,
all of it is decoded)."""


async def _identify_b64(b64: str | memoryview) -> tuple[str, int, int]:
    """_identify of base64 text, decoding only its head when that holds the header: a 1.5 MB
    image is answered without being decoded (or copied) whole."""
    if len(b64) > SNIFF_B64:
        found = _header(await _b64decode(b64[:SNIFF_B64]))
        if found is not None:
            return found
    return _identify(await _b64decode(b64))


async def _b64decode(b64: str | memoryview) -> bytes:
    try:
        return await _off_loop_if_large(len(b64), pybase64.b64decode, b64, validate=True)
    except (binascii.Error, ValueError):
        raise UpstreamBadResponse("The upstream sent an image that is not valid base64.") from None


def _decoded_size(b64: str | memoryview) -> int:
    tail = b64[-2:].encode() if isinstance(b64, str) else bytes(b64[-2:])
    return len(b64) // 4 * 3 - (len(tail) - len(tail.rstrip(b"=")))


def _converts(req: ImageRequest, fmt: str) -> bool:
    """Whether the vendor's image must be re-encoded: another format, or another size, than asked."""
    return bool((req.output_format and req.output_format != fmt) or req.deliver_size)


def merge(outcomes: list[Finished], asked: int) -> Finished:
    """One result from the results of a fan-out; `token_usage` sums what every call reported
    (absent if any call reported none: the request is then charged its quote)."""
    meta = dict(outcomes[0].meta)
    if len(outcomes) < asked:
        meta["partial"] = f"{asked - len(outcomes)} of {asked} upstream calls failed"
    usages = [token_usage(f.meta.get("usage") or f.meta.get("usage_metadata")) for f in outcomes]
    if usages and all(u is not None for u in usages):
        meta["token_usage"] = sum(usages, TokenUsage()).as_dict()
    return Finished([image for f in outcomes for image in f.images], meta)
