"""POST /mj/submit/*: each submit is a gateway task (services.tasks) answered at once with the
proxy's result code; follow-ups (change, action, modal) name the gateway's task and run on the
channel that holds its upstream job. Also the follow-ups the console's buttons make."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Request, Response

from pixelgate.db.models import Task
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.errors import InvalidRequest, ModelNotFound, NotFound
from pixelgate.providers.midjourney_flags import PARAM
from pixelgate.services import idempotency
from pixelgate.services.engine import RequestContext
from pixelgate.surfaces._answers import MidjourneyResult
from pixelgate.surfaces._body import parsed
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import body, json, ok
from pixelgate.surfaces._route import surface_route
from pixelgate.surfaces.deps import ContextDep, ServicesDep
from pixelgate.surfaces.midjourney.wire import (ERRORS, MODES, PROVIDER, ActionBody, BlendBody, CallerDep, ChangeBody,
                                                DescribeBody, ImagineBody, ModalBody, SimpleChangeBody, SubmitBody,
                                                path_mode, render_error, render_task, task_status)

router = APIRouter(route_class=surface_route("midjourney", render_error), tags=["Midjourney"])
SUBMITTED = {**ok(MidjourneyResult, description="The outcome, by code: 1 submitted, else refused"), **ERRORS()}
BUTTONS = ((r"MJ::JOB::upsample_v", "UPSCALE_HD"), (r"MJ::JOB::upsample::", "UPSCALE"),
           (r"MJ::JOB::(?:low_|high_)?variation::", "VARIATION"), (r"MJ::JOB::reroll::", "REROLL"),
           (r"MJ::JOB::pan_", "PAN"), (r"MJ::(?:Outpaint|CustomZoom)::", "ZOOM"))
"""customId family -> the task's action, shown until the upstream's first answer says it."""


def submits(path: str, summary: str, model: type[SubmitBody]):
    return router.post(f"/mj/submit/{path}", summary=summary, responses=SUBMITTED, openapi_extra=body(json(model)))


def _mode(request: Request, prompt: str | None) -> str:
    """The job's speed mode: the path's, else the prompt's --fast / --turbo / --relax, else fast. A
    flag that says otherwise than the path is refused: the mode billed is the mode the job runs in."""
    flags = {m.group(1).upper() for m in PARAM.finditer(prompt or "")} & set(MODES.values())
    path = path_mode(request)
    if len(flags) > 1:
        raise InvalidRequest("The prompt names more than one speed mode (--fast, --turbo, --relax).", field="prompt")
    if path and flags and flags != {path}:
        raise InvalidRequest(f"The prompt's --{flags.pop().lower()} contradicts the path's speed mode {path}.",
                             field="prompt")
    return path or next(iter(flags), "FAST")


async def _model(services, ctx: RequestContext) -> str:
    """The model name a Midjourney channel serves ("midjourney" or "mj" first)."""
    served = [m for m, provider in await services.directory.models() if provider == PROVIDER]
    for name in ("midjourney", "mj", *served):
        if name in served:
            return name
    ctx.model = "midjourney"  # the request log (and usage by model) names what was asked
    raise ModelNotFound("No channel serves Midjourney.", field="model")


async def _submit(request: Request, services, ctx: RequestContext, body: SubmitBody, req: ImageRequest,
                  client_input: dict, meta: dict) -> Response:
    hook = body.notifyHook
    if hook is not None:
        await services.fetcher.check_destination(hook, "notifyHook")
    req.provider, req.delivery = PROVIDER, Delivery.URL
    if body.botType and req.operation is not Operation.MODAL:
        req.extras["botType"] = body.botType
    req.extras["mode"] = _mode(request, req.prompt)
    task = await services.tasks.submit(
        req, ctx, f"midjourney/{req.model}", {**client_input, "state": body.state}, hook,
        ["status", "completed"] if hook else None, meta=meta, idempotency_key=idempotency.key_from(request.headers))
    # the upstream answered with a job a task follows (a client's repeat is answered as the first was)
    known = task.request_id != ctx.request_id and not ctx.replayed
    if known and req.operation is not Operation.MODAL:  # a modal goes on with its own task
        image_url = render_task(task, str(request.base_url), services)["imageUrl"]
        return JSONResponse({"code": 21, "description": "任务已存在", "result": task.id,
                             "properties": {"status": task_status(task), "imageUrl": image_url}})
    answer = {} if known else (task.meta or {}).get("submit") or {}
    code = answer.get("code", 1)
    properties = {k: answer[k] for k in ("numberOfQueues",) if k in answer}
    if (task.meta or {}).get("status") == "MODAL":
        properties.update(status="MODAL", remix=True)
    description = "提交成功" if code == 1 else answer.get("description") or ""
    return JSONResponse({"code": code, "description": description, "result": task.id, "properties": properties})


@submits("imagine", "Imagine: images from a prompt", ImagineBody)
async def imagine(request: Request, _: CallerDep, body: Annotated[ImagineBody, parsed(ImagineBody, {})],
                  services: ServicesDep, ctx: ContextDep) -> Response:
    if not body.prompt.strip():
        raise InvalidRequest("prompt不能为空: the prompt is empty.", field="prompt")
    sources = [*(body.base64Array or []), *([body.base64] if body.base64 else [])]
    images = [await services.fetcher.image(v, f"base64Array[{i}]") for i, v in enumerate(sources)]
    req = ImageRequest(Operation.EDIT if images else Operation.GENERATE, await _model(services, ctx),
                       prompt=body.prompt, images=images)
    return await _submit(request, services, ctx, body, req, {"prompt": body.prompt, "images": len(images)},
                         {"action": "IMAGINE", "description": "/imagine " + body.prompt})


@submits("blend", "Blend 2-5 images", BlendBody)
async def blend(request: Request, _: CallerDep, body: Annotated[BlendBody, parsed(BlendBody, {})],
                services: ServicesDep, ctx: ContextDep) -> Response:
    if not 2 <= len(body.base64Array) <= 5:
        raise InvalidRequest(f"base64Array must hold 2 to 5 images; got {len(body.base64Array)}.",
                             field="base64Array")
    images = [await services.fetcher.image(v, f"base64Array[{i}]") for i, v in enumerate(body.base64Array)]
    req = ImageRequest(Operation.BLEND, await _model(services, ctx), images=images,
                       extras={"dimensions": body.dimensions} if body.dimensions else {})
    return await _submit(request, services, ctx, body, req, {"images": len(images), "dimensions": body.dimensions},
                         {"action": "BLEND"})


@submits("describe", "Describe an image", DescribeBody)
async def describe(request: Request, _: CallerDep, body: Annotated[DescribeBody, parsed(DescribeBody, {})],
                   services: ServicesDep, ctx: ContextDep) -> Response:
    if bool(body.base64) == bool(body.link):
        raise InvalidRequest("Give the image as 'base64' (a data URL) or as 'link', one of them.", field="base64")
    image = await services.fetcher.image(body.base64 or body.link or "", "base64" if body.base64 else "link")
    req = ImageRequest(Operation.DESCRIBE, await _model(services, ctx), images=[image])
    return await _submit(request, services, ctx, body, req, {"link": body.link}, {"action": "DESCRIBE"})


async def parent_task(services, key_id: int, task_id: str, live: bool = False) -> tuple[Task, str]:
    """The key's task a follow-up acts on, and the upstream's id for it (also the console's U/V)."""
    try:
        task = await services.tasks.get(task_id, key_id)
    except NotFound:
        raise NotFound(f"关联任务不存在或已失效: no task '{task_id}'.", field="taskId") from None
    channel = await services.directory.channel(task.channel) if task.channel else None
    if channel is None or channel.provider != PROVIDER or len(task.jobs) != 1 or not task.jobs[0]["id"]:
        raise InvalidRequest(f"Task '{task_id}' is not one Midjourney job.", field="taskId")
    expected = "MODAL" if live else "SUCCESS"
    if task_status(task) != expected:
        raise InvalidRequest(f"关联任务状态错误: task '{task_id}' is {task_status(task)}, not {expected}.",
                             field="taskId")
    return task, task.jobs[0]["id"]


def follow_up_request(parent: Task, upstream_id: str, op: Operation, extras: dict,
                      action: str) -> tuple[ImageRequest, dict]:
    """The request and task meta of a follow-up on `parent` (its channel holds the job)."""
    req = ImageRequest(op, parent.model, channel=parent.channel,
                       extras={"taskId": upstream_id, **{k: v for k, v in extras.items() if v is not None}})
    return req, {"action": action, "parent": {"id": parent.id, "job": upstream_id}}


def button_request(parent: Task, upstream_id: str, custom_id: str, enable_remix: bool | None = None,
                   strong: bool | None = None) -> tuple[ImageRequest, dict]:
    """The follow-up a button of a finished task asks for (U1, V2, reroll...)."""
    buttons = {b.get("customId") for b in (parent.meta or {}).get("buttons") or [] if isinstance(b, dict)}
    if custom_id not in buttons:
        raise InvalidRequest(f"customId参数错误: '{custom_id}' is not a button of task '{parent.id}'.",
                             field="customId")
    name = next((a for pattern, a in BUTTONS if re.match(pattern, custom_id)), "ACTION")
    return follow_up_request(parent, upstream_id, Operation.ACTION,
                             {"customId": custom_id, "enableRemix": enable_remix, "strong": strong}, name)


@submits("change", "Upscale, vary or reroll a task", ChangeBody)
async def change(request: Request, caller: CallerDep, body: Annotated[ChangeBody, parsed(ChangeBody, {})],
                 services: ServicesDep, ctx: ContextDep) -> Response:
    if body.action != "REROLL" and body.index is None:
        raise InvalidRequest(f"index (1-4) is required for {body.action}.", field="index")
    parent, upstream_id = await parent_task(services, caller.key_id, body.taskId)
    index = body.index if body.action != "REROLL" else None
    req, meta = follow_up_request(parent, upstream_id, Operation.CHANGE, {"action": body.action, "index": index},
                                  body.action)
    return await _submit(request, services, ctx, body, req,
                         {"taskId": parent.id, "action": body.action, "index": index}, meta)


@submits("simple-change", "Change by a short command (\"<id> U1\")", SimpleChangeBody)
async def simple_change(request: Request, caller: CallerDep,
                        body: Annotated[SimpleChangeBody, parsed(SimpleChangeBody, {})], services: ServicesDep,
                        ctx: ContextDep) -> Response:
    m = re.fullmatch(r"\s*(\S+)\s+(?:([UV])([1-4])|R)\s*", body.content)
    if not m:
        raise InvalidRequest("content must be '<taskId> U1..U4', '<taskId> V1..V4' or '<taskId> R'.",
                             field="content")
    action = {"U": "UPSCALE", "V": "VARIATION", None: "REROLL"}[m.group(2)]
    return await change(request, caller, ChangeBody(taskId=m.group(1), action=action,
                                                    index=int(m.group(3)) if m.group(3) else None,
                                                    **body.model_dump(include={"notifyHook", "state", "botType"})),
                        services, ctx)


@submits("action", "Press a button of a task", ActionBody)
async def action(request: Request, caller: CallerDep, body: Annotated[ActionBody, parsed(ActionBody, {})],
                 services: ServicesDep, ctx: ContextDep) -> Response:
    parent, upstream_id = await parent_task(services, caller.key_id, body.taskId)
    req, meta = button_request(parent, upstream_id, body.customId, body.enableRemix, body.strong)
    return await _submit(request, services, ctx, body, req, {"taskId": parent.id, "customId": body.customId}, meta)


@submits("modal", "Answer a task waiting in MODAL", ModalBody)
async def modal(request: Request, caller: CallerDep, body: Annotated[ModalBody, parsed(ModalBody, {})],
                services: ServicesDep, ctx: ContextDep) -> Response:
    target, upstream_id = await parent_task(services, caller.key_id, body.taskId, live=True)
    mask = body.maskBase64
    if mask:  # checked here; the upstream takes a data URL
        image = await services.fetcher.image(mask, "maskBase64")
        mask = mask if mask.startswith("data:") else f"data:{image.mime};base64,{mask}"
    req = ImageRequest(Operation.MODAL, target.model, prompt=body.prompt, channel=target.channel,
                       extras={"taskId": upstream_id, **({"maskBase64": mask} if mask else {})})
    return await _submit(request, services, ctx, body, req, {"taskId": target.id, "prompt": body.prompt}, {})
