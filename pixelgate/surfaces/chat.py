"""Chat completions that answer images, as OpenRouter's image models do, for chat-shaped clients.

  POST /v1/chat/completions  {"model", "messages": [...], "stream"?, "n"?, "size"?, "quality"?,
                              "image_config"?: {"aspect_ratio": "16:9", "image_size": "1K"|"2K"|"4K"},
                              "modalities"?: ["image", "text"], "image_response"?: "data_url"|"url", ...}

The conversation gives the prompt and the input images (surfaces/_conversation.py has the rule);
any field of the OpenAI Images API (background, output_format, seed...) and the model's vendor
fields may ride along; text-sampling fields (IGNORED) are accepted and ignored. Answer:

  {"id": "chatcmpl-...", "object": "chat.completion", "created", "model",
   "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "![image](data:image/png;base64,...)",
                            "images": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}}],
   "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}

Images are data URLs, or with `image_response: "url"` signed links of the gateway. `content` holds
the vendor's revised prompt, if any, and (setting chat_markdown_images) each image as markdown.
With stream=true: chat.completion.chunk events, a `partial_image` delta for each preview of a model
that streams them, `: keep-alive` comments while a model works in silence, the image in an
`images` delta, a last chunk with finish_reason and usage, then `data: [DONE]`. Errors in OpenAI's
shape (on a stream that began: `data: {"error": {...}}`). An Idempotency-Key makes a repeat answer
the first request's images; `Prefer: respond-async` is not honoured here (OpenAI's chat API has no
task to poll): the answer comes when the images are done.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from pixelgate.domain import sizes
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.domain.result import DeliveredImage, StreamPartial
from pixelgate.errors import GatewayError, InvalidRequest, UpstreamBadResponse
from pixelgate.services.engine import RequestContext
from pixelgate.services.tasks import LIVE
from pixelgate.surfaces import _conversation, _tasks
from pixelgate.surfaces._answers import ChatCompletion, ImageTask, OpenAIError
from pixelgate.surfaces._conversation import Made, Turn
from pixelgate.surfaces.deps import PrincipalDep, ServicesDep, SettingsDep
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import GENERATING, Errors, body, conversational, json, ok, schema_of
from pixelgate.surfaces._route import surface_route
from pixelgate.surfaces._body import json_body, parse
from pixelgate.surfaces._route import authenticated, openai_error
from pixelgate.surfaces.openai_images import ImageFields, to_request

router = APIRouter(route_class=surface_route("chat", openai_error), tags=["Chat"])
ANSWERS = {**ok(ChatCompletion, also={"text/event-stream": {"type": "string", "description": "with stream: true"}}),
           **ok(ImageTask, 202, "With Prefer: respond-async or a webhook: the task, running"),
           **Errors(OpenAIError)(*GENERATING)}

IGNORED = frozenset({"temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "presence_penalty",
                     "frequency_penalty", "repetition_penalty", "stop", "logit_bias", "logprobs", "top_logprobs",
                     "store", "metadata", "stream_options", "service_tier", "usage", "provider", "reasoning",
                     "reasoning_effort", "parallel_tool_calls", "transforms"})
"""Fields of a text model's request that mean nothing to an image model: accepted, unused."""
TIERS = ("1K", "2K", "4K")
DELIVERIES = {None: Delivery.B64, "data_url": Delivery.B64, "url": Delivery.URL}


BODY = conversational(schema_of(ImageFields), "messages", {
    "type": "array", "items": {"type": "object", "properties": {
        "role": {"type": "string"}, "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {
            "type": "object", "description": "{type: text, text} or {type: image_url, image_url: {url}}"}}]},
        "images": {"type": "array", "items": {"type": "object"}}}, "required": ["role"]}}, {
    "image_config": {"type": "object", "properties": {"aspect_ratio": {"type": "string"},
                                                      "image_size": {"enum": ["1K", "2K", "4K"]}}},
    "modalities": {"type": "array", "items": {"enum": ["image", "text"]}},
    "image_response": {"enum": ["data_url", "url"]}, "webhook": {"type": "string", "format": "uri"}})


@router.post("/v1/chat/completions", summary="Images from a chat conversation (OpenRouter's shape)",
             responses=ANSWERS, openapi_extra=body(json(BODY)))
