"""Delivery: a vendor's images made the gateway's. Each is taken as the vendor gave it (bytes,
base64, or a URL fetched at once, since vendor URLs expire), converted where the vendor could not
make the asked format or size, stored (or not, for base64 the client already holds), and
answered as a signed link of the gateway's own or as base64.

When the image store fails, what the vendor made is not lost with the request: ImagesNotStored
carries it (a URL already fetched is kept as its bytes, since it expires), so that a task can keep
it and store it later without asking the vendor again (services.tasks)."""

from __future__ import annotations

import asyncio
import binascii
import io
import secrets
from typing import Any, Callable, TypeVar

import pybase64
from PIL import Image

from pixelgate.config import Settings
from pixelgate.domain.images import FORMATS, convert_format
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import DeliveredImage, Finished, UpstreamImage
from pixelgate.errors import StorageUnavailable, UpstreamBadResponse
from pixelgate.providers import REGISTRY
from pixelgate.services.context import RequestContext
from pixelgate.services.fetch import image_source, origin
from pixelgate.services.routing import ChannelDirectory
from pixelgate.services.storage import ImageStore, UrlSigner, file_name
from pixelgate.services.transport import upstream_errors

T = TypeVar("T")
PROMPT_LOGGED = 500
"""The first characters of a prompt kept with each stored image in the request log."""

LARGE = 256 * 1024
"""Bytes of work above which a step leaves the event loop for a thread (below it, the hop costs
more than the work): base64 of big images, builds that encode images or convert a mask."""


class ImagesNotStored(StorageUnavailable):
    """The vendor's images were made, and fetched, but the image store failed: `made` is the
    vendor's answer with every image as bytes or base64 (no URL left to expire). Answered as the
    StorageUnavailable it is (503, nothing charged) where nothing keeps it."""

    def __init__(self, message: str, made: Finished) -> None:
        super().__init__(message)
        self.made = made


async def off_loop_if_large(size: int, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    if size > LARGE:
        return await asyncio.to_thread(work, *args, **kwargs)
    return work(*args, **kwargs)


class ImageDelivery:
    def __init__(self, storage: ImageStore, signer: UrlSigner, directory: ChannelDirectory,
                 transports: dict[str, Any], settings: Settings) -> None:
        self._storage = storage
        self._signer = signer
        self._directory = directory
        self._transports = transports
        self._settings = settings

    async def deliver(self, finished: Finished, req: ImageRequest, ctx: RequestContext) -> list[DeliveredImage]:
        if not finished.images and req.operation is not Operation.DESCRIBE:  # describe answers text
            raise UpstreamBadResponse("The upstream answered without any image.")
        delivered = await asyncio.gather(*(self._store(image, req, ctx) for image in finished.images),
                                         return_exceptions=True)  # each image fetched, even if another fails
        failures = [d for d in delivered if isinstance(d, BaseException)]
        if failures:
            failure = next((f for f in failures if not isinstance(f, StorageUnavailable)), failures[0])
            if isinstance(failure, StorageUnavailable):  # every image is in hand: only the store failed
                raise ImagesNotStored(failure.message, finished) from failure
            raise failure
        ctx.images_delivered += len(delivered)
        return list(delivered)

    async def _store(self, image: UpstreamImage, req: ImageRequest, ctx: RequestContext) -> DeliveredImage:
        # The client gets the bytes in this very answer and the gateway keeps no copy: a vendor's
        # base64 that needs no conversion goes out as it came, checked by its header alone.
        passing = (req.delivery is Delivery.B64 and ctx.answer_carries_bytes
                   and self._settings.keep_images != "all")
        if passing and image.b64 is not None:
            fmt, width, height = await _identify_b64(image.b64)
            if not _converts(req, fmt):
                return _delivered(image, None, fmt, width, height, req, ctx, _decoded_size(image.b64), image.b64)
        if image.data is not None:
            data = image.data
        elif image.b64 is not None:
            data = await _b64decode(image.b64)
        else:
            data = await self._fetch(image.url or "", ctx)
            image.data, image.url = data, None  # vendor URLs expire: a second try at storing needs the bytes
        fmt, width, height = _identify(data)  # whatever is stored is an image, whole
        b64 = image.b64
        if _converts(req, fmt):  # the vendor could not
            fmt = req.output_format or fmt
            data = await asyncio.to_thread(convert_format, data, fmt, req.output_compression, req.deliver_size)
            b64 = None
        if passing:
            image_id = None
        elif req.delivery is Delivery.B64 and ctx.answer_carries_bytes:  # keep_images = all
            image_id = await self._storage.put_soon(data)  # the client gets the bytes in this very answer
        else:
            image_id = await self._storage.put(data)  # a link or a task must find it at once
        if (req.delivery is Delivery.B64 or req.stream) and b64 is None:  # stream events always carry the bytes
            b64 = (await off_loop_if_large(len(data), pybase64.b64encode, data)).decode()
        delivered = _delivered(image, image_id, fmt, width, height, req, ctx, len(data),
                               b64 if req.delivery is Delivery.B64 or req.stream else None)
        if req.delivery is Delivery.URL:
            delivered.url = self._signer.url(ctx.base_url, file_name(delivered.id, fmt))
        return delivered

    async def _fetch(self, url: str, ctx: RequestContext) -> bytes:
        """Download an image a vendor handed us by URL (they expire, so at once), capped at
        upstream_max_bytes, only from where the answering channel's images come: its own origin,
        trusted even on a private address (an emulator, an on-premise vendor: whatever it serves
        there, the vendor could as well have put in its answer), the delivery hosts its provider
        declares and upstream_image_hosts, public ones only unless in fetch_allow_hosts."""
        channel = await self._directory.channel(ctx.channel or "")
        provider = REGISTRY[channel.provider]
        own = origin(provider.base_url(channel))
        hosts = (*provider.image_hosts, *self._settings.upstream_image_hosts, *self._settings.fetch_allow_hosts)
        with upstream_errors("image download"):
            async with asyncio.timeout(60):
                return await self._transports["http"].download(url, frozenset({own}), image_source(own, hosts))


def _delivered(image: UpstreamImage, image_id: str | None, fmt: str, width: int, height: int,
               req: ImageRequest, ctx: RequestContext, size: int, b64: str | memoryview | None) -> DeliveredImage:
    """The answer's image and its log entry; without `image_id` it was kept nowhere (its random
    id names no file)."""
    kept = image_id is not None
    image_id = image_id or secrets.token_hex(16)
    ctx.stored.append({"id": image_id, "format": fmt, "bytes": size, **({} if kept else {"kept": False}),
                       **({"prompt": req.prompt[:PROMPT_LOGGED]} if req.prompt else {})})  # the console's gallery
    return DeliveredImage(image_id, fmt, b64=b64, revised_prompt=image.revised_prompt, width=width,
                          height=height, details=image.details)


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
        return await off_loop_if_large(len(b64), pybase64.b64decode, b64, validate=True)
    except (binascii.Error, ValueError):
        raise UpstreamBadResponse("The upstream sent an image that is not valid base64.") from None


def _decoded_size(b64: str | memoryview) -> int:
    tail = b64[-2:].encode() if isinstance(b64, str) else bytes(b64[-2:])
    return len(b64) // 4 * 3 - (len(tail) - len(tail.rstrip(b"=")))


def _converts(req: ImageRequest, fmt: str) -> bool:
    """Whether the vendor's image must be re-encoded: another format, or another size, than asked."""
    return bool((req.output_format and req.output_format != fmt) or req.deliver_size)
