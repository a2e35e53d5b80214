"""What the conversational APIs (chat completions, Responses) share: a conversation read as an
image request, the images made (directly, or through a task for an Idempotency-Key or an
asynchronous vendor), and a stream kept alive while a model that streams nothing is at work.

The rule for a conversation (both APIs):
  - the last user message's text is the prompt; its images are the input images of an edit;
  - when that message has no image and an earlier assistant message carries one (an image this
    gateway made, sent back as the client received it), its last image is the input of an edit,
    if the model can edit; otherwise the prompt makes a new image;
  - system/developer messages and the images of earlier user messages are not used.

The routes hand their services (surfaces.deps.ServicesDep) to these helpers.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable
from urllib.parse import parse_qs, urlsplit

from fastapi import Request

from pixelgate.domain.images import MIME_BY_FORMAT, InputImage, load_image
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import DeliveredImage, StreamPartial
from pixelgate.errors import GatewayError, InvalidRequest, ModelNotFound, NotFound
from pixelgate.providers.base import Capabilities
from pixelgate.services.engine import RequestContext, StreamCompleted
from pixelgate.services.shared import Services
from pixelgate.services.tasks import aware
from pixelgate.surfaces import _tasks
from pixelgate.surfaces._route import format_amount

KEEP_ALIVE_SECONDS = 5.0
"""Longest silence on a stream: proxies and clients drop an idle connection (nginx after 60 s)."""

_MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?\s*\)")
_OWN_FILE = re.compile(r"^/files/([0-9a-f]{32})\.(png|jpg|webp|gif)$")


@dataclass
class Turn:
    """One message: its role, its text, and its images as (URL, the field that gave it)."""

    role: str
    text: str
    images: list[tuple[str, str]] = field(default_factory=list)
    field: str = ""


def markdown_images(text: str) -> list[str]:
    """The image URLs a chat client sent back in an assistant's markdown (`![image](url)`)."""
    return _MARKDOWN_IMAGE.findall(text)


def stream_flag(data: dict, ignored: frozenset[str]) -> bool:
    """The body's `stream` (true or false), taken out of `data` with the fields that mean nothing
    to an image model (`ignored`: accepted, unused)."""
    for name in ignored:
        data.pop(name, None)
    stream = data.pop("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false.", field="stream", code="invalid_type")
    return stream


async def capabilities(services: Services, model: str) -> Capabilities | None:
    try:
        return (await services.directory.route(model)).capabilities
    except ModelNotFound:
        return None  # the engine says why when it prepares the request


async def apply_conversation(services: Services, req: ImageRequest, turns: list[Turn], field: str) -> None:
    """Set the prompt, the operation and the input images of `req` from the conversation, by the
    rule in this module's docstring."""
    users = [i for i, t in enumerate(turns) if t.role == "user"]
    if not users:
        raise InvalidRequest(f"'{field}' must contain a user message (its text is the prompt).", field=field,
                             code="missing_required_parameter")
    last = turns[users[-1]]
    if not last.text.strip():
        raise InvalidRequest(f"The last user message ('{last.field}') has no text: it is the prompt.",
                             field=last.field, code="missing_required_parameter")
    req.prompt, sources = last.text, last.images
    if not sources:
        earlier = [t for t in turns[: users[-1]] if t.role == "assistant" and t.images]
        caps = await capabilities(services, req.model) if earlier else None
        if caps is not None and Operation.EDIT in caps.operations:
            sources = earlier[-1].images[-1:]
    req.operation = Operation.EDIT if sources else Operation.GENERATE
    for url, where in sources:
        req.images.append(await input_image(services, url, where))


