"""The midjourney-proxy API (novicezk / trueai / mj-plus, as relays such as new-api expose it), for
clients written against it: the third source document's `/mj` section. Authority for the shapes:
../shared/upstreams/midjourney-proxy.md.

  POST /mj/submit/imagine        {"prompt", "base64Array"?: [data URL], "base64"?, "botType"?,
                                  "notifyHook"?, "state"?}
  POST /mj/submit/blend          {"base64Array": [2-5 data URLs], "dimensions"?}
  POST /mj/submit/describe       {"base64"} | {"link"}
  POST /mj/submit/change         {"taskId", "action": UPSCALE|VARIATION|REROLL, "index"?}
  POST /mj/submit/simple-change  {"content": "<taskId> U1" | "<taskId> V2" | "<taskId> R"}
  POST /mj/submit/action         {"taskId", "customId"}        (a button of the task)
  POST /mj/submit/modal          {"taskId", "prompt"?, "maskBase64"?}   (a task in status MODAL)
      -> HTTP 200 {"code", "description", "result": <task id>, "properties"}: 1 submitted,
         21 exists (the existing task) or waits for a modal, 22 queued, 23 queue full,
         24 banned prompt, 3 no such task, 4 invalid request, 9 any other failure
  GET  /mj/task/{id}/fetch               the task {id, action, status, progress, imageUrl, ...};
                                          404 with code 3 for an unknown id (also below)
  GET  /mj/task/{id}/image-seed          {"code": 1, "description": "成功", "result": "<seed>"},
                                          asked of the channel that made the image
  POST /mj/task/{id}/cancel              {"code": 1, ...}: the task is CANCEL and refunded; code 4
                                          when it had finished
  POST /mj/task/list-by-condition {"ids"} the caller's tasks among them, in that order
  GET  /mj/task/list, /mj/task/queue     the caller's newest 100 tasks of this API (queue: unfinished)

Every route is also served under the speed-mode prefixes `/mj-fast/mj`, `/mj-turbo/mj` and
`/mj-relax/mj` (new-api's `/:mode/mj`; the plain `/mj` is fast). A prompt's --fast / --turbo /
--relax flag sets the mode under the plain `/mj`. The mode goes upstream as the proxy's own prefix
and is the task's `mode`, priced as the `speed` dimension.

Every submit is a gateway task (services.tasks): ids are the gateway's, the poller follows the
upstream job, images (also the preview while running) are stored and served by the gateway, and
the client's notifyHook gets the task at each change of status and progress. Follow-ups name the
gateway's task; the upstream gets its own task id, on the channel that holds it. Prompt flags are
checked before anything is sent upstream (on every API: Midjourney's Capabilities.check_prompt).
Unknown JSON fields are ignored, as the proxies do.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Callable, Literal

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from pixelgate.db.models import Task
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.errors import (GatewayError, InvalidRequest, ModelNotFound, NotFound, PayloadTooLarge,
                              Unauthorized, UpstreamContentFiltered)
from pixelgate.providers.midjourney_flags import PARAM
from pixelgate.services import idempotency
from pixelgate.services.storage import file_name
from pixelgate.services.tasks import aware
from pixelgate.surfaces._answers import MidjourneyResult, MidjourneyTask
from pixelgate.surfaces._route import authenticate, context, surface_route, task_cost
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import Errors, ok

PROVIDER = "midjourney"
MAX_LISTED = 500
RECENT = 100  # /task/list and /task/queue, as trueai lists its newest 100
MODES = {"mj-fast": "FAST", "mj-turbo": "TURBO", "mj-relax": "RELAX"}
"""Speed-mode path prefixes -> the mode."""
TASK_STATUS = {"succeeded": "SUCCESS", "failed": "FAILURE", "canceled": "CANCEL"}
RUNNING = ("NOT_START", "SUBMITTED", "IN_PROGRESS", "MODAL")
ACTION_BY_OPERATION = {Operation.GENERATE: "IMAGINE", Operation.EDIT: "IMAGINE", Operation.BLEND: "BLEND",
                       Operation.DESCRIBE: "DESCRIBE"}
BUTTONS = ((r"MJ::JOB::upsample_v", "UPSCALE_HD"), (r"MJ::JOB::upsample::", "UPSCALE"),
           (r"MJ::JOB::(?:low_|high_)?variation::", "VARIATION"), (r"MJ::JOB::reroll::", "REROLL"),
           (r"MJ::JOB::pan_", "PAN"), (r"MJ::(?:Outpaint|CustomZoom)::", "ZOOM"))
"""customId family -> the task's action, shown until the upstream's first answer says it."""


# -- errors: business outcomes are HTTP 200 with a result code --

def result_code(exc: GatewayError) -> int:
    if isinstance(exc, UpstreamContentFiltered):
        return 24
    if exc.status == 429:
        return 23  # the upstream's queue, or this gateway's rate limits: retry later
    if isinstance(exc, NotFound) and not isinstance(exc, ModelNotFound):
        return 3
    return 4 if exc.status < 500 else 9


def render_error(exc: GatewayError) -> Response:
    body = {"code": result_code(exc), "description": exc.message, "result": None, "properties": {}}
    return JSONResponse(body, status_code=401 if isinstance(exc, Unauthorized) else 200)


router = APIRouter(route_class=surface_route("midjourney", render_error), tags=["Midjourney"])
ERRORS = Errors(MidjourneyResult, always=(401,), notes={404: "No such task (code 3)"})
SUBMITTED = {**ok(MidjourneyResult, description="The outcome, by code: 1 submitted, else refused"), **ERRORS()}
LISTED = {**ok(([MidjourneyTask], MidjourneyResult), description="The tasks; or a refusal, by code"), **ERRORS()}


def route(method: str, path: str, **options: Any) -> Callable:
    """An /mj route, also under a speed-mode prefix (`/{mode}/mj/...`, checked by _authenticate)."""
    def register(endpoint: Callable) -> Callable:
        router.add_api_route("/mj" + path, endpoint, methods=[method], **options)
        router.add_api_route("/{mode}/mj" + path, endpoint, methods=[method], include_in_schema=False)
        return endpoint
    return register


# -- request bodies (as the proxy's DTOs name them) --

class SubmitBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the proxies (Jackson) ignore unknown fields

    notifyHook: StrictStr | None = None
    state: StrictStr | None = None
    botType: Literal["MID_JOURNEY", "NIJI_JOURNEY"] | None = None


class ImagineBody(SubmitBody):
    prompt: StrictStr
    base64Array: list[StrictStr] | None = None
    base64: StrictStr | None = None  # the legacy single image, as the third source document shows


class BlendBody(SubmitBody):
    base64Array: list[StrictStr]
    dimensions: Literal["PORTRAIT", "SQUARE", "LANDSCAPE"] | None = None


class DescribeBody(SubmitBody):
    base64: StrictStr | None = None
    link: StrictStr | None = None


class ChangeBody(SubmitBody):
    taskId: StrictStr
    action: Literal["UPSCALE", "VARIATION", "REROLL"]
    index: int | None = Field(default=None, ge=1, le=4)


class SimpleChangeBody(SubmitBody):
    content: StrictStr


class ActionBody(SubmitBody):
    taskId: StrictStr
    customId: StrictStr
    enableRemix: StrictBool | None = None
    strong: StrictBool | None = None


class ModalBody(SubmitBody):
    taskId: StrictStr
    prompt: StrictStr | None = None
    maskBase64: StrictStr | None = None


async def _json(request: Request) -> dict:
    raw = await request.body()
    if len(raw) > request.app.state.services.settings.max_body_bytes:
        raise PayloadTooLarge("The request body is too large.")
    try:
        data = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_json")
    return data


async def _body(request: Request, model: type[BaseModel]) -> Any:
    data = await _json(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidRequest(f"Invalid '{field}': {err['msg']}.", field=field) from None


async def _authenticate(request: Request):
    ctx = context(request)
    ctx.principal = await authenticate(request)
    _path_mode(request)  # an unknown prefix is refused on every route
    return ctx


def _path_mode(request: Request) -> str | None:
    """The mode the path's prefix names (`/mj-relax/mj/...`); None under the plain `/mj`."""
    prefix = request.path_params.get("mode")
    if prefix is not None and prefix not in MODES:
        raise InvalidRequest(f"Invalid speed mode '{prefix}': use /mj-fast/mj, /mj-turbo/mj or /mj-relax/mj "
                             "(or /mj, fast).", field="mode")
    return MODES.get(prefix)


