"""/mj/task/*: the caller's tasks as the proxy shows them (fetch, list, queue, list-by-condition),
its cancel (refunded), and the seed of a finished task's image, asked of the channel that made it.
Another key's task is as unknown as a missing one: HTTP 404 with code 3, as trueai answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from pixelgate.db.models import Task
from pixelgate.errors import InvalidRequest, NotFound
from pixelgate.surfaces._answers import MidjourneyResult, MidjourneyTask
from pixelgate.surfaces._body import parsed
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import body, json, ok
from pixelgate.surfaces._route import surface_route
from pixelgate.surfaces.deps import ContextDep, ServicesDep
from pixelgate.surfaces.midjourney.submit import parent_task
from pixelgate.surfaces.midjourney.wire import ERRORS, TASK_STATUS, CallerDep, render_error, render_task, task_status

router = APIRouter(route_class=surface_route("midjourney", render_error), tags=["Midjourney"])
LISTED = {**ok(([MidjourneyTask], MidjourneyResult), description="The tasks; or a refusal, by code"), **ERRORS()}
MAX_LISTED = 500
RECENT = 100  # /task/list and /task/queue, as trueai lists its newest 100


class Ids(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ids: Any = None
    """Not a list, or not strings: nothing is found, as the proxies answer."""


def _missing(task_id: str) -> Response:
    """An unknown task, or another key's: HTTP 404 with code 3, as trueai answers."""
    return JSONResponse({"code": 3, "description": f"关联任务不存在或已失效: no task '{task_id}'.", "result": None},
                        status_code=404)


async def _own(services, key_id: int, task_id: str) -> Task | None:
    """The caller's task; None for an unknown id or another key's task (answer: _missing)."""
    try:
        return await services.tasks.get(task_id, key_id)
    except NotFound:
        return None


@router.get("/mj/task/{task_id}/fetch", summary="Get a task",
            responses={**ok((MidjourneyTask, MidjourneyResult), description="The task; or a refusal, by code"),
                       **ERRORS(404)})
async def fetch(task_id: str, request: Request, caller: CallerDep, services: ServicesDep) -> Response:
    if (task := await _own(services, caller.key_id, task_id)) is None:
        return _missing(task_id)
    return JSONResponse(render_task(task, str(request.base_url), services))


@router.get("/mj/task/{task_id}/image-seed", summary="The seed of a task's image",
            responses={**ok(MidjourneyResult, description="The seed in result (code 1); or a refusal"), **ERRORS(404)})
async def image_seed(task_id: str, caller: CallerDep, services: ServicesDep) -> Response:
    try:
        task, upstream_id = await parent_task(services, caller.key_id, task_id)
    except NotFound:
        return _missing(task_id)
    seed = await services.engine.ask(
        task.channel, lambda p, c: p.build_seed(upstream_id, c), lambda p, reply: p.parse_seed(reply))
    return JSONResponse({"code": 1, "description": "成功", "result": seed})


@router.post("/mj/task/{task_id}/cancel", summary="Cancel a task",
             responses={**ok(MidjourneyResult, description="Canceled and refunded (code 1); code 4 if it had finished"),
                        **ERRORS(404)})
async def cancel(task_id: str, caller: CallerDep, services: ServicesDep) -> Response:
    if (task := await _own(services, caller.key_id, task_id)) is None:
        return _missing(task_id)
    if task.status not in TASK_STATUS:  # the task machinery tells the vendor, settles and refunds
        task = await services.tasks.cancel(task_id, task.key_id)
    if task.status != "canceled":
        raise InvalidRequest(f"关联任务状态错误: task '{task_id}' is {task_status(task)}, it cannot be cancelled.",
                             field="taskId")
    return JSONResponse({"code": 1, "description": "成功", "result": task.id, "properties": {}})


@router.get("/mj/task/list", summary="The newest 100 tasks", responses=LISTED)
@router.get("/mj/task/queue", summary="The unfinished tasks among the newest 100", responses=LISTED)
async def recent(request: Request, caller: CallerDep, services: ServicesDep, ctx: ContextDep) -> Response:
    live = request.url.path.endswith("/queue")  # the tasks not finished
    tasks = await services.tasks.recent(caller.key_id, ctx.surface, live=live, limit=RECENT)
    return JSONResponse([render_task(t, str(request.base_url), services) for t in tasks])


@router.post("/mj/task/list-by-condition", summary="Tasks by id", responses=LISTED,
             openapi_extra=body(json({"type": "object", "properties": {
                 "ids": {"type": "array", "items": {"type": "string"}}}})))
@router.post("/mj/task/list-by-ids", include_in_schema=False)  # trueai's name for it
async def list_by_condition(request: Request, caller: CallerDep, given: Annotated[Ids, parsed(Ids, {})],
                            services: ServicesDep) -> Response:
    ids = [i for i in given.ids if isinstance(i, str)] if isinstance(given.ids, list) else []
    if len(ids) > MAX_LISTED:
        raise InvalidRequest(f"At most {MAX_LISTED} ids per call; got {len(ids)}.", field="ids")
    found = []
    for task_id in dict.fromkeys(ids):
        try:
            found.append(render_task(await services.tasks.get(task_id, caller.key_id), str(request.base_url),
                                     services))
        except NotFound:
            continue  # unknown ids are left out, as the proxies do
    return JSONResponse(found)
