"""sandbox: the built-in offline provider. No network, no key: images are drawn locally.

Its "upstream" is pixelgate.services.sandbox, an in-process vendor reached through the engine's
`sandbox` transport, so its failures travel the same engine paths (failover, timeouts, error
mapping, polling) as a real vendor's. Wire format (in-process, never serialized):
  sandbox://generate  {operation, prompt, n, width, height, format, ...}
      -> {"images": [{"data": <bytes>}], "meta": {...}}  or, when asynchronous, {"job": <token>}
  sandbox://jobs/<token> -> {"status": "pending", "progress": 0.4} | {"status": "failed", ...}
      | {"status": "succeeded", "images": [...]}
  errors: OpenAI's {"error": {"message", "type", "param", "code"}} with the chosen HTTP status.

Models: `sandbox-image` (default), `sandbox-slow` (answers after 2 s), `sandbox-async` (a job that
finishes after about a second). Options, on any of them:
  sandbox_delay_ms   0..600000     answer after this long
  sandbox_fail       server_error | unavailable | rate_limit | timeout | moderation |
                     bad_request | bad_response | connection | job_failed
  sandbox_async      true          behave as an asynchronous vendor (submit, then poll)
  sandbox_job_seconds 0..3600      how long an asynchronous job takes (default 1)

It is one vendor with OpenAI's vocabulary, and does not pretend to be another: the Ideogram and
Midjourney APIs reach only their own vendor's channels (a grid's buttons, image seeds and
descriptions are that vendor's). Offline, those vendors are simulated instead (pixelgate.simulators,
switched on by simulate_vendors), so that the real ideogram and midjourney providers do the work.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field

from pixelgate.domain import sizes
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.domain.sizes import Size
from pixelgate.domain.result import Finished, Pending, StreamPartial, Submitted, UpstreamImage
from pixelgate.errors import InvalidRequest, UpstreamError
from pixelgate.providers.base import (EDIT, GENERATE, VARIATION, Capabilities, Channel, Provider,
                                      UpstreamCall, UpstreamReply, VendorOptions)
from pixelgate.providers.openai import error_from_body, stream_event

FailureMode = Literal["server_error", "unavailable", "rate_limit", "timeout", "moderation",
                      "bad_request", "bad_response", "connection", "job_failed"]


class SandboxOptions(VendorOptions):
    sandbox_delay_ms: int = Field(default=0, ge=0, le=600_000)
    sandbox_fail: FailureMode | None = None
    sandbox_async: bool = False
    sandbox_job_seconds: float = Field(default=1.0, ge=0, le=3600)


_BASE = Capabilities(
    operations=frozenset({GENERATE, EDIT, VARIATION}), max_prompt=32000, max_n=10,
    qualities=("standard", "hd", "low", "medium", "high", "auto"), styles=("vivid", "natural"),
    backgrounds=("transparent", "opaque", "auto"), output_formats=("png", "jpeg", "webp"),
    output_compression=True, moderation=("low", "auto"), input_fidelity=("high", "low"),
    stream=True, max_images=16, image_formats=("png", "webp", "jpeg"),
    image_max_bytes=50 * 1024 * 1024, options=SandboxOptions, fit_size=lambda size: _fit(size))

# model -> behaviour it implies unless the request's options say otherwise
BEHAVIOUR: dict[str, dict[str, Any]] = {
    "sandbox-image": {},
    "sandbox-slow": {"sandbox_delay_ms": 2000},
    "sandbox-async": {"sandbox_async": True},
}


class Sandbox(Provider):
    name = "sandbox"
    transport = "sandbox"
    key_required = False
    timeout = 60.0
    cancellable = True  # its jobs are stateless tokens: dropping one is all it takes
    models = {name: _BASE for name in BEHAVIOUR} | {"sandbox-async": dataclasses.replace(_BASE, asynchronous=True)}
    generic = _BASE
    """A sandbox channel may also stand in for any other model name (tests, demos, CI)."""

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        width, height = _dimensions(req)
        opts = {**BEHAVIOUR.get(model, {}), **req.extras}
        body = {
            "operation": req.operation.value, "model": model, "prompt": req.prompt or "",
            "n": req.n, "width": width, "height": height, "format": req.output_format or "png",
            "compression": req.output_compression, "background": req.background,
            "seed": req.seed or 0, "partial_images": req.partial_images or 0,
            "images": [img.data for img in req.images],
            "mask": req.mask.data if req.mask else None,
            "delay_ms": opts.get("sandbox_delay_ms", 0), "fail": opts.get("sandbox_fail"),
            "async": opts.get("sandbox_async", False), "job_seconds": opts.get("sandbox_job_seconds", 1.0),
        }
        return UpstreamCall("POST", "sandbox://generate", json=body, stream=req.stream)

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Submitted:
        body = reply.json()
        if "job" in body:
            return Submitted(job_id=body["job"])
        return _finished(body)

    def build_poll(self, job: Submitted, channel: Channel) -> UpstreamCall:
        return UpstreamCall("GET", f"sandbox://jobs/{job.job_id}")

    def parse_poll(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Pending:
        body = reply.json()
        if body["status"] == "pending":
            return Pending(progress=body.get("progress"))
        if body["status"] == "failed":
            raise UpstreamError(f"sandbox job failed: {body.get('error')}", code="upstream_job_failed")
        return _finished(body)

    def parse_stream_event(self, req: ImageRequest, event: str, data: Any) -> StreamPartial | Finished | None:
        return stream_event(event, data)  # the same event vocabulary as OpenAI

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        return error_from_body(reply.status, reply.json())  # the same error body as OpenAI


def _finished(body: dict) -> Finished:
    return Finished([UpstreamImage(data=item["data"]) for item in body["images"]], body.get("meta", {}))


def _fit(size: Size) -> tuple[int, int]:
    """Any size vocabulary: exact pixels as asked, ratios and tiers at their area."""
    if size.width and not (16 <= size.width <= 4096 and 16 <= (size.height or 0) <= 4096):
        raise InvalidRequest(f"Invalid value: '{size.wxh()}'. Each side must be between 16 and 4096.",
                             field="size")
    return sizes.pixels_for(size, 1024 * 1024, multiple=8 if size.width is None else 1, min_side=16)


def _dimensions(req: ImageRequest) -> tuple[int, int]:
    if req.size:
        wanted = sizes.parse(req.size)
        if not wanted.is_auto:
            return _fit(wanted)
    if req.images and req.operation is not Operation.GENERATE:
        return req.images[0].width, req.images[0].height
    return 1024, 1024
