"""Strict loopback emulator of AUTOMATIC1111's WebUI API (modules/api/api.py, started with --api).

POST /sdapi/v1/txt2img and /sdapi/v1/img2img answer {"images", "parameters", "info"} at once
(after `delay`); GET /sdapi/v1/sd-models lists `checkpoints`; GET /sdapi/v1/progress reports the
generation under way. With `auth` ("user:pass", as --api-auth) every route wants HTTP basic auth:
401 {"detail": "Incorrect username or password"} otherwise.

Choices where the WebUI is lenient: fields it does not know are refused (422 extra_forbidden,
FastAPI's shape), types are strict (no "20" for 20); width and height must be multiples of 8 from
64 to 4096 (the WebUI rounds); an unknown sd_model_checkpoint is a 500 {"error", "detail",
"body", "errors"} (the WebUI would log it and keep the loaded model); a mask must have its init
image's size. `fail_next(status, body)` answers the next generation with that.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pixelgate.simulators.bfl import render

__all__ = ["A1111EmulatorState", "create_app"]

SAMPLERS = ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ SDE", "DDIM", "UniPC", "euler", "euler_a")
# field -> type ("int", "num", "str", "bool", "list", "dict"), for both endpoints, and img2img's own
COMMON = {"prompt": "str", "negative_prompt": "str", "styles": "list", "seed": "int", "subseed": "int",
          "subseed_strength": "num", "sampler_name": "str", "scheduler": "str", "batch_size": "int",
          "n_iter": "int", "steps": "int", "cfg_scale": "num", "width": "int", "height": "int",
          "restore_faces": "bool", "tiling": "bool", "override_settings": "dict",
          "override_settings_restore_afterwards": "bool", "send_images": "bool", "save_images": "bool"}
TXT2IMG = {**COMMON, "enable_hr": "bool", "hr_scale": "num", "hr_upscaler": "str", "denoising_strength": "num"}
IMG2IMG = {**COMMON, "init_images": "list", "denoising_strength": "num", "mask": "str", "mask_blur": "int",
           "inpainting_fill": "int", "inpaint_full_res": "bool", "inpainting_mask_invert": "int",
           "resize_mode": "int"}
TYPES = {"int": (int,), "num": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}
MESSAGES = {"int": ("int_type", "Input should be a valid integer"), "num": ("float_type", "Input should be a valid number"),
            "str": ("string_type", "Input should be a valid string"), "bool": ("bool_type", "Input should be a valid boolean"),
            "list": ("list_type", "Input should be a valid list"), "dict": ("dict_type", "Input should be a valid dictionary")}


@dataclass
class A1111EmulatorState:
    auth: str | None = None
    """user:pass, as --api-auth; None: no authentication."""
    checkpoints: list[str] = field(default_factory=lambda: ["sd_xl_base_1.0.safetensors [31e35c80fc]",
                                                              "v1-5-pruned-emaonly.safetensors [6ce0161689]"])
    delay: float = 0.0
    requests: list[dict] = field(default_factory=list)
    """Every generation: {"path", "headers", "fields" (images as {width, height, mode})}."""
    failures: list[tuple[int, Any]] = field(default_factory=list)
    busy: dict | None = None

    def fail_next(self, status: int, body: Any = None) -> None:
        self.failures.append((status, body if body is not None else {
            "error": "OutOfMemoryError", "detail": "", "body": "",
            "errors": "CUDA out of memory. Tried to allocate 2.00 GiB"}))


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(str(body))
        self.status, self.body = status, body


def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json", headers=headers)


def _unprocessable(field_name: str, kind: str, msg: str, value: Any) -> ApiError:
    return ApiError(422, {"detail": [{"loc": ["body", field_name], "msg": msg, "type": kind, "input": value}]})


def _check_auth(state: A1111EmulatorState, request: Request) -> None:
    if state.auth is None:
        return
    header = request.headers.get("authorization", "")
    try:
        given = base64.b64decode(header[6:]).decode() if header.startswith("Basic ") else None
    except (binascii.Error, UnicodeDecodeError):
        given = None
    if given != state.auth:
        raise ApiError(401, {"detail": "Incorrect username or password"})


def _image(value: Any, name: str) -> Image.Image:
    if isinstance(value, str) and value.startswith("data:"):
        value = value.split(",", 1)[-1]  # the WebUI takes data URLs too
    try:
        img = Image.open(io.BytesIO(base64.b64decode(value, validate=True)))
        img.load()
        return img
    except (binascii.Error, ValueError, OSError, TypeError):
        raise ApiError(500, {"error": "UnidentifiedImageError", "detail": "", "body": "",
                             "errors": f"cannot identify image file in '{name}'"}) from None


def validate(schema: dict[str, str], body: Any, state: A1111EmulatorState) -> tuple[dict, dict[str, Image.Image]]:
    if not isinstance(body, dict):
        raise _unprocessable("body", "model_attributes_type", "Input should be a valid dictionary", body)
    for name, value in body.items():
        kind = schema.get(name)
        if kind is None:
            raise _unprocessable(name, "extra_forbidden", "Extra inputs are not permitted", value)
        if value is not None and (not isinstance(value, TYPES[kind]) or (kind != "bool" and isinstance(value, bool))):
            raise _unprocessable(name, *MESSAGES[kind], value)
    p = {k: v for k, v in body.items() if v is not None}
    for side in ("width", "height"):
        if side in p and (p[side] % 8 or not 64 <= p[side] <= 4096):
            raise _unprocessable(side, "value_error", "Value error, must be a multiple of 8 from 64 to 4096", p[side])
    for name, lo, hi in (("steps", 1, 150), ("batch_size", 1, 64), ("n_iter", 1, 64), ("cfg_scale", 0, 30),
                         ("denoising_strength", 0, 1), ("inpainting_fill", 0, 3)):
        if name in p and not lo <= p[name] <= hi:
            raise _unprocessable(name, "value_error", f"Value error, must be from {lo} to {hi}", p[name])
    if p.get("sampler_name", "Euler") not in SAMPLERS:
        raise ApiError(404, {"detail": "Sampler not found"})
    wanted = (p.get("override_settings") or {}).get("sd_model_checkpoint")
    if wanted is not None and not any(wanted in (title, title.split(" [")[0]) for title in state.checkpoints):
        raise ApiError(500, {"error": "RuntimeError", "detail": "", "body": "",
                             "errors": f"Checkpoint {wanted} not found; loaded checkpoints: {state.checkpoints}"})
    images: dict[str, Image.Image] = {}
    if schema is IMG2IMG:
        if not p.get("init_images"):
            raise _unprocessable("init_images", "missing", "Field required", None)
        images["init_images"] = _image(p["init_images"][0], "init_images")
        if "mask" in p:
            images["mask"] = _image(p["mask"], "mask")
            if images["mask"].size != images["init_images"].size:
                raise _unprocessable("mask", "value_error", "Value error, the mask must have the init image's size",
                                     None)
    return p, images


async def generate(request: Request) -> Response:
    state: A1111EmulatorState = request.app.state.emulator
    endpoint = request.path_params["endpoint"]
    if endpoint not in ("txt2img", "img2img"):
        return _json({"detail": "Not Found"}, 404)
    try:
        _check_auth(state, request)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise _unprocessable("body", "json_invalid", "JSON decode error", None) from None
        p, images = validate(TXT2IMG if endpoint == "txt2img" else IMG2IMG, body, state)
        state.requests.append({"path": request.url.path, "headers": dict(request.headers), "fields": {
            **p, **{k: {"width": v.width, "height": v.height, "mode": v.mode} for k, v in images.items()}},
            "images": images})
        if state.failures:
            raise ApiError(*state.failures.pop(0))
        count = p.get("batch_size", 1) * p.get("n_iter", 1)
        state.busy = {"started": time.time(), "steps": p.get("steps", 20) * count}
        await asyncio.sleep(state.delay)
        state.busy = None
        seed = p.get("seed", -1)
        seed = secrets.randbelow(2**32) if seed < 0 else seed
        size = images["init_images"].size if "init_images" in images and "width" not in p else (
            p.get("width", 512), p.get("height", 512))
        seeds = [seed + i for i in range(count)]
        pictures = await asyncio.to_thread(lambda: [render(p.get("prompt", ""), s, size, "png") for s in seeds])
        checkpoint = (p.get("override_settings") or {}).get("sd_model_checkpoint") or state.checkpoints[0]
        info = {"prompt": p.get("prompt", ""), "all_prompts": [p.get("prompt", "")] * count,
                "negative_prompt": p.get("negative_prompt", ""), "seed": seed, "all_seeds": seeds,
                "subseed": seed, "width": size[0], "height": size[1], "sampler_name": p.get("sampler_name", "Euler"),
                "cfg_scale": p.get("cfg_scale", 7.0), "steps": p.get("steps", 50), "batch_size": p.get("batch_size", 1),
                "sd_model_name": checkpoint.split(" [")[0].rsplit(".", 1)[0],
                "denoising_strength": p.get("denoising_strength")}
        return _json({"images": [base64.b64encode(x).decode() for x in pictures], "parameters": body,
                      "info": orjson.dumps(info).decode()})
    except ApiError as exc:
        headers = {"WWW-Authenticate": "Basic"} if exc.status == 401 else None
        return _json(exc.body, exc.status, headers)


async def sd_models(request: Request) -> Response:
    state: A1111EmulatorState = request.app.state.emulator
    try:
        _check_auth(state, request)
    except ApiError as exc:
        return _json(exc.body, exc.status, {"WWW-Authenticate": "Basic"})
    return _json([{"title": t, "model_name": t.split(" [")[0].rsplit(".", 1)[0], "hash": t.split("[")[-1][:-1],
                   "filename": f"/models/Stable-diffusion/{t.split(' [')[0]}", "config": None}
                  for t in state.checkpoints])


async def progress(request: Request) -> Response:
    state: A1111EmulatorState = request.app.state.emulator
    try:
        _check_auth(state, request)
    except ApiError as exc:
        return _json(exc.body, exc.status, {"WWW-Authenticate": "Basic"})
    busy = state.busy
    done = min(0.99, (time.time() - busy["started"]) / max(state.delay, 1e-6)) if busy else 0.0
    return _json({"progress": round(done, 3), "eta_relative": 0.0, "state": {
        "job_count": 1 if busy else 0, "sampling_steps": busy["steps"] if busy else 0}, "current_image": None,
        "textinfo": None})


def create_app(state: A1111EmulatorState | None = None) -> Starlette:
    app = Starlette(routes=[
        Route("/sdapi/v1/{endpoint:str}", generate, methods=["POST"]),
        Route("/sdapi/v1/sd-models", sd_models, methods=["GET"]),
        Route("/sdapi/v1/progress", progress, methods=["GET"]),
    ])
    app.state.emulator = state if state is not None else A1111EmulatorState()
    return app
