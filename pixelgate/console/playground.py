"""The playground: generate as the signed-in key would through the OpenAI API (the same fields
and checks), follow an asynchronous model's task, press Midjourney's buttons on a finished grid,
or watch a streaming model's partial images arrive."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from pixelgate.console.pages import ConsoleRoute, _context, _form, _render, _task_of, _who
from pixelgate.db.models import Task
from pixelgate.domain.images import load_image
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.errors import GatewayError, InvalidRequest
from pixelgate.services.engine import StreamCompleted
from pixelgate.services.shared import Services
from pixelgate.surfaces import midjourney
from pixelgate.surfaces._body import parse
from pixelgate.surfaces.deps import ServicesDep
from pixelgate.surfaces.openai_images import FormFields, to_request

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)


@router.get("/console/playground")
async def playground(request: Request, services: ServicesDep, model: str | None = None) -> Response:
    principal = await _who(request, services, "playground")
    models = [m for m, _ in await services.directory.models() if principal.may_use(m)]
    chosen = model if model in models else (models[0] if models else None)
    caps = (await services.directory.route(chosen)).capabilities if chosen else None
    template = "_playground_form.html" if request.headers.get("hx-request") else "playground.html"
    return _render(request, services, template, principal=principal, models=models, model=chosen, caps=caps,
                   edits=caps is not None and Operation.EDIT in caps.operations)


PLAYGROUND_FIELDS = ("model", "prompt", "n", "size", "quality", "style", "background", "output_format", "seed")


async def _playground_request(request: Request, services: Services, streamed: bool = False
                              ) -> tuple[ImageRequest, dict]:
    """The playground's form as the OpenAI API would take it (the same fields and checks), with
    an uploaded image making it an edit; and the call's JSON body for the curl and SDK code."""
    form = await _form(request, services)
    body = {k: form[k] for k in PLAYGROUND_FIELDS if form.get(k)}
    fields = parse(FormFields, body)
    upload = request.state.uploads.get("image")
    req = to_request(fields, Operation.EDIT if upload else Operation.GENERATE)
    req.delivery = Delivery.URL
    if upload:
        req.images.append(await load_image(upload[1], "image", upload[0]))
    if streamed:
        caps = (await services.directory.route(req.model)).capabilities
        if not caps.stream:  # never ask partial images of a model that cannot send them
            raise InvalidRequest(f"Model '{req.model}' does not stream partial images.", field="stream")
        req.stream, req.partial_images = True, 2
    return req, {k: v for k, v in fields.model_dump(exclude_unset=True).items() if k in PLAYGROUND_FIELDS}


@router.post("/console/playground")
async def run_playground(request: Request, services: ServicesDep) -> Response:
    """Generate as the signed-in key would through the OpenAI API, and show the same call as
    curl and as OpenAI SDK code. An asynchronous model becomes a task whose progress the page
    follows."""
    principal = await _who(request, services, "playground")
    req, body = await _playground_request(request, services)
    ctx = _context(request, principal)
    status, error, task = 200, None, None
    try:
        if (await services.directory.route(req.model)).capabilities.asynchronous:
            task = await services.tasks.submit(req, ctx, f"console/{req.model}", body)
            outcome: dict[str, Any] = {"ok": True, "images": []}
        else:
            result = await services.engine.generate(req, ctx)
            outcome = {"ok": True, "images": [i.url for i in result.images], "cost": ctx.cost}
    except GatewayError as exc:
        outcome = {"ok": False, "error": exc.message, "field": exc.field}
        status, error = exc.status, exc
    finally:
        await ctx.finish()
    services.log_request(ctx, 201 if task is not None else status, error)
    base, edit = str(request.base_url).rstrip("/"), req.operation is Operation.EDIT
    curl, sdk = _same_call(base, body, edit)
    return _render(request, services, "_playground_result.html", http_status=status, principal=principal, outcome=outcome,
                   curl=curl, sdk=sdk, chat=_chat_call(base, body, edit), request_id=ctx.request_id,
                   **(_task_view(task) if task else {}))


