"""The sandbox vendor itself: an in-process upstream that draws images with Pillow.

It answers UpstreamCalls addressed to sandbox:// the way a remote vendor would answer HTTP,
including the failures it is told to simulate, so that everything downstream of the transport
is exercised exactly as with a real vendor. Jobs are stateless tokens (the request plus the
time it is due), so they survive restarts and are the same on every worker.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import time
from typing import Any, AsyncIterator

import orjson
from PIL import Image, ImageFilter, ImageOps

from pixelgate.domain.images import convert_format
from pixelgate.providers.base import UpstreamCall, UpstreamReply

JOB_SECONDS = 1.0
_FAILURES = {
    "server_error": (500, "server_error", "The sandbox simulated a server error."),
    "unavailable": (503, "server_error", "The sandbox simulated an outage."),
    "rate_limit": (429, "rate_limit_exceeded", "The sandbox simulated a rate limit."),
    "moderation": (400, "content_policy_violation",
                   "Your request was rejected as a result of the sandbox's simulated safety system."),
    "bad_request": (400, "invalid_value", "The sandbox simulated an invalid request."),
}


def render(prompt: str, seed: int, width: int, height: int, fmt: str = "png",
           compression: int | None = None, transparent: bool = False,
           base: bytes | None = None, mask: bytes | None = None, variation: bool = False) -> bytes:
    """A deterministic picture for (prompt, seed): a gradient, shapes and the prompt's words."""
    rng = random.Random(f"{prompt}\x00{seed}")
    colours = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    gradient = Image.linear_gradient("L").rotate(rng.randrange(360)).resize((width, height))
    img = ImageOps.colorize(gradient, colours[0], colours[1]).convert("RGBA")
    if transparent:
        img.putalpha(0)
    from PIL import ImageDraw  # with its fonts (freetype): only once the sandbox draws

    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(max(4, min(width, height) // 10), max(8, min(width, height) // 3))
        fill = tuple(rng.randrange(256) for _ in range(3)) + (255,)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - r, y - r, x + r, y + r), fill=fill)
    draw.text((8, 8), prompt[:60], fill=(255, 255, 255, 255))
    if base is not None:
        img = _apply_to(base, img, mask, variation)
    return encode(img, fmt, compression)


def _apply_to(base: bytes, drawn: Image.Image, mask: bytes | None, variation: bool) -> Image.Image:
    """Edit: paint the drawing where the mask (or the image itself) is transparent.
    Variation: the image, re-coloured."""
    source = Image.open(io.BytesIO(base)).convert("RGBA").resize(drawn.size)
    if variation:
        return Image.blend(source, drawn, 0.35)
    alpha = (Image.open(io.BytesIO(mask)).convert("RGBA").resize(drawn.size) if mask else source).getchannel("A")
    editable = ImageOps.invert(alpha)  # OpenAI masks: alpha 0 marks what to edit
    return Image.composite(drawn, source.copy(), editable)


def encode(img: Image.Image, fmt: str, compression: int | None = None) -> bytes:
    if fmt == "png":
        out = io.BytesIO()
        img.save(out, "PNG", compress_level=1)  # speed over size: it is a sandbox
        return out.getvalue()
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=0)
    return convert_format(buf.getvalue(), fmt, compression)


class SandboxTransport:
    """Carries sandbox:// calls to the in-process vendor."""

    async def send(self, call: UpstreamCall, timeout: float) -> UpstreamReply:
        if call.url.startswith("sandbox://jobs/"):
            return await self._poll(call.url.removeprefix("sandbox://jobs/"))
        body = call.json
        failure = await self._prelude(body, timeout)
        if failure is not None:
            return failure
        if body["async"]:
            return _reply({"job": _job_token(body)})
        images = await _render_all(body)
        return _reply({"images": [{"data": d} for d in images], "meta": _meta(body)})

    async def stream(self, call: UpstreamCall, timeout: float) -> tuple[UpstreamReply, AsyncIterator[tuple[str, Any]]]:
        body = call.json
        failure = await self._prelude(body, timeout)
        if failure is not None:
            return failure, _no_events()
        return UpstreamReply(200, {"content-type": "text/event-stream"}), self._events(body)

    async def _events(self, body: dict) -> AsyncIterator[tuple[str, Any]]:
        family = "image_edit" if body["operation"] == "edit" else "image_generation"
        for data in await _render_all(body):
            meta = _meta(body)
            img = Image.open(io.BytesIO(data))
            for p in range(body["partial_images"]):
                preview = img.filter(ImageFilter.GaussianBlur(radius=16 >> p))
                yield (f"{family}.partial_image",
                       {"type": f"{family}.partial_image", "partial_image_index": p,
                        "b64_json": base64.b64encode(encode(preview, body["format"])).decode(), **meta})
            yield (f"{family}.completed", {"type": f"{family}.completed",
                                           "b64_json": base64.b64encode(data).decode(), **meta})

    async def _prelude(self, body: dict, timeout: float) -> UpstreamReply | None:
        if body["delay_ms"]:
            await asyncio.sleep(body["delay_ms"] / 1000)
        fail = body["fail"]
        if fail == "connection":
            raise ConnectionRefusedError("sandbox: simulated connection refused")
        if fail == "timeout":
            await asyncio.sleep(timeout + 5)  # the engine's deadline fires first
        if fail == "bad_response":
            return UpstreamReply(200, {"content-type": "application/json"}, b"<html>oops</html>")
        if fail in _FAILURES:
            status, code, message = _FAILURES[fail]
            headers = {"retry-after": "1"} if status == 429 else {}
            return UpstreamReply(status, headers, orjson.dumps(
                {"error": {"message": message, "type": "sandbox_error", "param": None, "code": code}}))
        return None

    async def _poll(self, token: str) -> UpstreamReply:
        body = _read_token(token)
        remaining = body["due"] - time.time()
        if remaining > 0:
            total = body.get("job_seconds") or JOB_SECONDS
            return _reply({"status": "pending", "progress": round(max(0.0, 1 - remaining / total), 2)})
        if body["fail"] == "job_failed":
            return _reply({"status": "failed", "error": "the sandbox simulated a failed job"})
        images = await _render_all(body)
        return _reply({"status": "succeeded", "images": [{"data": d} for d in images], "meta": _meta(body)})


async def _no_events() -> AsyncIterator[tuple[str, Any]]:
    return
    yield  # pragma: no cover


def _reply(payload: dict) -> UpstreamReply:
    return UpstreamReply(200, {"content-type": "application/json"}, payload=payload)


def _meta(body: dict) -> dict:
    return {"size": f"{body['width']}x{body['height']}", "output_format": body["format"]}


async def _render_all(body: dict) -> list[bytes]:
    def work() -> list[bytes]:
        base = body["images"][0] if body["images"] else None
        return [render(body["prompt"], body["seed"] + i, body["width"], body["height"], body["format"],
                       body["compression"], body["background"] == "transparent", base, body["mask"],
                       variation=body["operation"] == "variation")
                for i in range(body["n"])]
    return await asyncio.to_thread(work)


def _job_token(body: dict) -> str:
    # Input images stay out of the token: a sandbox job re-renders from the prompt alone.
    fields = {k: v for k, v in body.items() if k not in ("images", "mask")}
    fields["due"] = time.time() + body.get("job_seconds", JOB_SECONDS)
    return base64.urlsafe_b64encode(orjson.dumps(fields)).decode().rstrip("=")


def _read_token(token: str) -> dict:
    body = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    body.update(images=[], mask=None)
    return body