async def input_image(services: Services, url: str, field: str) -> InputImage:
    """An image part: a signed link of this gateway is read from its own storage (the Fetcher
    refuses a private address, where a gateway often lives); anything else as every client URL."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and (match := _OWN_FILE.match(parts.path)):
        query = parse_qs(parts.query)
        exp, sig = (query.get("exp") or ["0"])[0], (query.get("sig") or [""])[0]
        name = parts.path.rsplit("/", 1)[1]
        if exp.isdigit() and services.signer.verify(name, int(exp), sig):
            data = await services.storage.get(match.group(1))
            if data is None:
                raise NotFound(f"The image of '{field}' is no longer stored.", code="image_expired")
            return await load_image(data, field)
    return await services.fetcher.image(url, field)


def data_url(image: DeliveredImage) -> str:
    b64 = image.b64 if isinstance(image.b64, str) else bytes(image.b64 or b"").decode()
    return f"data:{MIME_BY_FORMAT.get(image.format, 'image/png')};base64,{b64}"


def b64_text(image: DeliveredImage | StreamPartial) -> str:
    return image.b64 if isinstance(image.b64, str) else bytes(image.b64 or b"").decode()


@dataclass
class Made:
    """The images of a finished request, however they were made."""

    images: list[DeliveredImage]
    created: int
    meta: dict[str, Any]


async def made_by(task, base_url: str, services: Services) -> Made:
    """A finished task's images, as `make` answers them."""
    items = await _tasks.images(task, base_url, services)
    images = [DeliveredImage(stored["id"], stored["format"], url=item.get("url"), b64=item.get("b64_json"),
                             revised_prompt=stored.get("revised_prompt"))
              for item, stored in zip(items, task.output or [])]
    return Made(images, int(aware(task.completed_at or task.created_at).timestamp()),
                (task.meta or {}).get("answer") or {})


async def make(request: Request, services: Services, req: ImageRequest, ctx: RequestContext,
               client_input: dict) -> Made:
    """The images, made at once, or by a task when the request must outlive its connection (an
    Idempotency-Key, an asynchronous vendor: surfaces._tasks), waited for here either way."""
    if await _tasks.needs_task(request, services, req, None):
        task = await _tasks.submit(request, services, req, ctx, client_input, None)
        task = await _tasks.settled(services, task, ctx)
        return await made_by(task, str(request.base_url), services)
    if req.delivery is Delivery.B64:
        ctx.answer_carries_bytes = True
    result = await services.engine.generate(req, ctx)
    return Made(result.images, result.created, result.meta)


async def stream(services: Services, req: ImageRequest, ctx: RequestContext
                 ) -> AsyncIterator[StreamPartial | StreamCompleted | None]:
    """The images as they come, refused (an error answer) before anything is sent if the request
    is invalid: partial images from a model that streams them, else each image when done. None
    marks a silence of KEEP_ALIVE_SECONDS."""
    engine = services.engine
    caps = await capabilities(services, req.model)
    if caps is not None and caps.stream:
        req.stream = True
        return _keep_alive(await engine.stream(req, ctx))
    route = await engine.prepare(req, ctx)

    async def finished() -> AsyncIterator[StreamPartial | StreamCompleted]:
        result = await engine.make(route, req, ctx)
        for image in result.images:
            yield StreamCompleted(image, result.meta)

    return _keep_alive(finished())


async def _keep_alive(events: AsyncIterator) -> AsyncIterator:
    """`events`, with None whenever none came for KEEP_ALIVE_SECONDS."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=1)
    done = object()

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
        except Exception as exc:  # handed to the consumer, which raises it in its own frame
            await queue.put(exc)
            return
        await queue.put(done)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEP_ALIVE_SECONDS)
            except TimeoutError:
                yield None
                continue
            if event is done:
                return
            if isinstance(event, BaseException):
                raise event
            yield event
    finally:
        task.cancel()  # a client gone: the engine's own cleanups settle what was made
        await asyncio.gather(task, return_exceptions=True)


async def sse(services: Services, ctx: RequestContext, body: AsyncIterator[bytes],
              failed: Callable[[GatewayError], list[bytes]], ending: bytes = b"") -> AsyncIterator[bytes]:
    """A stream's events, its failure told in its API's own events, its request logged when it
    ends, and its cost in a closing SSE comment (the headers left before the images were made)."""
    status, error = 200, None
    try:
        async for chunk in body:
            yield chunk
    except GatewayError as exc:
        status, error = exc.status, exc
        for chunk in failed(exc):
            yield chunk
    finally:
        await ctx.finish()
        services.log_request(ctx, status, error)
    if ctx.cost is not None:  # clients skip comments
        yield f": pixelgate-cost {format_amount(ctx.cost)} {services.engine.billing.currency}\n\n".encode()
    if error is None:
        yield ending