def _mode(request: Request, prompt: str | None) -> str:
    """The job's speed mode: the path's, else the prompt's --fast / --turbo / --relax, else fast. A
    flag that says otherwise than the path is refused: the mode billed is the mode the job runs in."""
    flags = {m.group(1).upper() for m in PARAM.finditer(prompt or "")} & set(MODES.values())
    path = _path_mode(request)
    if len(flags) > 1:
        raise InvalidRequest("The prompt names more than one speed mode (--fast, --turbo, --relax).", field="prompt")
    if path and flags and flags != {path}:
        raise InvalidRequest(f"The prompt's --{flags.pop().lower()} contradicts the path's speed mode {path}.",
                             field="prompt")
    return path or next(iter(flags), "FAST")


async def _model(request: Request) -> str:
    """The model name a Midjourney channel serves ("midjourney" or "mj" first)."""
    served = [m for m, provider in await request.app.state.services.directory.models() if provider == PROVIDER]
    for name in ("midjourney", "mj", *served):
        if name in served:
            return name
    request.state.ctx.model = "midjourney"  # the request log (and usage by model) names what was asked
    raise ModelNotFound("No channel serves Midjourney.", field="model")


# -- submits --

async def _submit(request: Request, body: SubmitBody, req: ImageRequest, client_input: dict,
                  meta: dict) -> Response:
    ctx = context(request)
    services = request.app.state.services
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
        return JSONResponse({"code": 21, "description": "任务已存在", "result": task.id,
                             "properties": {"status": _status(task), "imageUrl": _image_url(task, request)}})
    answer = {} if known else (task.meta or {}).get("submit") or {}
    code = answer.get("code", 1)
    properties = {k: answer[k] for k in ("numberOfQueues",) if k in answer}
    if (task.meta or {}).get("status") == "MODAL":
        properties.update(status="MODAL", remix=True)
    description = "提交成功" if code == 1 else answer.get("description") or ""
    return JSONResponse({"code": code, "description": description, "result": task.id, "properties": properties})


