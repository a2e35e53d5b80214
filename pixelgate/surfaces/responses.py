"""OpenAI's Responses API, for its image generation: the official SDKs' `client.responses.create`.

  POST /v1/responses  {"model", "input": "a prompt" | [messages], "stream"?,
                       "tools"?: [{"type": "image_generation", "model"?, "size"?, "quality"?,
                                   "output_format"?, "background"?, "partial_images"?, ...}]}

Which model makes the image: the tool's `model`; else `model` itself when it is an image model the
gateway serves; else the setting image_tool_model (gpt-image-2).
A text model named as `model` (the key must be allowed it) is never called: the gateway makes
images, it does not chat. Input images are `input_image` parts (`image_url`: a URL or data URL);
an earlier `image_generation_call` item sent back in `input` is the image a follow-up edits
(surfaces/_conversation.py has the rule). Answer:

  {"id": "resp_...", "object": "response", "created_at", "status": "completed", "model",
   "output": [{"id": "ig_...", "type": "image_generation_call", "status": "completed",
               "result": "<base64>", "revised_prompt", "output_format"?, "size"?, ...}],
   "usage": {"input_tokens", "output_tokens", "total_tokens"}, ...}

With stream=true the Responses events: response.created, response.in_progress, then per image
response.output_item.added, response.image_generation_call.in_progress / .generating /
.partial_image (a model that streams previews) / .completed, response.output_item.done, and
response.completed; `: keep-alive` comments while a model works in silence; an `error` event and
response.failed on failure. An Idempotency-Key makes a repeat answer the first request's images.
`background: true` (or `Prefer: respond-async`, or the gateway's own `webhook` field) runs it as a
task: the answer is the response `queued`, GET /v1/responses/{id} polls it, and the webhook is sent
the response object once it has ended.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Callable

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import DeliveredImage, StreamPartial
from pixelgate.errors import GatewayError, InvalidRequest, UpstreamBadResponse
from pixelgate.services.engine import RequestContext
from pixelgate.services.shared import Services
from pixelgate.services.tasks import aware
from pixelgate.surfaces import _conversation, _tasks
from pixelgate.surfaces._answers import OpenAIError, ResponseObject
from pixelgate.surfaces._conversation import Turn
from pixelgate.surfaces.deps import PrincipalDep, ServicesDep, SettingsDep
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import GENERATING, Errors, body, conversational, json, ok, schema_of
from pixelgate.surfaces._route import surface_route
from pixelgate.surfaces._body import json_body, parse
from pixelgate.surfaces._route import authenticated, openai_error
from pixelgate.surfaces.openai_images import ImageFields, to_request

router = APIRouter(route_class=surface_route("responses", openai_error), tags=["Responses"])
ANSWERS = {**ok(ResponseObject, also={"text/event-stream": {"type": "string", "description": "with stream: true"}}),
           **Errors(OpenAIError)(*GENERATING)}

IGNORED = frozenset({"instructions", "temperature", "top_p", "max_output_tokens", "max_tool_calls", "store",
                     "metadata", "text", "reasoning", "truncation", "include", "parallel_tool_calls", "tool_choice",
                     "service_tier", "prompt_cache_key", "safety_identifier", "top_logprobs", "stream_options"})
"""Fields that steer a text model: accepted, unused (no text model is called)."""
ECHOED = ("output_format", "size", "quality", "background")
"""Facts of the image the vendor reports, shown on the item as OpenAI shows them."""


_FIELDS = schema_of(ImageFields)
BODY = conversational(_FIELDS, "input", {"anyOf": [
    {"type": "string"}, {"type": "array", "items": {"type": "object", "description":
                         "a message (role, content: text or input_text/input_image parts) or an "
                         "image_generation_call item"}}]}, {
    "tools": {"type": "array", "items": {"type": "object", "properties": {
        "type": {"enum": ["image_generation"]}, **{k: _FIELDS["properties"][k] for k in (
            "model", "size", "quality", "output_format", "output_compression", "background",
            "moderation", "input_fidelity", "partial_images")}}, "required": ["type"]}},
    "background": {"type": "boolean", "description": "run as a task: poll GET /v1/responses/{id}"},
    "webhook": {"type": "string", "format": "uri", "description": "run as a task; this URL is sent the "
                                                                  "response once it has ended"}})


@router.post("/v1/responses", summary="Create a response (image generation)", responses=ANSWERS,
             openapi_extra=body(json(BODY)))
async def create(request: Request, settings: SettingsDep, services: ServicesDep) -> Response:
    ctx = await authenticated(request)
    data = await json_body(request)
    model = data.pop("model", None)
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Missing required parameter: 'model'.", field="model", code="missing_required_parameter")
    ctx.principal.require_model(model)
    stream = _conversation.stream_flag(data, IGNORED)
    background = data.pop("background", None)
    if background not in (None, True, False):
        raise InvalidRequest("'background' must be true or false.", field="background", code="invalid_type")
    webhook = await _tasks.webhook(services, data.pop("webhook", None))
    background = background is True or _tasks.prefers_async(request) or webhook is not None
    if background and stream:
        given = "webhook" if webhook is not None else "background"
        raise InvalidRequest(f"'{given}' with 'stream' is not supported: poll GET /v1/responses/{{id}}.",
                             field=given, code="unsupported_parameter")
    for name in ("previous_response_id", "conversation"):
        if data.get(name) not in (None, False):
            raise InvalidRequest(f"'{name}' is not supported: send the conversation in 'input'.", field=name,
                                 code="unsupported_parameter")
        data.pop(name, None)
    turns = input_turns(data.pop("input", None))
    tool = image_tool(data.pop("tools", None))
    fields = {**data, **{k: v for k, v in tool.items() if k not in ("type", "model")}}
    fields["model"] = tool.get("model") or await _image_model(services, model, settings.image_tool_model)
    req = to_request(parse(ImageFields, fields), Operation.GENERATE)
    req.delivery = Delivery.B64  # an image_generation_call's result is base64
    await _conversation.apply_conversation(services, req, turns, "input")
    envelope = {"id": "resp_" + ctx.request_id.removeprefix("req_"), "object": "response", "model": model,
                "tools": [tool], "tool_choice": "auto", "error": None, "incomplete_details": None}
    if stream:
        events = await _conversation.stream(services, req, ctx)
        request.state.log_deferred = True
        body, failed = _events(events, req, ctx, envelope)
        return StreamingResponse(_conversation.sse(services, ctx, body, failed), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})
    if background:  # a task: this answer says it is queued, GET /v1/responses/{id} the rest
        task = await _tasks.submit(request, services, req, ctx,
                                   {**fields, "prompt": req.prompt, "response": {"model": model, "tool": tool}}, webhook)
        return JSONResponse(await render_task(task, str(request.base_url), services))
    made = await _conversation.make(request, services, req, ctx, {**fields, "prompt": req.prompt})
    items = [_item(ctx.request_id, i, image, made.meta) for i, image in enumerate(made.images)]
    return JSONResponse({**envelope, "created_at": made.created, "status": "completed", "output": items,
                         "usage": _usage(made.meta)})


STATUS = {"starting": "queued", "pending": "queued", "running": "in_progress", "succeeded": "completed",
          "failed": "failed", "canceled": "cancelled"}
"""A task's status as a Response's."""


async def render_task(task, base_url: str, services) -> dict:
    """A background response (a task), as OpenAI's Responses API shows one: its status, and its
    output once completed."""
    asked = (task.input or {}).get("response") or {}
    status = STATUS.get(task.status, task.status)
    body: dict[str, Any] = {
        "id": "resp_" + task.id, "object": "response", "model": asked.get("model", task.model),
        "tools": [asked.get("tool") or {"type": "image_generation"}], "tool_choice": "auto", "background": True,
        "created_at": int(aware(task.created_at).timestamp()), "status": status, "output": [], "usage": None,
        "error": task.error if status == "failed" else None, "incomplete_details": None}
    if status == "completed":
        made = await _conversation.made_by(task, base_url, services)
        body |= {"output": [_item(task.request_id, i, image, made.meta) for i, image in enumerate(made.images)],
                 "usage": _usage(made.meta)}
    return body


@router.get("/v1/responses/{response_id}", summary="A background response (background: true)",
            responses={**ok(ResponseObject), **Errors(OpenAIError)(401, 404, 429, 500)})
async def retrieve(response_id: str, caller: PrincipalDep, request: Request, services: ServicesDep) -> Response:
    task = await services.tasks.get(response_id.removeprefix("resp_"), caller.key_id)
    return JSONResponse(await render_task(task, str(request.base_url), services))


async def _image_model(services: Services, model: str, default: str) -> str:
    return model if await _conversation.capabilities(services, model) is not None else default


def image_tool(tools: Any) -> dict:
    """The one image_generation tool (an empty one when there are no tools: `model` is then an
    image model, or the default makes the image)."""
    if tools is None:
        return {"type": "image_generation"}
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array.", field="tools", code="invalid_type")
    found = None
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "image_generation":
            raise InvalidRequest(f"Only the image_generation tool is supported; 'tools[{i}]' is not one.",
                                 field=f"tools[{i}].type", code="unsupported_parameter")
        if found is not None:
            raise InvalidRequest("Give at most one image_generation tool.", field=f"tools[{i}]")
        found = tool
    return found or {"type": "image_generation"}


def input_turns(value: Any) -> list[Turn]:
    """`input`: a prompt, or items: messages (content as text or parts: input_text, output_text,
    input_image) and earlier image_generation_call items (images the assistant made)."""
    if isinstance(value, str):
        return [Turn("user", value, [], "input")]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a string or a non-empty array of items.", field="input",
                             code="missing_required_parameter" if value is None else "invalid_type")
    turns = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{where}' must be an object.", field=where, code="invalid_type")
        if item.get("type") == "image_generation_call":
            if isinstance(item.get("result"), str) and item["result"]:
                turns.append(Turn("assistant", "", [(item["result"], f"{where}.result")], where))
            continue
        if item.get("type", "message") != "message" or not isinstance(item.get("role"), str):
            raise InvalidRequest(f"'{where}' must be a message (role and content) or an image_generation_call.",
                                 field=f"{where}.type")
        text, images = _content(item.get("content"), f"{where}.content")
        turns.append(Turn(item["role"], text, images, f"{where}.content"))
    return turns


def _content(content: Any, where: str) -> tuple[str, list[tuple[str, str]]]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}' must be a string or an array of parts.", field=where, code="invalid_type")
    text, images = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            text.append(part["text"])
        elif kind == "input_image" and isinstance(part.get("image_url"), str) and part["image_url"]:
            images.append((part["image_url"], f"{where}[{j}].image_url"))
        elif kind == "input_image":
            raise InvalidRequest(f"'{where}[{j}].image_url' must be a URL or a data URL (file_id is not supported).",
                                 field=f"{where}[{j}].image_url")
        else:
            raise InvalidRequest(f"'{where}[{j}]' must be an input_text or input_image part.",
                                 field=f"{where}[{j}].type")
    return "\n".join(text), images


def _item_id(request_id: str, index: int) -> str:
    return f"ig_{request_id.removeprefix('req_')}{index:02d}"


def _item(request_id: str, index: int, image: DeliveredImage | None, meta: dict) -> dict:
    """One image as an output item: in progress (None) or completed."""
    item: dict[str, Any] = {"id": _item_id(request_id, index), "type": "image_generation_call",
                            "status": "in_progress" if image is None else "completed"}
    if image is not None:
        item |= {"result": _conversation.b64_text(image), "revised_prompt": image.revised_prompt,
                 **{k: meta[k] for k in ECHOED if k in meta}}
    return item


def _usage(meta: dict) -> dict:
    usage = meta.get("usage") if isinstance(meta.get("usage"), dict) else {}
    inp, out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def _events(events: AsyncIterator, req: ImageRequest, ctx: RequestContext, envelope: dict
                  ) -> tuple[AsyncIterator[bytes], Callable[[GatewayError], list[bytes]]]:
    """The Responses events of a stream, and those that tell its failure."""
    sequence = 0
    response = {**envelope, "created_at": int(time.time()), "status": "in_progress", "output": [], "usage": None}
    done: list[dict] = []

    def event(kind: str, **body: Any) -> bytes:
        nonlocal sequence
        sequence += 1
        data = {"type": kind, "sequence_number": sequence - 1, **body}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def begin(index: int) -> list[bytes]:
        ids = {"output_index": index, "item_id": _item_id(ctx.request_id, index)}
        return [event("response.output_item.added", output_index=index, item=_item(ctx.request_id, index, None, {})),
                event("response.image_generation_call.in_progress", **ids),
                event("response.image_generation_call.generating", **ids)]

    async def body() -> AsyncIterator[bytes]:
        yield event("response.created", response=response)
        yield event("response.in_progress", response=response)
        for chunk in begin(0):
            yield chunk
        meta: dict = {}
        async for item in events:
            index = len(done)
            ids = {"output_index": index, "item_id": _item_id(ctx.request_id, index)}
            if item is None:
                yield b": keep-alive\n\n"
            elif isinstance(item, StreamPartial):
                yield event("response.image_generation_call.partial_image", **ids,
                            partial_image_b64=_conversation.b64_text(item), partial_image_index=item.index)
            else:
                meta = item.meta
                done.append(_item(ctx.request_id, index, item.image, meta))
                yield event("response.image_generation_call.completed", **ids)
                yield event("response.output_item.done", output_index=index, item=done[-1])
                if len(done) < req.n:
                    for chunk in begin(len(done)):
                        yield chunk
        if not done:
            raise UpstreamBadResponse("The upstream ended its stream without any image.")
        yield event("response.completed", response={**response, "status": "completed", "output": done,
                                                    "usage": _usage(meta)})

    def failed(exc: GatewayError) -> list[bytes]:
        return [event("error", code=exc.code, message=exc.message, param=exc.field),
                event("response.failed", response={**response, "status": "failed", "output": done,
                                                   "error": {"code": exc.code, "message": exc.message}})]

    return body(), failed