async def completions(request: Request, settings: SettingsDep, services: ServicesDep) -> Response:
    ctx = await authenticated(request)
    data = await json_body(request)
    stream = _conversation.stream_flag(data, IGNORED)
    messages = data.pop("messages", None)
    webhook = await _tasks.webhook(services, data.pop("webhook", None))
    req, as_url = request_of(data)
    await _conversation.apply_conversation(services, req, turns(messages), "messages")
    markdown = settings.chat_markdown_images
    if stream:
        events = await _conversation.stream(services, req, ctx)
        request.state.log_deferred = True
        body = _chunks(events, req, ctx, as_url, markdown)
        return StreamingResponse(_conversation.sse(services, ctx, body, _failed, b"data: [DONE]\n\n"),
                                 media_type="text/event-stream", headers={"cache-control": "no-cache"})
    if _tasks.prefers_async(request) or webhook:  # a task at once; its answer at its polling URL
        task = await _tasks.submit(request, services, req, ctx, {**data, "prompt": req.prompt}, webhook)
        return JSONResponse(_tasks.status(task, _polling_url(str(request.base_url), task.id)), status_code=202)
    made = await _conversation.make(request, services, req, ctx, {**data, "prompt": req.prompt})
    return JSONResponse(completion(ctx, req.model, made, as_url, markdown))


def _polling_url(base_url: str, task_id: str) -> str:
    return f"{base_url.rstrip('/')}/v1/chat/completions/{task_id}"


async def render_task(task, base_url: str, services) -> dict:
    """A finished task's chat completion, as the synchronous call would have answered it."""
    made = await _conversation.made_by(task, base_url, services)
    as_url = task.request.get("delivery") == Delivery.URL.value
    return {**completion_of(task.request_id, task.model, made, as_url, services.settings.chat_markdown_images),
            "id": "chatcmpl-" + task.id.removeprefix("task_")}


async def render_webhook(task, base_url: str, services) -> dict:
    """A task's webhook: its status and, once it succeeded, the completion itself."""
    return await _tasks.webhook_body(task, _polling_url(base_url, task.id), lambda: render_task(task, base_url, services))


@router.get("/v1/chat/completions/{task_id}", summary="A chat completion run as a task (Prefer: respond-async)",
            responses={**ok(ChatCompletion), **ok(ImageTask, 202, "Still running"), **Errors(OpenAIError)(*GENERATING)})
async def completion_task(task_id: str, request: Request, caller: PrincipalDep, services: ServicesDep) -> Response:
    """202 with the status while the task runs; then the completion, or its error."""
    task = await services.tasks.get(task_id, caller.key_id)
    if task.status in LIVE:
        return JSONResponse(_tasks.status(task, _polling_url(str(request.base_url), task.id)), status_code=202)
    _tasks.raise_failure(task)
    return JSONResponse(await render_task(task, str(request.base_url), services))


def request_of(data: dict) -> tuple[ImageRequest, bool]:
    """The image request of a chat body's own fields (all but the conversation and stream), and
    whether the images go out as links."""
    if not isinstance(data.get("model"), str) or not data["model"]:
        raise InvalidRequest("Missing required parameter: 'model'.", field="model", code="missing_required_parameter")
    response_format = data.pop("response_format", None)
    if response_format not in (None, {"type": "text"}):
        raise InvalidRequest("'response_format' must be {\"type\": \"text\"}: images come as data URLs, or as "
                             "links with \"image_response\": \"url\".", field="response_format")
    image_response = data.pop("image_response", None)
    if image_response not in DELIVERIES:
        raise InvalidRequest(f"Invalid value: '{image_response}'. 'image_response' is 'data_url' or 'url'.",
                             field="image_response")
    _modalities(data.pop("modalities", None))
    config = data.pop("image_config", None)
    if config is not None:
        if "size" in data:
            raise InvalidRequest("'size' and 'image_config' cannot be used together; give one of them.",
                                 field="image_config")
        data["size"] = image_config_size(config)
    req = to_request(parse(ImageFields, data), Operation.GENERATE)
    req.delivery = DELIVERIES[image_response]
    return req, req.delivery is Delivery.URL


