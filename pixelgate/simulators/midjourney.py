"""Strict loopback emulator of a midjourney-proxy (novicezk / trueai / mj-plus, ``/mj/*``).

Authority: ../shared/upstreams/midjourney-proxy.md. Serve it with
``tests.emulators.server.serve(create_app(state))`` in the tests, or in-process (see pixelgate.simulators); clients use the base URL (``/mj`` is
added by them), or ``<base>/mj-fast`` etc. for the speed-mode prefixes.

  POST /mj/submit/{imagine,change,simple-change,action,modal,blend,describe}
       -> HTTP 200 {"code", "description", "result", "properties"} for every business outcome
  GET  /mj/task/{id}/fetch, /mj/task/{id}/image-seed, /mj/task/list, /mj/task/queue
  POST /mj/task/list-by-condition (alias list-by-ids) {"ids": [...]}, /mj/task/{id}/cancel
  GET  /attachments/{task}/{name}: the "Discord CDN" behind imageUrl (no secret needed)

Tasks go NOT_START -> SUBMITTED -> IN_PROGRESS ("10%", "45%", "80%", with a preview
imageUrl) -> SUCCESS over ``state.duration`` seconds; each change is POSTed (the whole task)
to the task's notifyHook (else ``state.notify_hook``), de-duplicated by status:progress.

Choices where the reference is silent or unconfirmed:
* The secret is checked before everything else: wrong or missing -> HTTP 401, empty body.
  ``api_secret=None`` behaves as a proxy with no secret configured (no check).
* A prompt containing ``refuse_prompts_containing`` -> code 24 (the proxy's banned-word list).
  A malformed ``--ar``/``--aspect`` -> the task FAILS with "[Invalid parameter] Invalid value",
  as Midjourney itself refuses it after submission; other flags are not checked.
* Unknown JSON fields are ignored (Spring/Jackson default); malformed JSON -> HTTP 400 with
  Spring's error body. ``botType`` other than MID_JOURNEY/NIJI_JOURNEY -> code 4.
* An unknown id on fetch answers ``state.unknown_fetch``: "empty" (200, no body, novicezk),
  "null" (200 ``null``), "204" (trueai's ASP.NET answer to a null result) or "404" (404 with a
  code-3 body). ``vanish``/``vanish_next`` make a known task disappear the same ways.
* Grids are 2x2 tiles, each tile ``tile_long_side`` on its long side at the task's --ar;
  U# crops that tile and doubles it; the upscale-family buttons make single images again.
* Remix (``enableRemix`` on a variation/reroll/pan), CustomZoom and Inpaint (Vary Region)
  answer code 21 "Waiting for window confirm" with a MODAL task, continued by /submit/modal.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import random
import re
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

import httpx
import orjson
from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["MidjourneyEmulatorState", "RecordedRequest", "create_app"]

PREFIXES = ("", "/mj-fast", "/mj-turbo", "/mj-relax")
TIMELINE = ((0.1, "SUBMITTED", "0%"), (0.3, "IN_PROGRESS", "10%"), (0.55, "IN_PROGRESS", "45%"),
            (0.8, "IN_PROGRESS", "80%"), (1.0, "SUCCESS", "100%"))  # (fraction of duration, ...)
TERMINAL = ("SUCCESS", "FAILURE", "CANCEL")
DESCRIPTIONS = {1: "提交成功", 21: "任务已存在", 22: "排队中，前面还有{n}个任务", 23: "队列已满，请稍后尝试",
                24: "可能包含敏感词", 4: "参数错误", 3: "关联任务不存在或已失效", 9: "系统异常"}
BOT_TYPES = ("MID_JOURNEY", "NIJI_JOURNEY")
BLEND_RATIOS = {"PORTRAIT": (2, 3), "SQUARE": (1, 1), "LANDSCAPE": (3, 2)}
GONE = {"empty": (200, b""), "null": (200, b"null"), "204": (204, b""),
        "404": (404, orjson.dumps({"code": 3, "description": DESCRIPTIONS[3], "result": None}))}
# customId family -> (task action, waits for /submit/modal, output: a 2x2 grid or one image)
ACTIONS = (
    (re.compile(r"^MJ::JOB::upsample::(\d)::"), "UPSCALE", False, "single"),
    (re.compile(r"^MJ::JOB::variation::(\d)::"), "VARIATION", False, "grid"),
    (re.compile(r"^MJ::JOB::reroll::0::"), "REROLL", False, "grid"),
    (re.compile(r"^MJ::JOB::upsample_v\d+_2x_\w+::(\d)::"), "UPSCALE_HD", False, "single"),
    (re.compile(r"^MJ::JOB::(?:low|high)_variation::(\d)::"), "VARIATION", False, "grid"),
    (re.compile(r"^MJ::JOB::pan_(?:left|right|up|down)::(\d)::"), "PAN", False, "grid"),
    (re.compile(r"^MJ::Outpaint::\d+::(\d)::"), "ZOOM", False, "grid"),
    (re.compile(r"^MJ::CustomZoom::"), "ZOOM", True, "grid"),
    (re.compile(r"^MJ::Inpaint::(\d)::"), "INPAINT", True, "grid"),
    (re.compile(r"^MJ::Job::PicReader::(\d)$"), "IMAGINE", False, "grid"),
)
REMIXABLE = ("VARIATION", "REROLL", "PAN")
UPSCALED_BUTTONS = (  # what an upscaled image offers (customId template, label, emoji)
    ("MJ::JOB::upsample_v6_2x_subtle::1::{h}::SOLO", "Upscale (Subtle)", ""),
    ("MJ::JOB::upsample_v6_2x_creative::1::{h}::SOLO", "Upscale (Creative)", ""),
    ("MJ::JOB::low_variation::1::{h}::SOLO", "Vary (Subtle)", ""),
    ("MJ::JOB::high_variation::1::{h}::SOLO", "Vary (Strong)", ""), ("MJ::Inpaint::1::{h}::SOLO", "Vary (Region)", ""),
    ("MJ::Outpaint::50::1::{h}::SOLO", "Zoom Out 2x", ""), ("MJ::Outpaint::75::1::{h}::SOLO", "Zoom Out 1.5x", ""),
    ("MJ::CustomZoom::{h}", "Custom Zoom", ""), ("MJ::JOB::pan_left::1::{h}::SOLO", "", "⬅️"),
    ("MJ::JOB::pan_right::1::{h}::SOLO", "", "➡️"), ("MJ::JOB::pan_up::1::{h}::SOLO", "", "⬆️"),
    ("MJ::JOB::pan_down::1::{h}::SOLO", "", "⬇️"))
_AR = re.compile(r"(?:^|\s)--(?:ar|aspect)\s+(\S+)", re.I)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    json: Any  # the decoded body (data URLs kept whole), None for GETs


@dataclass
class Job:
    task: dict[str, Any]  # the task object exactly as fetch answers it
    base: str  # this emulator's URL, for imageUrl
    output: str  # "grid" | "single" | "describe"
    ratio: tuple[int, int] = (1, 1)
    parent: "Job | None" = None
    index: int = 1
    image: bytes | None = None  # the finished picture (describe: the uploaded image)
    ending: tuple[str, str] | None = None  # (FAILURE|CANCEL, failReason) instead of SUCCESS
    mask: tuple[bytes, str] | None = None  # Vary Region's maskBase64, once the modal is sent
    notified: str = ""


@dataclass
class MidjourneyEmulatorState:
    api_secret: str | None = "mj-emulator-secret"
    delay: float = 0.0
    duration: float = 0.3
    refuse_prompts_containing: str = "forbidden"
    queue_depth: int = 3
    tile_long_side: int = 128
    notify_hook: str | None = None
    unknown_fetch: str = "empty"
    requests: list[RecordedRequest] = field(default_factory=list)
    tasks: dict[str, Job] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    hooks: list[dict[str, Any]] = field(default_factory=list)  # every notifyHook POST made
    vanished: dict[str, str] = field(default_factory=dict)
    failures: deque = field(default_factory=deque)
    codes: deque = field(default_factory=deque)
    endings: deque = field(default_factory=deque)
    vanishing: deque = field(default_factory=deque)
    running: set = field(default_factory=set)

    def fail_next(self, status: int, body: Any = None, count: int = 1, path: str = "") -> None:
        """Answer the next ``count`` /mj requests whose path starts with ``path`` with HTTP
        ``status`` (default body: Spring Boot's error JSON; bytes are sent as they are)."""
        self.failures.extend([(status, body, path)] * count)

    def answer_next(self, code: int, count: int = 1) -> None:
        """Answer the next ``count`` valid submits with this code (21/22 still create the task;
        23/24/4/9/3 do not)."""
        self.codes.extend([code] * count)

    def fail_next_task(self, reason: str, count: int = 1, status: str = "FAILURE") -> None:
        """The next ``count`` tasks end in ``status`` (FAILURE or CANCEL) with this failReason."""
        self.endings.extend([(status, reason)] * count)

    def vanish(self, task_id: str, how: str = "null") -> None:
        """Forget a task now; fetch then answers as ``GONE[how]``."""
        self.tasks.pop(task_id, None)
        self.vanished[task_id] = how

    def vanish_next(self, how: str = "null", after: float = 0.1, count: int = 1) -> None:
        """The next ``count`` tasks vanish ``after`` seconds after their submission."""
        self.vanishing.extend([(how, after)] * count)

    def reset(self) -> None:
        for kept in (self.requests, self.hooks, self.failures, self.codes, self.endings, self.vanishing,
                     self.tasks, self.files, self.vanished):
            kept.clear()
        self.delay = 0.0


class Refusal(Exception):
    def __init__(self, code: int, description: str | None = None, status: int = 200, **properties: Any):
        super().__init__(description)
        self.code, self.status, self.properties = code, status, properties
        self.description = description or DESCRIPTIONS[code]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _vo(code: int, result: str | None, description: str | None = None, **properties: Any) -> Response:
    return _json({"code": code, "description": description or DESCRIPTIONS[code], "result": result,
                  "properties": properties})


def _spring_error(status: int, path: str) -> Response:
    return _json({"timestamp": datetime.now(timezone.utc).isoformat(), "status": status,
                  "error": HTTPStatus(status).phrase, "path": path}, status)


def _data_url(value: Any, what: str = "base64格式错误") -> tuple[bytes, str]:
    m = re.fullmatch(r"data:([\w.+-]+/[\w.+-]+);base64,(.+)", value or "", re.S) if isinstance(value, str) else None
    try:
        if m:
            return base64.b64decode(m.group(2), validate=True), m.group(1)
    except (binascii.Error, ValueError):
        pass
    raise Refusal(4, what)


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _grid(seed: str, ratio: tuple[int, int], long_side: int, preview: bool = False) -> bytes:
    rw, rh = ratio
    tw, th = (long_side, max(1, round(long_side * rh / rw))) if rw >= rh else (max(1, round(long_side * rw / rh)), long_side)
    img = Image.new("RGB", (2 * tw, 2 * th))
    draw = ImageDraw.Draw(img)
    for i in range(4):
        colour = tuple(hashlib.sha256(f"{seed}\0{i}".encode()).digest()[:3])
        x, y = (i % 2) * tw, (i // 2) * th
        draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=colour)
        draw.text((x + 4, y + 4), str(i + 1), fill=(255, 255, 255) if sum(colour) < 384 else (0, 0, 0))
    if preview:  # Discord shows a coarse picture while the job runs
        img = img.resize((max(1, tw // 4), max(1, th // 4))).resize(img.size)
    return _png(img)


def _tile(picture: bytes, index: int, whole: bool) -> bytes:
    img = Image.open(io.BytesIO(picture))
    if not whole:
        tw, th = img.width // 2, img.height // 2
        x, y = ((index - 1) % 2) * tw, ((index - 1) // 2) * th
        img = img.crop((x, y, x + tw, y + th))
    return _png(img.resize((img.width * 2, img.height * 2)))


def _button(custom_id: str, label: str = "", emoji: str = "", style: int = 2) -> dict[str, Any]:
    return {"customId": custom_id, "emoji": emoji, "label": label, "type": 2, "style": style}


def _buttons(job: Job, h: str) -> list[dict[str, Any]]:
    if job.output == "describe":
        return [_button(f"MJ::Job::PicReader::{i}", str(i)) for i in range(1, 5)] + [
            _button("MJ::Picread::Retry", emoji="🔄")]
    if job.output == "grid":
        return ([_button(f"MJ::JOB::upsample::{i}::{h}", f"U{i}") for i in range(1, 5)]
                + [_button(f"MJ::JOB::reroll::0::{h}::SOLO", emoji="🔄")]
                + [_button(f"MJ::JOB::variation::{i}::{h}", f"V{i}") for i in range(1, 5)])
    return [_button(custom.format(h=h), label, emoji) for custom, label, emoji in UPSCALED_BUTTONS]


def _store(state: MidjourneyEmulatorState, job: Job, name: str, data: bytes, mime: str = "image/png") -> str:
    state.files[f"{job.task['id']}/{name}"] = (data, mime)
    return f"{job.base}/attachments/{job.task['id']}/{name}"


async def _notify(state: MidjourneyEmulatorState, job: Job) -> None:
    url = job.task["properties"].get("notifyHook") or state.notify_hook
    key = f"{job.task['status']}:{job.task['progress']}"
    if not url or key == job.notified:
        return
    job.notified, payload = key, dict(job.task)
    entry: dict[str, Any] = {"url": url, "task": payload}
    try:  # non-2xx answers are only logged, never retried (novicezk NotifyServiceImpl)
        async with httpx.AsyncClient(timeout=5) as client:
            entry["status_code"] = (await client.post(url, json=payload)).status_code
    except httpx.HTTPError as exc:
        entry["error"] = type(exc).__name__
    state.hooks.append(entry)


def _finish(state: MidjourneyEmulatorState, job: Job) -> None:
    t, now = job.task, int(time.time() * 1000)
    t["finishTime"] = now
    if job.ending:
        t["status"], t["failReason"], t["progress"] = job.ending[0], job.ending[1], ""
        return
    if job.output != "describe":  # describe keeps the uploaded image as its imageUrl
        job.image = (_tile(job.parent.image, job.index, job.parent.output != "grid") if job.output == "single"
                     else _grid(t["id"] + t["prompt"], job.ratio, state.tile_long_side))
        t["imageUrl"] = _store(state, job, f"{job.output}_0.png", job.image)
    t["buttons"] = _buttons(job, t["properties"]["messageHash"])
    t["status"], t["progress"] = "SUCCESS", "100%"


async def _run(state: MidjourneyEmulatorState, job: Job) -> None:
    loop, t = asyncio.get_running_loop(), job.task
    start, duration = loop.time(), state.duration
    for frac, status, progress in TIMELINE:
        await asyncio.sleep(max(0.0, start + frac * duration - loop.time()))
        if t["id"] not in state.tasks or t["status"] in TERMINAL + ("MODAL",):
            return  # vanished, cancelled or waiting for a modal meanwhile
        if status == "SUCCESS" or (status == "IN_PROGRESS" and job.ending):
            _finish(state, job)
        else:
            t["status"], t["progress"] = status, progress
            if status == "IN_PROGRESS" and not t["startTime"]:
                t["startTime"] = int(time.time() * 1000)
                if job.output == "grid":
                    t["imageUrl"] = _store(state, job, "preview.png", _grid(t["id"] + t["prompt"], job.ratio,
                                                                               state.tile_long_side, True))
        await _notify(state, job)
        if t["status"] in TERMINAL:
            return


async def _vanish_later(state: MidjourneyEmulatorState, task_id: str, how: str, after: float) -> None:
    await asyncio.sleep(after)
    state.vanish(task_id, how)


def _spawn(state: MidjourneyEmulatorState, coro) -> None:
    task = asyncio.create_task(coro)
    state.running.add(task)
    task.add_done_callback(state.running.discard)


def _new_job(request: Request, state: MidjourneyEmulatorState, body: dict, action: str, prompt: str,
             description: str, output: str = "grid", **kwargs: Any) -> Job:
    task_id = f"{int(time.time() * 1000)}{random.randint(100, 999)}"
    while task_id in state.tasks or task_id in state.vanished:
        task_id = f"{int(time.time() * 1000)}{random.randint(100, 999)}"
    now, host = int(time.time() * 1000), request.headers.get("host", "127.0.0.1")
    props = {"notifyHook": body.get("notifyHook") or state.notify_hook, "discordInstanceId": "1118138338562560102",
             "messageId": str(random.randint(10**17, 10**18)), "messageHash": hashlib.md5(task_id.encode()).hexdigest(),
             "finalPrompt": prompt, "botType": body.get("botType") or "MID_JOURNEY"}
    task = {"id": task_id, "action": action, "status": "NOT_START", "prompt": prompt, "promptEn": prompt,
            "description": description.replace("{id}", task_id), "state": body.get("state"), "submitTime": now,
            "startTime": 0, "finishTime": 0, "progress": "0%", "imageUrl": None, "failReason": None,
            "buttons": [], "properties": props, "botType": props["botType"],
            "mode": request.scope["path"].split("/mj/")[0].lstrip("/").removeprefix("mj-").upper() or "FAST"}
    return Job(task, f"{request.url.scheme}://{host}", output, **kwargs)


def _submit(state: MidjourneyEmulatorState, job: Job, code: int = 1, modal: bool = False) -> Response:
    """Queue a new job and answer for it (code 22 and 21 still create it)."""
    if state.endings and not job.ending:
        job.ending = state.endings.popleft()
    state.tasks[job.task["id"]] = job
    if state.vanishing:
        how, after = state.vanishing.popleft()
        _spawn(state, _vanish_later(state, job.task["id"], how, after))
    if modal:
        job.task["status"] = "MODAL"
        _spawn(state, _notify(state, job))
        return _vo(21, job.task["id"], "Waiting for window confirm", remix=True, status="MODAL")
    _spawn(state, _run(state, job))
    if code == 22:
        return _vo(22, job.task["id"], DESCRIPTIONS[22].format(n=state.queue_depth), numberOfQueues=state.queue_depth)
    if code == 21:
        return _vo(21, job.task["id"], status=job.task["status"], imageUrl=None)
    return _vo(1, job.task["id"], discordInstanceId=job.task["properties"]["discordInstanceId"])


def _forced(state: MidjourneyEmulatorState, prompt: str = "") -> int:
    code = state.codes.popleft() if state.codes else 1
    if code == 24:
        raise Refusal(24, promptEn=prompt, bannedWord=state.refuse_prompts_containing)
    if code in (3, 4, 9, 23):
        raise Refusal(code, **({"numberOfQueues": state.queue_depth} if code == 23 else {}))
    return code


def _check_common(body: dict) -> None:
    if body.get("botType") is not None and body["botType"] not in BOT_TYPES:
        raise Refusal(4, "botType参数错误")


async def imagine(request: Request, state: MidjourneyEmulatorState, body: dict) -> Response:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise Refusal(4, "prompt不能为空")
    _check_common(body)
    images = list(body.get("base64Array") or []) + ([body["base64"]] if body.get("base64") else [])
    for item in images:
        _data_url(item)
    needle = state.refuse_prompts_containing
    if needle and needle.lower() in prompt.lower():
        raise Refusal(24, promptEn=prompt, bannedWord=needle)
    code = _forced(state, prompt)
    m = _AR.search(prompt)
    wh = re.fullmatch(r"([1-9]\d*):([1-9]\d*)", m.group(1)) if m else None
    job = _new_job(request, state, body, "IMAGINE", prompt, "/imagine " + prompt,
                   ratio=(int(wh.group(1)), int(wh.group(2))) if wh else (1, 1))
    if m and not wh:  # Midjourney, not the proxy, refuses it: the task fails after submission
        job.ending = ("FAILURE", "[Invalid parameter] Invalid value")
    return _submit(state, job, code)


def _parent(state: MidjourneyEmulatorState, task_id: Any) -> Job:
    if not task_id:
        raise Refusal(4, "taskId不能为空")
    parent = state.tasks.get(str(task_id))
    if parent is None:
        raise Refusal(3)
    if parent.task["status"] != "SUCCESS":
        raise Refusal(4, "关联任务状态错误")
    return parent


def _child(request: Request, state: MidjourneyEmulatorState, body: dict, parent: Job, custom_id: str,
           description: str) -> Response:
    if custom_id not in {b["customId"] for b in parent.task["buttons"]}:
        raise Refusal(4, "customId参数错误")
    for pattern, action, modal, output in ACTIONS:
        if m := pattern.search(custom_id):
            break
    else:
        raise Refusal(4, "不支持的操作: " + custom_id)
    index = int(m.group(1)) if m.groups() else 1
    for job in state.tasks.values():  # the same upscale twice: the existing task
        if (output == "single" and job.parent is parent and job.task["properties"].get("customId") == custom_id
                and job.task["status"] != "FAILURE"):
            return _vo(21, job.task["id"], status=job.task["status"], imageUrl=job.task["imageUrl"])
    _check_common(body)
    code = _forced(state, parent.task["prompt"])
    prompt = parent.task["properties"]["finalPrompt"]
    if action == "IMAGINE":  # a describe suggestion
        prompt = parent.task["properties"]["finalPrompt"].split("\n\n")[index - 1].split(" ", 1)[1]
    modal = modal or (bool(body.get("enableRemix")) and action in REMIXABLE)
    job = _new_job(request, state, body, action, prompt, description, output, ratio=parent.ratio,
                   parent=parent, index=index)
    job.task["properties"]["customId"] = custom_id
    return _submit(state, job, code, modal)


async def change(request: Request, state: MidjourneyEmulatorState, body: dict) -> Response:
    action, index = body.get("action"), body.get("index")
    if action not in ("UPSCALE", "VARIATION", "REROLL"):
        raise Refusal(4, "action参数错误")
    if action != "REROLL" and index not in (1, 2, 3, 4):
        raise Refusal(4, "index参数错误")
    parent = _parent(state, body.get("taskId"))
    h = parent.task["properties"]["messageHash"]
    custom_id = {"UPSCALE": f"MJ::JOB::upsample::{index}::{h}", "VARIATION": f"MJ::JOB::variation::{index}::{h}",
                 "REROLL": f"MJ::JOB::reroll::0::{h}::SOLO"}[action]
    label = "R" if action == "REROLL" else f"{action[0]}{index}"
    return _child(request, state, body, parent, custom_id, f"/up {parent.task['id']} {label}")


async def simple_change(request: Request, state: MidjourneyEmulatorState, body: dict) -> Response:
    m = re.fullmatch(r"\s*(\d+)\s+(?:([UV])([1-4])|R)\s*", str(body.get("content") or ""))
    if not m:
        raise Refusal(4, "content参数错误")
    action = {"U": "UPSCALE", "V": "VARIATION", None: "REROLL"}[m.group(2)]
    index = int(m.group(3)) if m.group(3) else None
    return await change(request, state, {**body, "taskId": m.group(1), "action": action, "index": index})


async def action(request: Request, state: MidjourneyEmulatorState, body: dict) -> Response:
    if not body.get("customId"):
        raise Refusal(4, "customId不能为空")
    parent = _parent(state, body.get("taskId"))
    return _child(request, state, body, parent, body["customId"], f"/action {parent.task['id']} {body['customId']}")


async def modal(request: Request, state: MidjourneyEmulatorState, body: dict) -> Response:
    if not body.get("taskId"):
        raise Refusal(4, "taskId不能为空")
    job = state.tasks.get(str(body["taskId"]))
    if job is None:
        raise Refusal(3, status=404)  # trueai answers an unknown modal task with HTTP 404
    if job.task["status"] != "MODAL":
        raise Refusal(4, "任务状态错误")
    if job.task["action"] == "INPAINT":
        job.mask = _data_url(body.get("maskBase64"), "maskBase64格式错误")
    elif job.task["properties"]["customId"].startswith("MJ::CustomZoom") and not (body.get("prompt") or "").strip():
        raise Refusal(4, "prompt不能为空")
    if body.get("prompt"):
        job.task["prompt"] = job.task["promptEn"] = job.task["properties"]["finalPrompt"] = body["prompt"]
    job.task["status"] = "NOT_START"
    _spawn(state, _run(state, job))
    return _vo(1, job.task["id"])


async def blend(request: Request, state: MidjourneyEmulatorState, body: dict) -> Response:
    images = body.get("base64Array")
    if not isinstance(images, list) or not 2 <= len(images) <= 5:
        raise Refusal(4, "base64List参数错误")
    for item in images:
        _data_url(item)
    dims = body.get("dimensions") or "SQUARE"
    if dims not in BLEND_RATIOS:
        raise Refusal(4, "dimensions参数错误")
    _check_common(body)
    code = _forced(state)
    job = _new_job(request, state, body, "BLEND", "", "/blend {id} " + str(len(images)), ratio=BLEND_RATIOS[dims])
    return _submit(state, job, code)


async def describe(request: Request, state: MidjourneyEmulatorState, body: dict) -> Response:
    link = body.get("link")
    if not body.get("base64") and not link:
        raise Refusal(4, "base64不能为空")
    data, mime = _data_url(body["base64"]) if body.get("base64") else (None, None)
    _check_common(body)
    code = _forced(state)
    job = _new_job(request, state, body, "DESCRIBE", "", "/describe {id}.png", "describe", image=data)
    words = hashlib.sha256(data or link.encode()).hexdigest()
    prompts = "\n\n".join(f"{n} a picture in tones of #{words[i * 6:i * 6 + 6]}, studio light --ar 1:1"
                          for i, n in enumerate(("1️⃣", "2️⃣", "3️⃣", "4️⃣")))
    job.task.update(prompt=prompts, promptEn=prompts)
    job.task["properties"]["finalPrompt"] = prompts
    job.task["imageUrl"] = _store(state, job, "source." + mime.split("/")[-1], data, mime) if data else link
    return _submit(state, job, code)


async def fetch(request: Request, state: MidjourneyEmulatorState, body: Any) -> Response:
    task_id = request.path_params["id"]
    job = state.tasks.get(task_id)
    if job is None:
        status, raw = GONE[state.vanished.get(task_id, state.unknown_fetch)]
        return Response(raw, status, media_type="application/json" if raw else None)
    return _json(job.task)


async def image_seed(request: Request, state: MidjourneyEmulatorState, body: Any) -> Response:
    job = state.tasks.get(request.path_params["id"])
    if job is None:
        raise Refusal(3, status=404)
    if job.task["status"] != "SUCCESS":
        raise Refusal(4, "关联任务状态错误", status=400)
    return _vo(1, str(int(hashlib.sha256(job.task["id"].encode()).hexdigest()[:8], 16)), "成功")


async def cancel(request: Request, state: MidjourneyEmulatorState, body: Any) -> Response:
    job = state.tasks.get(request.path_params["id"])
    if job is not None and job.task["status"] not in TERMINAL:
        job.task.update(status="CANCEL", failReason="取消任务", progress="", finishTime=int(time.time() * 1000))
        await _notify(state, job)
    return Response(status_code=200)


async def list_by_condition(request: Request, state: MidjourneyEmulatorState, body: Any) -> Response:
    ids = body.get("ids") if isinstance(body, dict) else None
    return _json([state.tasks[i].task for i in ids or [] if isinstance(i, str) and i in state.tasks])


async def list_tasks(request: Request, state: MidjourneyEmulatorState, body: Any) -> Response:
    jobs = sorted(state.tasks.values(), key=lambda j: -j.task["submitTime"])
    if request.url.path.endswith("/queue"):
        jobs = [j for j in jobs if j.task["status"] not in TERMINAL]
    return _json([j.task for j in jobs[:100]])


def _endpoint(handler):
    """Record, delay, secret check, fail_next, JSON decode, then the handler; Refusals become
    the proxy's {code, description, result, properties} answer."""
    async def endpoint(request: Request) -> Response:
        state: MidjourneyEmulatorState = request.app.state.emulator
        raw, path = await request.body(), request.url.path
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            body = None
        state.requests.append(RecordedRequest(request.method, path, {k.lower(): v for k, v in request.headers.items()},
                                              body if raw.strip() else None))
        if state.delay:
            await asyncio.sleep(state.delay)
        if state.api_secret and request.headers.get("mj-api-secret") != state.api_secret:
            return Response(status_code=401)  # novicezk ApiAuthorizeInterceptor: no body at all
        for i, (status, fail_body, prefix) in enumerate(state.failures):
            if path.startswith(prefix):
                del state.failures[i]
                if fail_body is None:
                    return _spring_error(status, path)
                return Response(fail_body if isinstance(fail_body, bytes) else orjson.dumps(fail_body), status,
                                media_type="application/json")
        if body is None or (request.method == "POST" and not isinstance(body, dict)):
            return _spring_error(400, path)
        try:
            return await handler(request, state, body)
        except Refusal as exc:
            return _json({"code": exc.code, "description": exc.description, "result": None,
                          "properties": exc.properties}, exc.status)
    return endpoint


async def attachment(request: Request) -> Response:
    entry = request.app.state.emulator.files.get(f"{request.path_params['task']}/{request.path_params['name']}")
    if entry is None:
        return Response(b"This content is no longer available.", 404, media_type="text/plain")
    return Response(entry[0], media_type=entry[1])


def create_app(state: MidjourneyEmulatorState | None = None) -> Starlette:
    table = [("POST", "/submit/imagine", imagine), ("POST", "/submit/change", change),
             ("POST", "/submit/simple-change", simple_change), ("POST", "/submit/action", action),
             ("POST", "/submit/modal", modal), ("POST", "/submit/blend", blend),
             ("POST", "/submit/describe", describe), ("GET", "/task/{id}/fetch", fetch),
             ("GET", "/task/{id}/image-seed", image_seed), ("POST", "/task/{id}/cancel", cancel),
             ("POST", "/task/list-by-condition", list_by_condition), ("POST", "/task/list-by-ids", list_by_condition),
             ("GET", "/task/list", list_tasks), ("GET", "/task/queue", list_tasks)]
    routes = [Route(f"{prefix}/mj{path}", _endpoint(fn), methods=[method])
              for prefix in PREFIXES for method, path, fn in table]
    app = Starlette(routes=routes + [Route("/attachments/{task}/{name}", attachment, methods=["GET"])])
    app.state.emulator = state if state is not None else MidjourneyEmulatorState()
    return app
