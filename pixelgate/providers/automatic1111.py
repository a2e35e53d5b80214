"""AUTOMATIC1111's Stable Diffusion WebUI (and Forge, which keeps its API), started with --api.
Synchronous: the call answers with the images.

Upstream (modules/api/api.py; HTTP basic auth when started with --api-auth user:pass):
  POST /sdapi/v1/txt2img  {"prompt", "negative_prompt", "width", "height", "steps", "cfg_scale",
                           "sampler_name", "seed" (-1: random), "batch_size", "n_iter",
                           "override_settings": {"sd_model_checkpoint": <title>}}
  POST /sdapi/v1/img2img  the same, and "init_images": [<base64>], "denoising_strength",
                           "mask": <base64, white repaints>, "inpainting_fill" (1: the original)
    -> {"images": [<base64 PNG>], "parameters": {...}, "info": "<JSON string: seed, all_seeds...>"}
  errors: 422 {"detail": [{"loc": ["body", field], "msg", "type"}]} (FastAPI), 404 {"detail":
          "Sampler not found"}, 401 {"detail": "Incorrect username or password"}, 500 {"error",
          "detail", "body", "errors"}

A model name runs the checkpoint the channel names for it (options `checkpoints`, or model_map),
switched per request with override_settings; a name with neither runs whatever is loaded.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from pixelgate.domain import masks
from pixelgate.domain.request import ImageRequest
from pixelgate.domain.result import Finished, UpstreamImage
from pixelgate.errors import UpstreamBadResponse, UpstreamError, UpstreamRejected
from pixelgate.providers import stable_diffusion as sd
from pixelgate.providers.base import Channel, Provider, UpstreamCall, UpstreamReply, error_for_status

# Our names for the fields a 422 names, so the client sees its own parameter.
CLIENT_FIELD = {"width": "size", "height": "size", "init_images": "image", "batch_size": "n"}


class Automatic1111Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoints: dict[str, str] = Field(default_factory=dict)
    """Model name -> checkpoint title as the WebUI lists it ("sd_xl_base_1.0.safetensors [31e35c80fc]")."""


class Automatic1111(Provider):
    name = "automatic1111"
    needs_base_url = True
    key_required = False  # api_key "user:pass" only when the WebUI runs with --api-auth
    generic = sd.CAPABILITIES
    channel_options = Automatic1111Options
    timeout = 600.0  # one call makes every image of a batch on the operator's GPU

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        width, height = sd.dimensions(req)
        body: dict[str, Any] = {
            "prompt": req.prompt or "", "negative_prompt": sd.setting(req, "negative_prompt"),
            "width": width, "height": height, "steps": sd.setting(req, "steps"),
            "cfg_scale": sd.setting(req, "cfg_scale"), "sampler_name": sd.setting(req, "sampler_name"),
            "seed": req.seed if req.seed is not None else -1, "batch_size": req.n, "n_iter": 1}
        checkpoint = channel.options.get("checkpoints", {}).get(req.model) or (
            model if model != req.model else None)
        if checkpoint:
            body["override_settings"] = {"sd_model_checkpoint": checkpoint}
        endpoint = "txt2img"
        if req.images:
            endpoint = "img2img"
            body["init_images"] = [_b64(req.images[0].data)]
            body["denoising_strength"] = sd.setting(req, "denoising_strength")
            if req.mask is not None:
                body["mask"] = _b64(masks.convert(req.mask.data, req.mask_convention, "white"))
                body["inpainting_fill"] = 1  # start from the original pixels under the mask
        headers = {}
        if channel.api_key:
            headers["Authorization"] = "Basic " + _b64(channel.api_key.encode())
        return UpstreamCall("POST", f"{self.base_url(channel)}/sdapi/v1/{endpoint}", headers, json=body)

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished:
        body = reply.json(lift=("images",))
        images = body.get("images") if isinstance(body, dict) else None
        if not isinstance(images, list) or not images:
            raise UpstreamBadResponse("The WebUI answered without images.")
        meta: dict[str, Any] = {}
        try:
            info = orjson.loads(body.get("info") or "{}")
        except (orjson.JSONDecodeError, TypeError):
            info = {}
        if isinstance(info, dict) and isinstance(info.get("seed"), int):
            meta["seed"] = info["seed"]
        seeds = info.get("all_seeds") if isinstance(info, dict) else None
        seeds = seeds if isinstance(seeds, list) and len(seeds) == len(images) else [None] * len(images)
        return Finished([UpstreamImage(b64=image, details={"seed": s} if s is not None else {})
                         for image, s in zip(images, seeds)], meta)

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        body = reply.json_or_none()
        detail = body.get("detail") if isinstance(body, dict) else None
        if reply.status == 422 and isinstance(detail, list) and detail and isinstance(detail[0], dict):
            loc = [str(p) for p in detail[0].get("loc") or [] if p != "body"] or [""]
            field = CLIENT_FIELD.get(loc[0], loc[0] or None)
            return UpstreamRejected(f"{detail[0].get('msg') or 'invalid value'} ({'.'.join(loc)})", field=field)
        if reply.status == 404 and detail == "Sampler not found":
            return UpstreamRejected("The WebUI has no such sampler.", field="sampler_name")
        if isinstance(body, dict) and "errors" in body:  # the WebUI's 500: an exception while generating
            message = ": ".join(str(p) for p in (body.get("error"), body.get("errors")) if p)
            return error_for_status(reply.status, f"The WebUI failed: {message}")
        return error_for_status(reply.status, str(detail) if isinstance(detail, str) else
                                f"The WebUI answered HTTP {reply.status}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