@route("POST", "/submit/imagine", summary="Imagine: images from a prompt", responses=SUBMITTED)
async def imagine(request: Request) -> Response:
    await _authenticate(request)
    body: ImagineBody = await _body(request, ImagineBody)
    if not body.prompt.strip():
        raise InvalidRequest("prompt不能为空: the prompt is empty.", field="prompt")
    sources = [*(body.base64Array or []), *([body.base64] if body.base64 else [])]
    fetcher = request.app.state.services.fetcher
    images = [await fetcher.image(v, f"base64Array[{i}]") for i, v in enumerate(sources)]
    req = ImageRequest(Operation.EDIT if images else Operation.GENERATE, await _model(request),
                       prompt=body.prompt, images=images)
    return await _submit(request, body, req, {"prompt": body.prompt, "images": len(images)},
                         {"action": "IMAGINE", "description": "/imagine " + body.prompt})


@route("POST", "/submit/blend", summary="Blend 2-5 images", responses=SUBMITTED)
async def blend(request: Request) -> Response:
    await _authenticate(request)
    body: BlendBody = await _body(request, BlendBody)
    if not 2 <= len(body.base64Array) <= 5:
        raise InvalidRequest(f"base64Array must hold 2 to 5 images; got {len(body.base64Array)}.",
                             field="base64Array")
    fetcher = request.app.state.services.fetcher
    images = [await fetcher.image(v, f"base64Array[{i}]") for i, v in enumerate(body.base64Array)]
    req = ImageRequest(Operation.BLEND, await _model(request), images=images,
                       extras={"dimensions": body.dimensions} if body.dimensions else {})
    return await _submit(request, body, req, {"images": len(images), "dimensions": body.dimensions},
                         {"action": "BLEND"})


@route("POST", "/submit/describe", summary="Describe an image", responses=SUBMITTED)
async def describe(request: Request) -> Response:
    await _authenticate(request)
    body: DescribeBody = await _body(request, DescribeBody)
    if bool(body.base64) == bool(body.link):
        raise InvalidRequest("Give the image as 'base64' (a data URL) or as 'link', one of them.", field="base64")
    image = await request.app.state.services.fetcher.image(body.base64 or body.link or "",
                                                             "base64" if body.base64 else "link")
    req = ImageRequest(Operation.DESCRIBE, await _model(request), images=[image])
    return await _submit(request, body, req, {"link": body.link}, {"action": "DESCRIBE"})


