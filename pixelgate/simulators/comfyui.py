"""Strict loopback emulator of a ComfyUI server (its server.py routes and execution.py's checks).

Routes (also under /api, as ComfyUI serves them): POST /prompt, GET /prompt, GET /history/{id},
GET /view, POST /upload/image, WS /ws. A prompt is validated as ComfyUI does before queueing it:
every node's class must exist, every required input must be there with the right type or a
link to an output of the right type, within its range or list; LoadImage's file must have been
uploaded. Refusals are ComfyUI's 400 {"error", "node_errors"}. Accepted prompts run one at a
time, `step_seconds` per sampler step; while one runs, the websocket of its client_id gets
`executing` and `progress` messages; once done, /history has its outputs (SaveImage: type output,
PreviewImage: type temp) and /view serves them, drawn locally.

Choices where ComfyUI is lenient: a number given as a string ("1024", or an unfilled
"{{width}}") is refused as invalid_input_type (ComfyUI would convert "1024"); only the core nodes
a Stable Diffusion workflow uses exist (NODES). `fail_next(node_id)` makes the next prompt fail
while running that node (an execution_error in its history).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from pixelgate.simulators.bfl import render

__all__ = ["ComfyUIEmulatorState", "create_app", "NODES"]

SAMPLERS = ("euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_sde", "dpmpp_2m_sde", "ddim", "uni_pc")
SCHEDULERS = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta")
BIG = 0xFFFFFFFFFFFFFFFF


def _int(lo: int, hi: int) -> tuple:
    return ("INT", lo, hi)


def _float(lo: float, hi: float) -> tuple:
    return ("FLOAT", lo, hi)


# class -> (required inputs: name -> spec, output types, output node). A spec is a type name (a
# link), ("INT"|"FLOAT", min, max), "STRING", or a choice: a tuple of values / a state list name.
NODES: dict[str, tuple[dict[str, Any], tuple[str, ...], bool]] = {
    "CheckpointLoaderSimple": ({"ckpt_name": "checkpoints"}, ("MODEL", "CLIP", "VAE"), False),
    "CLIPTextEncode": ({"text": "STRING", "clip": "CLIP"}, ("CONDITIONING",), False),
    "EmptyLatentImage": ({"width": _int(16, 16384), "height": _int(16, 16384), "batch_size": _int(1, 4096)},
                         ("LATENT",), False),
    "KSampler": ({"model": "MODEL", "seed": _int(0, BIG), "steps": _int(1, 10000), "cfg": _float(0, 100),
                  "sampler_name": SAMPLERS, "scheduler": SCHEDULERS, "positive": "CONDITIONING",
                  "negative": "CONDITIONING", "latent_image": "LATENT", "denoise": _float(0, 1)}, ("LATENT",), False),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, ("IMAGE",), False),
    "VAEEncode": ({"pixels": "IMAGE", "vae": "VAE"}, ("LATENT",), False),
    "VAEEncodeForInpaint": ({"pixels": "IMAGE", "vae": "VAE", "mask": "MASK", "grow_mask_by": _int(0, 64)},
                            ("LATENT",), False),
    "SetLatentNoiseMask": ({"samples": "LATENT", "mask": "MASK"}, ("LATENT",), False),
    "LoadImage": ({"image": "inputs"}, ("IMAGE", "MASK"), False),
    "LoadImageMask": ({"image": "inputs", "channel": ("alpha", "red", "green", "blue")}, ("MASK",), False),
    "SaveImage": ({"images": "IMAGE", "filename_prefix": "STRING"}, (), True),
    "PreviewImage": ({"images": "IMAGE"}, (), True),
}


@dataclass
class Job:
    id: str
    number: int
    client_id: str | None
    prompt: dict
    outputs: list[str]
    steps: int
    start: float
    end: float
    fail_at: str | None = None
    history: dict | None = None


@dataclass
class ComfyUIEmulatorState:
    step_seconds: float = 0.01
    checkpoints: list[str] = field(default_factory=lambda: ["sd_xl_base_1.0.safetensors",
                                                              "v1-5-pruned-emaonly.safetensors"])
    inputs: dict[str, bytes] = field(default_factory=dict)
    """Uploaded files by name (ComfyUI's input directory)."""
    files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    """(type, subfolder, filename) -> image: the output and temp directories."""
    jobs: dict[str, Job] = field(default_factory=dict)
    prompts: list[dict] = field(default_factory=list)
    """Every POST /prompt body, as received."""
    uploads: list[dict] = field(default_factory=list)
    """Every POST /upload/image: its form fields, the file as {filename, bytes}."""
    failures: list[str] = field(default_factory=list)
    counter: int = 0

    def fail_next(self, node_id: str) -> None:
        self.failures.append(node_id)

    def running(self, now: float) -> Job | None:
        return next((j for j in self.jobs.values() if j.start <= now < j.end), None)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error(kind: str, message: str, details: str = "", **extra: Any) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _check_input(state: ComfyUIEmulatorState, prompt: dict, name: str, spec: Any, value: Any) -> dict | None:
    """The error of one input, or None."""
    if isinstance(value, list):  # a link: [node_id, output index]
        if len(value) != 2 or str(value[0]) not in prompt or not isinstance(value[1], int):
            return _error("bad_linked_input", "Bad linked input, must be a length-2 list of [string, int]",
                          f"{name}: {value}", input_name=name)
        source = prompt[str(value[0])]
        outputs = NODES.get(source.get("class_type"), ({}, (), False))[1]
        got = outputs[value[1]] if 0 <= value[1] < len(outputs) else None
        if got != spec:
            return _error("return_type_mismatch", "Return type mismatch between linked nodes",
                          f"{name}, received_type({got}) mismatch input_type({spec})", input_name=name)
        return None
    if isinstance(spec, str) and spec.isupper() and spec != "STRING":
        return _error("invalid_input_type", "Invalid input type", f"{name}: expected a link to a {spec} output",
                      input_name=name, received_value=value)
    if spec == "STRING" and not isinstance(value, str):
        return _error("invalid_input_type", "Failed to convert an input value to a STRING value",
                      f"{name}, {value}", input_name=name, received_value=value)
    if isinstance(spec, tuple) and spec and spec[0] in ("INT", "FLOAT") and len(spec) == 3:
        kind, lo, hi = spec
        ok = isinstance(value, int) if kind == "INT" else isinstance(value, (int, float))
        if not ok or isinstance(value, bool):
            return _error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                          f"{name}, {value}", input_name=name, received_value=value)
        if value < lo:
            return _error("value_smaller_than_min", f"Value {value} smaller than min of {lo}", f"{name}",
                          input_name=name, received_value=value)
        if value > hi:
            return _error("value_bigger_than_max", f"Value {value} bigger than max of {hi}", f"{name}",
                          input_name=name, received_value=value)
        return None
    choices = state.checkpoints if spec == "checkpoints" else list(state.inputs) if spec == "inputs" else spec
    if isinstance(choices, (list, tuple)) and value not in choices:
        if spec == "inputs":
            return _error("custom_validation_failed", "Custom validation failed for node",
                          f"{name} - Invalid image file: {value}", input_name=name, received_value=value)
        return _error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {list(choices)}",
                      input_name=name, received_value=value)
    return None


