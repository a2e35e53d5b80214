"""Replicate's predictions API, so that the official `replicate` client pointed here works.

  POST /v1/models/{owner}/{name}/predictions  {"input", "webhook"?, "webhook_events_filter"?}
       -> 201 prediction {id, model, version, input, logs, output, error, status, urls, ...}
  GET  /v1/predictions/{id}, POST /v1/predictions/{id}/cancel
  GET  /v1/webhooks/default/secret            {"key": "whsec_..."}
Every prediction is a task (`Prefer: wait[=n]` holds the request up to n <= 60 s). Statuses:
pending -> starting, running -> processing. Errors: problem details {"title", "detail", "status"}.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from pixelgate.db.models import Task
from pixelgate.errors import GatewayError, InvalidRequest
from pixelgate.surfaces._answers import ReplicatePrediction, ReplicateProblem, WebhookSecret
from pixelgate.services import idempotency
from pixelgate.surfaces._route import surface_route, task_cost
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._body import JsonBody
from pixelgate.surfaces._openapi import CANCELING, GENERATING, Errors, body, json, ok
from pixelgate.surfaces.deps import ContextDep, PrincipalDep, ServicesDep, TasksDep
from pixelgate.surfaces.predictions import (PREDICTION, VENDOR_PROVIDERS, _iso, _seconds, check_webhook,
                                            input_fields, output_items, prefer, to_request)

STATUS = {"pending": "starting", "running": "processing"}
TITLES = {400: "Bad request", 401: "Unauthenticated", 403: "Forbidden", 404: "Not found",
          409: "Conflict", 422: "Input validation failed", 429: "Request was throttled"}


def render_error(exc: GatewayError) -> Response:
    status = 422 if exc.status == 400 and exc.field else exc.status
    body = {"title": TITLES.get(status, "Upstream error" if status >= 500 else "Error"),
            "detail": exc.message, "status": status}
    if exc.field:
        body["invalid_fields"] = [{"type": exc.code, "field": exc.field, "description": exc.message}]
    return JSONResponse(body, status_code=status, headers={"content-type": "application/problem+json"})


router = APIRouter(route_class=surface_route("replicate", render_error), tags=["Replicate"])
BODY = {"type": "object", "properties": {**PREDICTION["properties"], "webhook_completed": {"type": "string"},
                                         "webhook_events_filter": {"type": "array", "items": {"type": "string"}},
                                         "stream": {"type": "boolean"}}, "required": ["input"]}
ERRORS = Errors(ReplicateProblem, "application/problem+json",
                notes={400: "The request is invalid", 422: "Input validation failed: invalid_fields names the field"})


async def render(task: Task, base_url: str, services) -> dict:
    base = base_url.rstrip("/")
    items = await output_items(task, base_url, services)
    error = task.error["message"] if task.error else None
    return {"id": task.id, "model": task.model_path, "version": "pixelgate", "input": task.input, "logs": "",
            "output": [i.get("url") or i.get("b64_json") for i in items] if items is not None else None,
            "data_removed": False, "error": error, "status": STATUS.get(task.status, task.status),
            "source": "api", "created_at": _iso(task.created_at), "started_at": _iso(task.started_at),
            "completed_at": _iso(task.completed_at),
            "urls": {"get": f"{base}/v1/predictions/{task.id}", "cancel": f"{base}/v1/predictions/{task.id}/cancel"},
            "metrics": {"predict_time": _seconds(task), **task_cost(task)} if task.completed_at else {}}


@router.post("/v1/models/{owner}/{name}/predictions", summary="Create a prediction", status_code=201,
             responses={**ok(ReplicatePrediction, 201, "The prediction (finished, if Prefer: wait saw it finish)"),
                        **ERRORS(422, *GENERATING)},
             openapi_extra=body(json(BODY)))
async def create(owner: str, name: str, request: Request, _: PrincipalDep, data: JsonBody, services: ServicesDep,
                 ctx: ContextDep) -> Response:
    unknown = set(data) - set(BODY["properties"])
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidRequest(f"Unknown field '{field}'.", field=field, code="unknown_parameter")
    provider = VENDOR_PROVIDERS.get(owner.lower())
    webhook = await check_webhook(services, data.get("webhook") or data.get("webhook_completed"))
    events = data.get("webhook_events_filter")
    route = await services.directory.route(name, provider)
    with input_fields():
        req, client_input = await to_request(services, name, data.get("input"), provider)
        task = await services.tasks.submit(req, ctx, f"{owner}/{name}", client_input, webhook, events,
                                           run_in_background=not route.capabilities.asynchronous,
                                           idempotency_key=idempotency.key_from(request.headers))
    _, wait = prefer(request)
    if wait:
        task = await services.tasks.wait(task.id, ctx.principal.key_id, wait)
    return JSONResponse(await render(task, str(request.base_url), services), status_code=201)


@router.get("/v1/predictions/{task_id}", summary="Get a prediction",
            responses={**ok(ReplicatePrediction), **ERRORS(401, 404)})
async def get(task_id: str, request: Request, caller: PrincipalDep, services: ServicesDep) -> Response:
    return JSONResponse(await render(await services.tasks.get(task_id, caller.key_id), str(request.base_url), services))


@router.post("/v1/predictions/{task_id}/cancel", summary="Cancel a prediction",
             responses={**ok(ReplicatePrediction), **ERRORS(*CANCELING)})
async def cancel(task_id: str, request: Request, caller: PrincipalDep, services: ServicesDep) -> Response:
    task = await services.tasks.cancel(task_id, caller.key_id)
    return JSONResponse(await render(task, str(request.base_url), services))


@router.get("/v1/webhooks/default/secret", summary="The webhook signing secret",
            responses={**ok(WebhookSecret), **ERRORS(401)})
async def webhook_secret(caller: PrincipalDep, tasks: TasksDep) -> Response:
    return JSONResponse({"key": await tasks.webhook_secret(caller.key_id)})