def _modalities(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or "image" not in value or not set(value) <= {"image", "text"}:
        raise InvalidRequest("'modalities' must include \"image\" (and may include \"text\"): this model makes "
                             "images.", field="modalities")


def image_config_size(config: Any) -> str:
    """OpenRouter's image_config as a size: an aspect ratio, a tier (1K, 2K, 4K), or both (16:9@2K)."""
    if not isinstance(config, dict) or not set(config) <= {"aspect_ratio", "image_size"}:
        raise InvalidRequest("'image_config' takes 'aspect_ratio' and 'image_size'.", field="image_config")
    ratio, tier = config.get("aspect_ratio"), config.get("image_size")
    if ratio is not None and (not isinstance(ratio, str)
                              or sizes.parse(ratio, "image_config.aspect_ratio").ratio is None):
        raise InvalidRequest(f"Invalid value: '{ratio}'. 'image_config.aspect_ratio' is a ratio such as 16:9.",
                             field="image_config.aspect_ratio")
    if tier is not None and (not isinstance(tier, str) or tier.upper() not in TIERS):
        raise InvalidRequest(f"Invalid value: '{tier}'. 'image_config.image_size' is 1K, 2K or 4K.",
                             field="image_config.image_size")
    return "@".join(str(v).upper() for v in (ratio, tier) if v is not None) or "auto"


def turns(messages: Any) -> list[Turn]:
    """Chat messages: content as text or parts (text, image_url), and an assistant's `images`
    (OpenRouter) or, failing those, the markdown images of its content."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", field="messages",
                             code="missing_required_parameter" if messages is None else "invalid_type")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"'{where}' must be an object with a 'role'.", field=f"{where}.role")
        text, images = _content(message.get("content"), f"{where}.content")
        extra = message.get("images") or []
        if not isinstance(extra, list):
            raise InvalidRequest(f"'{where}.images' must be an array.", field=f"{where}.images")
        images += [(_image_url(image, f"{where}.images[{j}]"), f"{where}.images[{j}].image_url.url")
                   for j, image in enumerate(extra)]
        if message["role"] == "assistant" and not images:
            images = [(url, f"{where}.content") for url in _conversation.markdown_images(text)]
        out.append(Turn(message["role"], text, images, f"{where}.content"))
    return out


def _content(content: Any, where: str) -> tuple[str, list[tuple[str, str]]]:
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}' must be a string or an array of parts.", field=where, code="invalid_type")
    text, images = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            text.append(part["text"])
        elif kind == "image_url":
            images.append((_image_url(part, f"{where}[{j}]"), f"{where}[{j}].image_url.url"))
        else:
            raise InvalidRequest(f"'{where}[{j}]' must be a text part or an image_url part.",
                                 field=f"{where}[{j}].type")
    return "\n".join(text), images


def _image_url(part: Any, where: str) -> str:
    value = part.get("image_url") if isinstance(part, dict) else None
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"'{where}.image_url.url' must be a URL or a data URL.", field=f"{where}.image_url.url")
    return url


# ---- answers ----

def _link(image: DeliveredImage, as_url: bool) -> str:
    return image.url if as_url and image.url else _conversation.data_url(image)


def _usage(meta: dict) -> dict:
    usage = meta.get("usage") if isinstance(meta.get("usage"), dict) else {}
    prompt, completion_ = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion_, "total_tokens": prompt + completion_}


def _text(images: list[DeliveredImage], links: list[str], markdown: bool) -> str:
    said = list(dict.fromkeys(i.revised_prompt for i in images if i.revised_prompt))
    return "\n\n".join(said + ([f"![image]({link})" for link in links] if markdown else []))


def completion(ctx: RequestContext, model: str, made: Made, as_url: bool, markdown: bool) -> dict:
    return completion_of(ctx.request_id, model, made, as_url, markdown)


def completion_of(request_id: str, model: str, made: Made, as_url: bool, markdown: bool) -> dict:
    links = [_link(image, as_url) for image in made.images]
    message = {"role": "assistant", "content": _text(made.images, links, markdown),
               "images": [{"type": "image_url", "image_url": {"url": link}} for link in links]}
    return {"id": "chatcmpl-" + request_id.removeprefix("req_"), "object": "chat.completion",
            "created": made.created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": _usage(made.meta)}


def _completion_id(ctx: RequestContext) -> str:
    return "chatcmpl-" + ctx.request_id.removeprefix("req_")


async def _chunks(events: AsyncIterator, req: ImageRequest, ctx: RequestContext, as_url: bool,
                  markdown: bool) -> AsyncIterator[bytes]:
    head = {"id": _completion_id(ctx), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": req.model}

    def chunk(delta: dict, finish: str | None = None, **more: Any) -> bytes:
        body = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **more}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    said, said_image, meta = False, False, {}
    async for event in events:
        if event is None:
            yield b": keep-alive\n\n"
        elif isinstance(event, StreamPartial):
            fmt = event.meta.get("output_format") or req.output_format or "png"
            url = f"data:image/{fmt};base64,{_conversation.b64_text(event)}"
            yield chunk({"partial_image": {"type": "image_url", "image_url": {"url": url}, "index": event.index}})
        else:
            meta, link, said_image = event.meta, _link(event.image, as_url), True
            text = [] if said or not event.image.revised_prompt else [event.image.revised_prompt]
            said = said or bool(text)
            delta: dict[str, Any] = {"images": [{"type": "image_url", "image_url": {"url": link}}]}
            if text or markdown:
                delta["content"] = "\n\n".join(text + ([f"![image]({link})"] if markdown else [])) + "\n\n"
            yield chunk(delta)
    if not said_image:
        raise UpstreamBadResponse("The upstream ended its stream without any image.")
    yield chunk({}, "stop", usage=_usage(meta))


def _failed(exc: GatewayError) -> list[bytes]:
    """OpenAI's error on a stream that began: the SDKs raise it as an APIError."""
    return [b"data: " + orjson.dumps({"error": {"message": exc.message, "type": exc.type, "param": exc.field,
                                                 "code": exc.code}}) + b"\n\n"]