def validate(state: ComfyUIEmulatorState, prompt: Any) -> tuple[dict | None, dict, list[str]]:
    """(top error or None, node_errors, the output nodes to run), as execution.validate_prompt."""
    if not isinstance(prompt, dict):
        return _error("invalid_prompt", "Invalid prompt", "the prompt must be an object"), {}, []
    for node_id, node in prompt.items():
        cls = node.get("class_type") if isinstance(node, dict) else None
        if cls is None:
            return _error("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                          f"Node ID '#{node_id}'"), {}, []
        if cls not in NODES:
            return _error("invalid_prompt", f"Cannot execute because node {cls} does not exist.",
                          f"Node ID '#{node_id}'"), {}, []
    outputs = [i for i, n in prompt.items() if NODES[n["class_type"]][2]]
    if not outputs:
        return _error("prompt_no_outputs", "Prompt has no outputs"), {}, []
    node_errors: dict[str, dict] = {}
    for output in outputs:
        seen: set[str] = set()
        stack = [output]
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            node = prompt[node_id]
            inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
            errors = []
            for name, spec in NODES[node["class_type"]][0].items():
                if name not in inputs:
                    errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
                    continue
                problem = _check_input(state, prompt, name, spec, inputs[name])
                if problem:
                    errors.append(problem)
                elif isinstance(inputs[name], list):
                    stack.append(str(inputs[name][0]))
            if errors:
                entry = node_errors.setdefault(node_id, {"errors": errors, "dependent_outputs": [],
                                                         "class_type": node["class_type"]})
                entry["dependent_outputs"].append(output)
    good = [o for o in outputs if not any(o in e["dependent_outputs"] for e in node_errors.values())]
    if not good:
        return _error("prompt_outputs_failed_validation", "Prompt outputs failed validation"), node_errors, []
    return None, node_errors, good


def _steps(prompt: dict) -> int:
    return sum(n["inputs"]["steps"] for n in prompt.values() if n["class_type"] == "KSampler") or 1


async def post_prompt(request: Request) -> Response:
    state: ComfyUIEmulatorState = request.app.state.emulator
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return Response(b"", 400)
    state.prompts.append(body if isinstance(body, dict) else {"body": body})
    if not isinstance(body, dict) or "prompt" not in body:
        return _json({"error": _error("no_prompt", "No prompt provided", "No prompt provided"), "node_errors": {}}, 400)
    error, node_errors, outputs = validate(state, body["prompt"])
    if error is not None:
        return _json({"error": error, "node_errors": node_errors}, 400)
    prompt_id = str(body.get("prompt_id") or uuid.uuid4())
    now = time.time()
    start = max([now, *(j.end for j in state.jobs.values())])
    number, state.counter = state.counter, state.counter + 1
    steps = _steps(body["prompt"])
    state.jobs[prompt_id] = Job(prompt_id, number, body.get("client_id"), body["prompt"], outputs, steps, start,
                                start + steps * state.step_seconds,
                                state.failures.pop(0) if state.failures else None)
    return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})