def _same_call(base: str, body: dict, edit: bool) -> tuple[str, str]:
    """The call as curl and as OpenAI SDK code: JSON to generations, multipart to edits."""
    auth = f"curl {base}/v1/images/{'edits' if edit else 'generations'} \\\n  -H \"Authorization: Bearer $PG_KEY\" "
    if edit:
        curl = auth + "".join(f"\\\n  -F {k}={json.dumps(str(v))} " for k, v in body.items()) + "-F image=@image.png"
    else:
        curl = auth + f"-H \"Content-Type: application/json\" \\\n  -d '{json.dumps(body)}'"
    args = ", ".join(f"{k}={v!r}" for k, v in body.items()) + (", image=open(\"image.png\", \"rb\")" if edit else "")
    sdk = (f"from openai import OpenAI\n\nclient = OpenAI(base_url=\"{base}/v1\", api_key=\"pg-...\")\n"
           f"result = client.images.{'edit' if edit else 'generate'}({args}, response_format=\"url\")\n"
           "print(result.data[0].url)")
    return curl, sdk


def _chat_call(base: str, body: dict, edit: bool) -> str:
    """The call as a chat client makes it (POST /v1/chat/completions): the prompt as the user's
    message, an edit's image as an image_url part (a data URL the shell fills in), the other
    fields beside the messages."""
    fields = {k: v for k, v in body.items() if k not in ("model", "prompt")}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,<IMAGE>"}}
    content: Any = [{"type": "text", "text": body.get("prompt", "")}, image] if edit else body.get("prompt", "")
    chat = {"model": body.get("model"), "messages": [{"role": "user", "content": content}], **fields}
    quoted = json.dumps(chat).replace("'", "'\\''")
    if edit:
        head, _, tail = quoted.rpartition("<IMAGE>")  # the image's, not the prompt's
        quoted = head + "'\"$(base64 -w0 image.png)\"'" + tail
    return (f"curl {base}/v1/chat/completions \\\n  -H \"Authorization: Bearer $PG_KEY\" "
            f"-H \"Content-Type: application/json\" \\\n  -d '{quoted}'")


def _task_view(task: Task) -> dict:
    meta = task.meta or {}
    buttons = [b for b in meta.get("buttons") or [] if isinstance(b, dict) and b.get("customId")]
    return {"task": task, "preview": meta.get("preview"), "buttons": buttons if task.status == "succeeded" else [],
            "running": task.status in ("starting", "pending", "running")}


@router.get("/console/playground/tasks/{task_id}")
async def playground_task(task_id: str, request: Request, services: ServicesDep) -> Response:
    """The playground's view of a task, polled by the page every second while it runs."""
    principal = await _who(request, services, "playground")
    task = await _task_of(services, principal, task_id)
    return _render(request, services, "_playground_task.html", principal=principal, **_task_view(task))


@router.post("/console/playground/tasks/{task_id}/action")
async def playground_action(task_id: str, request: Request, services: ServicesDep) -> Response:
    """A Midjourney button (U1-U4, V1-V4, reroll...) of a finished grid: a follow-up task, made
    as POST /mj/submit/action makes it."""
    principal = await _who(request, services, "playground")
    form = await _form(request, services)
    parent, upstream_id = await midjourney.parent_task(services, principal.key_id, task_id)
    custom_id = form.get("custom_id", "")
    req, meta = midjourney.button_request(parent, upstream_id, custom_id)
    req.provider, req.delivery = midjourney.PROVIDER, Delivery.URL
    req.extras["mode"] = (parent.request.get("extras") or {}).get("mode") or "FAST"
    ctx = _context(request, principal)
    try:
        task = await services.tasks.submit(req, ctx, f"midjourney/{req.model}", {"taskId": parent.id,
                                                                                   "customId": custom_id}, meta=meta)
    except GatewayError as exc:
        services.log_request(ctx, exc.status, exc)
        raise
    finally:
        await ctx.finish()
    services.log_request(ctx, 201)
    return _render(request, services, "_playground_task.html", principal=principal, **_task_view(task))


@router.post("/console/playground/stream")
async def stream_playground(request: Request, services: ServicesDep) -> Response:
    """The same, for a model that streams: partial images as server-sent events while the image
    is made, then the finished image's link (the page draws each as it arrives)."""
    principal = await _who(request, services, "playground")
    req, _ = await _playground_request(request, services, streamed=True)
    ctx = _context(request, principal)

    def event(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    async def events():
        status, error = 200, None
        try:
            async for item in await services.engine.stream(req, ctx):
                if isinstance(item, StreamCompleted):
                    yield event("image", {"url": item.image.url, "request": ctx.request_id})
                else:
                    yield event("partial", {"b64": str(item.b64), "index": item.index})
        except GatewayError as exc:
            status, error = exc.status, exc
            yield event("error", {"message": exc.message})
        finally:
            await ctx.finish()
            services.log_request(ctx, status, error)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})