async def _parent(request: Request, task_id: str, live: bool = False) -> tuple[Task, str]:
    return await parent_task(request.app.state.services, context(request).principal.key_id, task_id, live)


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
    if _status(task) != expected:
        raise InvalidRequest(f"关联任务状态错误: task '{task_id}' is {_status(task)}, not {expected}.",
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


async def _follow_up(request: Request, body: SubmitBody, parent: Task, upstream_id: str, op: Operation,
                     extras: dict, client_input: dict, action: str) -> Response:
    req, meta = follow_up_request(parent, upstream_id, op, extras, action)
    return await _submit(request, body, req, {"taskId": parent.id, **client_input}, meta)


@route("POST", "/submit/change", summary="Upscale, vary or reroll a task", responses=SUBMITTED)
async def change(request: Request) -> Response:
    await _authenticate(request)
    return await _change(request, await _body(request, ChangeBody))


async def _change(request: Request, body: ChangeBody) -> Response:
    if body.action != "REROLL" and body.index is None:
        raise InvalidRequest(f"index (1-4) is required for {body.action}.", field="index")
    parent, upstream_id = await _parent(request, body.taskId)
    index = body.index if body.action != "REROLL" else None
    return await _follow_up(request, body, parent, upstream_id, Operation.CHANGE,
                            {"action": body.action, "index": index},
                            {"action": body.action, "index": index}, body.action)


@route("POST", "/submit/simple-change", summary="Change by a short command (\"<id> U1\")",
       responses=SUBMITTED)
async def simple_change(request: Request) -> Response:
    await _authenticate(request)
    body: SimpleChangeBody = await _body(request, SimpleChangeBody)
    m = re.fullmatch(r"\s*(\S+)\s+(?:([UV])([1-4])|R)\s*", body.content)
    if not m:
        raise InvalidRequest("content must be '<taskId> U1..U4', '<taskId> V1..V4' or '<taskId> R'.",
                             field="content")
    action = {"U": "UPSCALE", "V": "VARIATION", None: "REROLL"}[m.group(2)]
    return await _change(request, ChangeBody(taskId=m.group(1), action=action,
                                              index=int(m.group(3)) if m.group(3) else None,
                                              **body.model_dump(include={"notifyHook", "state", "botType"})))


@route("POST", "/submit/action", summary="Press a button of a task", responses=SUBMITTED)
async def action(request: Request) -> Response:
    await _authenticate(request)
    body: ActionBody = await _body(request, ActionBody)
    parent, upstream_id = await _parent(request, body.taskId)
    req, meta = button_request(parent, upstream_id, body.customId, body.enableRemix, body.strong)
    return await _submit(request, body, req, {"taskId": parent.id, "customId": body.customId}, meta)


@route("POST", "/submit/modal", summary="Answer a task waiting in MODAL", responses=SUBMITTED)
async def modal(request: Request) -> Response:
    await _authenticate(request)
    body: ModalBody = await _body(request, ModalBody)
    target, upstream_id = await _parent(request, body.taskId, live=True)
    mask = body.maskBase64
    if mask:  # checked here; the upstream takes a data URL
        image = await request.app.state.services.fetcher.image(mask, "maskBase64")
        mask = mask if mask.startswith("data:") else f"data:{image.mime};base64,{mask}"
    req = ImageRequest(Operation.MODAL, target.model, prompt=body.prompt, channel=target.channel,
                       extras={"taskId": upstream_id, **({"maskBase64": mask} if mask else {})})
    return await _submit(request, body, req, {"taskId": target.id, "prompt": body.prompt}, {})


# -- queries --

def _missing(task_id: str) -> Response:
    """An unknown task, or another key's: HTTP 404 with code 3, as trueai answers."""
    return JSONResponse({"code": 3, "description": f"关联任务不存在或已失效: no task '{task_id}'.", "result": None},
                        status_code=404)


async def _own(request: Request, task_id: str) -> Task | None:
    """The caller's task; None for an unknown id or another key's task (answer: _missing)."""
    ctx = await _authenticate(request)
    try:
        return await request.app.state.services.tasks.get(task_id, ctx.principal.key_id)
    except NotFound:
        return None


@route("GET", "/task/{task_id}/fetch", summary="Get a task",
       responses={**ok((MidjourneyTask, MidjourneyResult), description="The task; or a refusal, by code"),
                  **ERRORS(404)})
async def fetch(task_id: str, request: Request) -> Response:
    if (task := await _own(request, task_id)) is None:
        return _missing(task_id)
    return JSONResponse(render_task(task, str(request.base_url), request.app.state.services))


@route("GET", "/task/{task_id}/image-seed", summary="The seed of a task's image",
       responses={**ok(MidjourneyResult, description="The seed in result (code 1); or a refusal"), **ERRORS(404)})
async def image_seed(task_id: str, request: Request) -> Response:
    await _authenticate(request)
    try:
        task, upstream_id = await _parent(request, task_id)
    except NotFound:
        return _missing(task_id)
    seed = await request.app.state.services.engine.ask(
        task.channel, lambda p, c: p.build_seed(upstream_id, c), lambda p, reply: p.parse_seed(reply))
    return JSONResponse({"code": 1, "description": "成功", "result": seed})


@route("POST", "/task/{task_id}/cancel", summary="Cancel a task",
       responses={**ok(MidjourneyResult, description="Canceled and refunded (code 1); code 4 if it had finished"),
                  **ERRORS(404)})
async def cancel(task_id: str, request: Request) -> Response:
    if (task := await _own(request, task_id)) is None:
        return _missing(task_id)
    if task.status not in TASK_STATUS:  # the task machinery tells the vendor, settles and refunds
        task = await request.app.state.services.tasks.cancel(task_id, task.key_id)
    if task.status != "canceled":
        raise InvalidRequest(f"关联任务状态错误: task '{task_id}' is {_status(task)}, it cannot be cancelled.",
                             field="taskId")
    return JSONResponse({"code": 1, "description": "成功", "result": task.id, "properties": {}})


@route("GET", "/task/list", summary="The newest 100 tasks", responses=LISTED)
@route("GET", "/task/queue", summary="The unfinished tasks among the newest 100", responses=LISTED)
async def recent(request: Request) -> Response:
    ctx = await _authenticate(request)
    services = request.app.state.services
    live = request.url.path.endswith("/queue")  # the tasks not finished
    tasks = await services.tasks.recent(ctx.principal.key_id, ctx.surface, live=live, limit=RECENT)
    return JSONResponse([render_task(t, str(request.base_url), services) for t in tasks])


@route("POST", "/task/list-by-condition", summary="Tasks by id", responses=LISTED)
@route("POST", "/task/list-by-ids", include_in_schema=False)  # trueai's name for it
async def list_by_condition(request: Request) -> Response:
    ctx = await _authenticate(request)
    ids = (await _json(request)).get("ids")
    ids = [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
    if len(ids) > MAX_LISTED:
        raise InvalidRequest(f"At most {MAX_LISTED} ids per call; got {len(ids)}.", field="ids")
    services, found = request.app.state.services, []
    for task_id in dict.fromkeys(ids):
        try:
            found.append(render_task(await services.tasks.get(task_id, ctx.principal.key_id),
                                     str(request.base_url), services))
        except NotFound:
            continue  # unknown ids are left out, as the proxies do
    return JSONResponse(found)


# -- the task as the proxy shows it (also the notifyHook body) --

def _status(task: Task) -> str:
    if task.status in TASK_STATUS:
        return TASK_STATUS[task.status]
    vendor = (task.meta or {}).get("status")
    if vendor in RUNNING:
        return vendor
    return "IN_PROGRESS" if vendor else "NOT_START"  # finished upstream, being stored here


def _url(services, base_url: str, image: dict | None) -> str | None:
    return services.signer.url(base_url, file_name(image["id"], image["format"])) if image else None


def _image_url(task: Task, request: Request) -> str | None:
    return render_task(task, str(request.base_url), request.app.state.services)["imageUrl"]


def _ms(value: datetime | None) -> int | None:
    return int(aware(value).timestamp() * 1000) if value is not None else None


def render_task(task: Task, base_url: str, services) -> dict:
    meta, status, given = task.meta or {}, _status(task), task.input or {}
    action = meta.get("action") or ACTION_BY_OPERATION.get(Operation(task.request["operation"]), "ACTION")
    prompt = given.get("prompt") if action == "IMAGINE" and given.get("prompt") else meta.get("prompt") or ""
    description = meta.get("description") or ""
    for job, ours in ((task.jobs[0]["id"] if task.jobs else None, task.id),
                      ((meta.get("parent") or {}).get("job"), (meta.get("parent") or {}).get("id"))):
        if job and ours:
            description = description.replace(job, ours)  # the upstream's ids never leave
    if status == "SUCCESS":
        image, progress = (task.output or [None])[0], "100%"
    elif status in ("FAILURE", "CANCEL"):
        image, progress = None, ""
    else:
        image, progress = meta.get("preview"), f"{round((task.progress or 0) * 100)}%"
    return {
        "id": task.id, "action": action, "status": status, "prompt": prompt,
        "promptEn": meta.get("promptEn") if action != "IMAGINE" and meta.get("promptEn") else prompt,
        "description": description, "state": given.get("state"),
        "submitTime": _ms(task.created_at), "startTime": _ms(task.started_at),
        "finishTime": _ms(task.completed_at), "progress": progress, "imageUrl": _url(services, base_url, image),
        "failReason": (task.error or {}).get("message") if status in ("FAILURE", "CANCEL") else None,
        "buttons": (meta.get("buttons") or []) if status == "SUCCESS" else [],
        "mode": (task.request.get("extras") or {}).get("mode"),  # trueai's field
        "properties": {"finalPrompt": meta.get("finalPrompt") or prompt, "notifyHook": task.webhook_url,
                       **task_cost(task)},
    }