async def get_prompt(request: Request) -> Response:
    state: ComfyUIEmulatorState = request.app.state.emulator
    now = time.time()
    return _json({"exec_info": {"queue_remaining": sum(1 for j in state.jobs.values() if j.end > now)}})


def _evaluate(state: ComfyUIEmulatorState, job: Job) -> dict:
    """Run the graph far enough to draw its images: sizes from the latents or the loaded image,
    the text and seed from the sampler."""
    prompt = job.prompt

    def value(link: list) -> dict:
        node = prompt[str(link[0])]
        cls, inputs = node["class_type"], node["inputs"]
        if cls == "CLIPTextEncode":
            return {"text": inputs["text"]}
        if cls == "EmptyLatentImage":
            return {"size": (inputs["width"], inputs["height"]), "batch": inputs["batch_size"]}
        if cls == "LoadImage":
            with Image.open(io.BytesIO(state.inputs[inputs["image"]])) as img:
                return {"size": img.size, "batch": 1}
        if cls in ("VAEEncode", "VAEEncodeForInpaint"):
            return value(inputs["pixels"])
        if cls == "SetLatentNoiseMask":
            return value(inputs["samples"])
        if cls == "KSampler":
            return {**value(inputs["latent_image"]), "seed": inputs["seed"],
                    "text": value(inputs["positive"])["text"]}
        if cls == "VAEDecode":
            return value(inputs["samples"])
        return {}

    outputs: dict[str, dict] = {}
    for node_id in job.outputs:
        node = prompt[node_id]
        image = value(node["inputs"]["images"])
        kind = "output" if node["class_type"] == "SaveImage" else "temp"
        prefix = node["inputs"].get("filename_prefix", "ComfyUI")
        saved = []
        for i in range(image.get("batch", 1)):
            state.counter += 1
            name = f"{prefix}_{state.counter:05d}_.png"
            state.files[(kind, "", name)] = render(image.get("text", ""), image.get("seed", 0) + i,
                                                   image.get("size", (512, 512)), "png")
            saved.append({"filename": name, "subfolder": "", "type": kind})
        outputs[node_id] = {"images": saved}
    return outputs


def _finish(state: ComfyUIEmulatorState, job: Job) -> dict:
    if job.history is None:
        started = ["execution_start", {"prompt_id": job.id, "timestamp": int(job.start * 1000)}]
        ended = int(job.end * 1000)
        if job.fail_at is not None:
            node = job.prompt.get(job.fail_at, {})
            failure = {"prompt_id": job.id, "node_id": job.fail_at, "node_type": node.get("class_type"),
                       "executed": [], "exception_message": "Allocation on device: out of memory",
                       "exception_type": "torch.OutOfMemoryError", "traceback": [], "current_inputs": {},
                       "current_outputs": {}, "timestamp": ended}
            outputs, status = {}, {"status_str": "error", "completed": False,
                                   "messages": [started, ["execution_error", failure]]}
        else:
            outputs = _evaluate(state, job)
            status = {"status_str": "success", "completed": True,
                      "messages": [started, ["execution_success", {"prompt_id": job.id, "timestamp": ended}]]}
        job.history = {"prompt": [job.number, job.id, job.prompt, {"client_id": job.client_id}, job.outputs],
                       "outputs": outputs, "status": status, "meta": {}}
    return job.history


