"""The midjourney-proxy API's wire shapes: the request bodies (as the proxy's DTOs name them),
the task as the proxy shows it (also the notifyHook body), the result codes its outcomes carry
(HTTP 200 with a code), and the speed-mode path prefix every route takes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from pixelgate.db.models import Task
from pixelgate.domain.request import Operation
from pixelgate.errors import GatewayError, InvalidRequest, ModelNotFound, NotFound, Unauthorized, UpstreamContentFiltered
from pixelgate.services.auth import Principal
from pixelgate.services.storage import file_name
from pixelgate.services.tasks import aware
from pixelgate.surfaces._answers import MidjourneyResult
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import Errors
from pixelgate.surfaces._route import task_cost
from pixelgate.surfaces.deps import PrincipalDep

PROVIDER = "midjourney"
MODES = {"mj-fast": "FAST", "mj-turbo": "TURBO", "mj-relax": "RELAX"}
"""Speed-mode path prefixes -> the mode."""
TASK_STATUS = {"succeeded": "SUCCESS", "failed": "FAILURE", "canceled": "CANCEL"}
RUNNING = ("NOT_START", "SUBMITTED", "IN_PROGRESS", "MODAL")
ACTION_BY_OPERATION = {Operation.GENERATE: "IMAGINE", Operation.EDIT: "IMAGINE", Operation.BLEND: "BLEND",
                       Operation.DESCRIBE: "DESCRIBE"}
ERRORS = Errors(MidjourneyResult, always=(401,), notes={404: "No such task (code 3)"})


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


def path_mode(request: Request) -> str | None:
    """The mode the path's prefix names (`/mj-relax/mj/...`); None under the plain `/mj`."""
    prefix = request.path_params.get("mode")
    if prefix is not None and prefix not in MODES:
        raise InvalidRequest(f"Invalid speed mode '{prefix}': use /mj-fast/mj, /mj-turbo/mj or /mj-relax/mj "
                             "(or /mj, fast).", field="mode")
    return MODES.get(prefix)


async def caller(request: Request, principal: PrincipalDep) -> Principal:
    """The key, once the path's speed mode is known: an unknown prefix is refused on every route."""
    path_mode(request)
    return principal


CallerDep = Annotated[Principal, Depends(caller)]


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


# -- the task as the proxy shows it (also the notifyHook body) --

def task_status(task: Task) -> str:
    if task.status in TASK_STATUS:
        return TASK_STATUS[task.status]
    vendor = (task.meta or {}).get("status")
    if vendor in RUNNING:
        return vendor
    return "IN_PROGRESS" if vendor else "NOT_START"  # finished upstream, being stored here


def _url(services, base_url: str, image: dict | None) -> str | None:
    return services.signer.url(base_url, file_name(image["id"], image["format"])) if image else None


def _ms(value: datetime | None) -> int | None:
    return int(aware(value).timestamp() * 1000) if value is not None else None


def render_task(task: Task, base_url: str, services) -> dict:
    meta, status, given = task.meta or {}, task_status(task), task.input or {}
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
