"""THE pipeline every surface calls: route -> validate -> call (with failover) -> store -> answer.

It is the only code that talks to upstreams. Whether to try another channel is a property of
the error class (`retry_elsewhere`): yes when the failure proves the vendor accepted nothing
(connection refused, 429, 5xx, a bad channel key), never once a vendor accepted a job, and not
after a timeout, which is ambiguous (the vendor may still finish and bill).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from decimal import Decimal
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol, TypeVar

from pixelgate.config import Settings
from pixelgate.domain.images import INLINE_DECODE_PIXELS
from pixelgate.domain.request import ImageRequest
from pixelgate.domain.result import DeliveredImage, Finished, ImageResult, Pending, StreamPartial, Submitted
from pixelgate.domain.validate import validate
from pixelgate.domain.prices import TokenUsage, token_usage
from pixelgate.errors import ModelNotFound, NotPriced, UpstreamError, UpstreamTimeout
from pixelgate.providers import REGISTRY
from pixelgate.providers.base import Capabilities, Channel, Provider, UpstreamCall, UpstreamReply
from pixelgate.services import lifecycle
from pixelgate.services.auth import Principal
from pixelgate.services.billing import Billing
from pixelgate.services.cloud_auth import CloudAuth
from pixelgate.services.context import RequestContext
from pixelgate.services.delivery import LARGE, ImageDelivery
from pixelgate.services.ratelimit import RateLimiter, Slot
from pixelgate.services.records import RecordWriter
from pixelgate.services.routing import KNOWN_MODELS, ChannelDirectory, Route
from pixelgate.services.storage import ImageStore, UrlSigner
from pixelgate.services.transport import upstream_errors

T = TypeVar("T")
log = logging.getLogger("pixelgate.engine")


class Transport(Protocol):
    async def send(self, call: UpstreamCall, timeout: float) -> UpstreamReply: ...
    async def stream(self, call: UpstreamCall, timeout: float) -> tuple[UpstreamReply, AsyncIterator[tuple[str, Any]]]: ...


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
        self.cloud_auth = CloudAuth(transports.get("http"))
        """Tokens and signatures for the providers that declare `credentials`."""
        self.delivery = ImageDelivery(storage, signer, directory, transports, settings)

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
        return await self.make(await self.prepare(req, ctx), req, ctx)

    async def make(self, route: Route, req: ImageRequest, ctx: RequestContext) -> ImageResult:
        """`generate` after `prepare`: for a caller that must know the request is accepted before
        it waits for the images (a chat stream that answers 200 and then waits)."""
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

    async def poll(self, channel_name: str, req: ImageRequest, job: Submitted,
                   live: bool = False) -> Finished | Pending:
        """One look at an accepted job; `live` (a task's poller): with its progress where the
        poll tells none and the vendor has a second place to look (Provider.build_progress)."""
        outcome = await self.ask(channel_name, lambda p, c: p.build_poll(job, c), lambda p, r: p.parse_poll(req, r))
        if live and isinstance(outcome, Pending) and outcome.progress is None:
            try:
                outcome.progress = await self.ask(channel_name, lambda p, c: p.build_progress(job, c),
                                                  lambda p, r: p.parse_progress(job, r))
            except UpstreamError:  # progress is a nicety: the next poll looks again
                pass
        return outcome

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
            call = await self._authorized(provider, channel, await _build(provider, req, channel))
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
        call = await _build(provider, req, channel)  # first: a refusal there uploads nothing
        for upload in provider.build_uploads(req, channel.upstream_model(req.model), channel):
            reply = await self._send(provider, channel, upload)
            if reply.status >= 400:
                raise provider.parse_error(reply)
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
            call = await self._authorized(provider, channel, call)
            reply = await self._transport(provider).send(call, timeout)
        reply.url = call.url
        return reply

    async def _authorized(self, provider: Provider, channel: Channel, call: UpstreamCall) -> UpstreamCall:
        """The call with the credentials its provider declares (an access token, a signature)."""
        return await self.cloud_auth.apply(provider, channel, call) if provider.credentials else call

    def _transport(self, provider: Provider) -> Transport:
        return self.transports[provider.transport]

    @staticmethod
    def _timeout(provider: Provider, channel: Channel) -> float:
        return channel.timeout or provider.timeout

    # -- delivery --

    async def deliver(self, finished: Finished, req: ImageRequest, ctx: RequestContext) -> list[DeliveredImage]:
        """The vendor's images fetched or decoded, stored and signed (services.delivery)."""
        return await self.delivery.deliver(finished, req, ctx)


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