async def history(request: Request) -> Response:
    state: ComfyUIEmulatorState = request.app.state.emulator
    job = state.jobs.get(request.path_params["prompt_id"])
    if job is None or time.time() < job.end:
        return _json({})
    return _json({job.id: await asyncio.to_thread(_finish, state, job)})


async def view(request: Request) -> Response:
    state: ComfyUIEmulatorState = request.app.state.emulator
    q = request.query_params
    name = q.get("filename", "")
    if not name:
        return Response(b"", 404)
    if name.startswith("/") or ".." in name:
        return Response(b"", 400)
    data = state.files.get((q.get("type", "output"), q.get("subfolder", ""), name))
    if data is None:
        return Response(b"", 404)
    return Response(data, media_type="image/png", headers={"Content-Disposition": f'filename="{name}"'})


async def upload_image(request: Request) -> Response:
    state: ComfyUIEmulatorState = request.app.state.emulator
    form = await request.form()
    image = form.get("image")
    if image is None or isinstance(image, str) or not image.filename:
        return Response(b"", 400)
    data = await image.read()
    state.uploads.append({**{k: v for k, v in form.items() if isinstance(v, str)},
                          "image": {"filename": image.filename, "bytes": len(data)}})
    name, subfolder = image.filename, str(form.get("subfolder", ""))
    if ".." in name or name.startswith("/") or ".." in subfolder:
        return Response(b"", 400)
    if form.get("overwrite") not in ("true", "1"):
        stem, dot, ext = name.rpartition(".")
        i = 1
        while name in state.inputs and hashlib.sha256(state.inputs[name]).digest() != hashlib.sha256(data).digest():
            name = f"{stem} ({i}){dot}{ext}"
            i += 1
    state.inputs[f"{subfolder}/{name}" if subfolder else name] = data
    return _json({"name": name, "subfolder": subfolder, "type": str(form.get("type", "input"))})


async def websocket(ws: WebSocket) -> None:
    """ComfyUI's /ws: the queue's status on connect, then the running prompt's steps to the
    client that submitted it."""
    state: ComfyUIEmulatorState = ws.app.state.emulator
    sid = ws.query_params.get("clientId") or uuid.uuid4().hex
    await ws.accept()
    remaining = sum(1 for j in state.jobs.values() if j.end > time.time())
    await ws.send_text(orjson.dumps({"type": "status", "data": {"status": {"exec_info": {
        "queue_remaining": remaining}}, "sid": sid}}).decode())
    told: dict[str, int] = {}
    try:
        while True:
            now = time.time()
            for job in state.jobs.values():
                if job.client_id != sid or job.start > now or told.get(job.id) == -1:
                    continue
                sampler = next((i for i, n in job.prompt.items() if n["class_type"] == "KSampler"), None)
                if now >= job.end:
                    told[job.id] = -1
                    await ws.send_text(orjson.dumps({"type": "executing", "data": {
                        "node": None, "prompt_id": job.id}}).decode())
                    continue
                step = min(job.steps, int((now - job.start) / state.step_seconds) + 1)
                if told.get(job.id) != step:
                    if job.id not in told:
                        await ws.send_text(orjson.dumps({"type": "executing", "data": {
                            "node": sampler, "display_node": sampler, "prompt_id": job.id}}).decode())
                    told[job.id] = step
                    await ws.send_text(orjson.dumps({"type": "progress", "data": {
                        "value": step, "max": job.steps, "prompt_id": job.id, "node": sampler}}).decode())
            try:
                message = await asyncio.wait_for(ws.receive(), min(state.step_seconds, 0.05))
            except TimeoutError:
                continue
            if message["type"] == "websocket.disconnect":
                return
    except WebSocketDisconnect:
        return


def create_app(state: ComfyUIEmulatorState | None = None) -> Starlette:
    routes = []
    for prefix in ("", "/api"):
        routes += [Route(f"{prefix}/prompt", post_prompt, methods=["POST"]),
                   Route(f"{prefix}/prompt", get_prompt, methods=["GET"]),
                   Route(f"{prefix}/history/{{prompt_id}}", history, methods=["GET"]),
                   Route(f"{prefix}/view", view, methods=["GET"]),
                   Route(f"{prefix}/upload/image", upload_image, methods=["POST"]),
                   WebSocketRoute(f"{prefix}/ws", websocket)]
    app = Starlette(routes=routes)
    app.state.emulator = state if state is not None else ComfyUIEmulatorState()
    return app
