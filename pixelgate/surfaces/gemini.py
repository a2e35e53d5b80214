"""Gemini's own API (the Gemini Developer API's generateContent), so that google-genai and other
Gemini clients, pointed here by base URL, reach every image model the gateway serves: FLUX,
gpt-image and the sandbox as well as Gemini's own image models (which the `google` provider calls
upstream with this same wire format; this module is the inbound side).

Each path also under /v1 (google-genai's default version; GET /v1/models answers in this shape
only to a request with its key in `x-goog-api-key` or `?key=`, OpenAI's list to any other):
  POST /v1beta/models/{model}:generateContent
  POST /v1beta/models/{model}:streamGenerateContent?alt=sse   one `data:` event with the whole answer
       (without alt=sse: a JSON array of that one answer, as Google streams without it)
  GET  /v1beta/models, /v1beta/models/{model}                 the key's models, Google's shape
  GET  /v1beta/operations/{id}                                a task started with Prefer: respond-async

The key: `x-goog-api-key` header or `?key=` (also `Authorization: Bearer`). The request:
  {"contents": [{"role": "user", "parts": [{"text"}, {"inlineData": {"mimeType", "data"}},
                                           {"fileData": {"mimeType", "fileUri": http(s) URL}}]}],
   "systemInstruction"?: {"parts": [{"text"}]},
   "generationConfig": {"responseModalities": ["TEXT", "IMAGE"] | ["IMAGE"], "candidateCount": n, "seed",
                        "imageConfig": {"aspectRatio": "16:9", "imageSize": "1K" | "2K" | "4K"}}}
in lowerCamelCase or snake_case, as Google takes both. The prompt is the last user turn's text
(after the system instruction's). The images to edit are those of the most recent turn that has
any: the last user turn's own, or else the image an earlier model turn answered, so that
multi-turn editing ("now make it blue") works as with Gemini. Sampling fields that mean nothing to
an image model (temperature, topP, thinkingConfig, safetySettings...) are accepted and ignored;
any other field is a 400 naming it, but for the gateway's own `webhook` (a URL): the request runs
as a task, and the URL is sent its operation (as GET /v1beta/operations/{id} shows it) once done.

Answers {"candidates": [{"content": {"role": "model", "parts": [{"text"}?, {"inlineData"}]},
"finishReason": "STOP", "index": i}], "usageMetadata", "modelVersion", "responseId"}: one
candidate per image (candidateCount), the text part the vendor's revised prompt when TEXT was
asked for. A vendor's content-policy refusal is answered as Gemini answers a withheld image:
HTTP 200, one candidate with finishReason IMAGE_SAFETY, a finishMessage and no parts (clients
that read candidates[0].finish_reason see it; nothing is charged). Errors:
{"error": {"code", "message", "status": "INVALID_ARGUMENT"..., "details": [ErrorInfo, BadRequest
fieldViolations naming the field, RetryInfo]}}.
"""

from __future__ import annotations

import math
from typing import Any, Callable
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request, Response
from starlette.routing import Match
from starlette.types import Scope

from pixelgate import wirejson
from pixelgate.domain.images import MIME_BY_FORMAT, load_image
from pixelgate.domain.prices import token_usage
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.errors import GatewayError, InvalidRequest, ModelNotFound, UpstreamContentFiltered
from pixelgate.services.engine import RequestContext
from pixelgate.services.fetch import decode_inline
from pixelgate.services.tasks import LIVE, aware
from pixelgate.surfaces import _tasks
from pixelgate.surfaces._answers import GeminiError, GeminiModel, GeminiModelList, GeminiOperation, GeminiResponse
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import GENERATING, Errors, body, json, ok
from pixelgate.surfaces._route import surface_route
from pixelgate.surfaces.deps import ContextDep, PrincipalDep, ServicesDep
from pixelgate.surfaces._body import json_body
from pixelgate.surfaces.openai_images import _models

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 402: "RESOURCE_EXHAUSTED", 403: "PERMISSION_DENIED",
          404: "NOT_FOUND", 409: "ABORTED", 410: "NOT_FOUND", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
          500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
"""google.rpc codes by HTTP status (a spent balance, 402, is an exhausted quota)."""
FIELDS = {"prompt": "contents", "image": "contents.parts.inlineData", "images": "contents.parts.inlineData",
          "n": "generationConfig.candidateCount", "seed": "generationConfig.seed",
          "size": "generationConfig.imageConfig"}
"""The engine's names for the request's fields -> where a Gemini request has them."""
TYPE = "type.googleapis.com/google.rpc."
MISSING_KEY = ("Method doesn't allow unregistered callers. Send the gateway key as "
               "'x-goog-api-key: <key>' or '?key=<key>'.")
"""Google's answer to a request without a key, naming where Google's clients send one."""


def render_error(exc: GatewayError) -> Response:
    field = FIELDS.get(exc.field or "", exc.field)
    message = MISSING_KEY if exc.code == "missing_api_key" else exc.message
    if field and exc.status == 400 and field.split(".")[0].split("[")[0] in TOP and field not in message:
        # as Google names a field of the body: "* GenerateContentRequest.<field>: why"
        message = f"* GenerateContentRequest.{field}: {message}"
    details: list[dict] = [{"@type": TYPE + "ErrorInfo", "reason": exc.code.upper(), "domain": "pixelgate"}]
    if field:
        details.append({"@type": TYPE + "BadRequest", "fieldViolations": [{"field": field, "description": exc.message}]})
    if (retry := exc.headers.get("retry-after", "")).isdigit():
        details.append({"@type": TYPE + "RetryInfo", "retryDelay": f"{retry}s"})
    return JSONResponse({"error": {"code": exc.status, "message": message, "status": STATUS.get(exc.status, "UNKNOWN"),
                                   "details": details}}, status_code=exc.status)


ERRORS = Errors(GeminiError)
GENERATED = {**ok(GeminiResponse, description="The images, one candidate each; a refusal is a candidate with "
                                              "finishReason IMAGE_SAFETY"),
             **ok(GeminiOperation, 202, "With Prefer: respond-async: the operation, running"), **ERRORS(*GENERATING)}
STREAMED = {**ok([GeminiResponse], description="Without alt=sse: a JSON array of the one answer",
                 also={"text/event-stream": {"type": "string", "description": "alt=sse: `data: <answer>`"}}),
            **ERRORS(*GENERATING)}
router = APIRouter(route_class=surface_route("gemini", render_error, key_in_query=True), tags=["Gemini"])
models_router = APIRouter(route_class=surface_route("gemini", render_error, logged=False, key_in_query=True),
                          tags=["Gemini"])


class _GoogleClientRoute(surface_route("gemini", render_error, logged=False, key_in_query=True)):  # type: ignore[misc]
    """A route that only a Gemini client's request reaches (its key in `x-goog-api-key` or
    `?key=`): GET /v1/models is OpenAI's list for everyone else."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if b"x-goog-api-key" not in dict(scope.get("headers") or ()) and \
                "key" not in parse_qs(scope.get("query_string", b"").decode("latin-1")):
            return Match.NONE, {}
        return super().matches(scope)


v1_models_router = APIRouter(route_class=_GoogleClientRoute, tags=["Gemini"], include_in_schema=False)
"""/v1/models for google-genai, which calls v1 by default (include it before OpenAI's)."""


def route(method: str, path: str, api: APIRouter = router, v1: APIRouter | None = None, **options: Any) -> Callable:
    """A route under /v1beta, documented, and the same under /v1 (google-genai's default version)."""
    def register(endpoint: Callable) -> Callable:
        api.add_api_route("/v1beta" + path, endpoint, methods=[method], **options)
        (v1 or api).add_api_route("/v1" + path, endpoint, methods=[method], include_in_schema=False)
        return endpoint
    return register


TOP = {"contents", "generationConfig", "systemInstruction"}
IGNORED_TOP = {"safetySettings"}
CONFIG = {"responseModalities", "candidateCount", "seed", "imageConfig"}
IGNORED_CONFIG = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "presencePenalty",
                  "frequencyPenalty", "responseMimeType", "thinkingConfig", "mediaResolution", "responseLogprobs",
                  "logprobs"}
"""Sampling settings of a text model: an image model has none of them, so they change nothing."""
PART = {"text", "inlineData", "fileData", "thought", "thoughtSignature"}
RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "1:4", "4:1", "1:8", "8:1")
URL_SAFE = str.maketrans("-_", "+/")
"""Protobuf's JSON takes either base64 alphabet, and google-genai sends bytes in the URL-safe one."""
TIERS = {"1K": 1024 * 1024, "2K": 2048 * 2048, "4K": 4096 * 4096}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _object(value: Any, where: str, known: set[str], ignored: set[str] = frozenset()) -> dict[str, Any]:
    """A request object with its keys in lowerCamelCase (protobuf JSON takes snake_case too);
    ignored keys dropped, unknown ones a 400 naming them."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"Invalid JSON payload received. '{where}' must be an object.", field=where)
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = _camel(key)
        path = f"{where}.{name}" if where else name
        if name in out:
            raise InvalidRequest(f"'{path}' was given twice (as {key} and in lowerCamelCase).", field=path)
        if name not in known | ignored:
            raise InvalidRequest(f'Invalid JSON payload received. Unknown name "{key}"'
                                 + (f" at '{where}'" if where else "") + ": Cannot find field.", field=path)
        if name in known:
            out[name] = item
    return out


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InvalidRequest(f"Invalid value at '{field}' (TYPE_INT32), {orjson.dumps(value).decode()}.", field=field)
    return int(value)


class Turn:
    """One content of the conversation: its role, texts and image references (not yet decoded)."""

    def __init__(self, role: str) -> None:
        self.role, self.texts, self.images = role, [], []  # images: (kind, value, field)


def _turns(contents: Any) -> list[Turn]:
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest("contents is not specified: give a list of {role, parts}.", field="contents")
    turns = []
    for i, raw in enumerate(contents):
        content = _object(raw, f"contents[{i}]", {"role", "parts"})
        turn = Turn(content.get("role") or "user")
        if turn.role not in ("user", "model"):
            raise InvalidRequest(f"Please use a valid role: user, model. Got: {turn.role}.", field=f"contents[{i}].role")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise InvalidRequest("contents.parts must not be empty.", field=f"contents[{i}].parts")
        for j, raw_part in enumerate(parts):
            _part(turn, _object(raw_part, f"contents[{i}].parts[{j}]", PART), f"contents[{i}].parts[{j}]")
        turns.append(turn)
    return turns


def _part(turn: Turn, part: dict, where: str) -> None:
    if part.get("thought"):  # a 3.x model's thinking, interim images included: not the answer
        return
    if "inlineData" in part:
        blob = _object(part["inlineData"], f"{where}.inlineData", {"mimeType", "data"})
        if not isinstance(blob.get("data"), str):
            raise InvalidRequest("inlineData.data must be base64 text.", field=f"{where}.inlineData.data")
        turn.images.append(("inline", blob["data"], f"{where}.inlineData.data"))
    elif "fileData" in part:
        blob = _object(part["fileData"], f"{where}.fileData", {"mimeType", "fileUri"})
        uri = blob.get("fileUri")
        if not isinstance(uri, str) or not uri.lower().startswith(("http://", "https://")):
            raise InvalidRequest("fileData.fileUri must be an http(s) URL of the image (the Files API is not "
                                 "served here; send the bytes as inlineData).", field=f"{where}.fileData.fileUri")
        turn.images.append(("url", uri, f"{where}.fileData.fileUri"))
    elif "text" in part:
        if not isinstance(part["text"], str):
            raise InvalidRequest("text must be a string.", field=f"{where}.text")
        turn.texts.append(part["text"])


def _system_text(value: Any) -> str:
    if value is None:
        return ""
    instruction = _object(value, "systemInstruction", {"role", "parts"})
    texts = []
    for j, part in enumerate(instruction.get("parts") or []):
        texts.append(_object(part, f"systemInstruction.parts[{j}]", {"text"}).get("text") or "")
    return "\n".join(t for t in texts if isinstance(t, str))


def _size(image_config: dict) -> str | None:
    """aspectRatio, imageSize or both as one size: both are the pixels of that ratio at that tier."""
    ratio, tier = image_config.get("aspectRatio"), image_config.get("imageSize")
    if ratio is not None and ratio not in RATIOS:
        raise InvalidRequest(f"aspect_ratio must be one of {', '.join(RATIOS)}.",
                             field="generationConfig.imageConfig.aspectRatio")
    if tier is not None and tier not in TIERS:
        raise InvalidRequest(f"image_size must be one of {', '.join(TIERS)} (upper-case K).",
                             field="generationConfig.imageConfig.imageSize")
    if ratio is None or tier is None:
        return ratio or tier
    a, b = map(int, ratio.split(":"))
    width = math.sqrt(TIERS[tier] * a / b)
    return f"{round(width / 16) * 16}x{round(width * b / a / 16) * 16}"


def _modalities(value: Any) -> list[str]:
    field = "generationConfig.responseModalities"
    if value is None:
        return ["TEXT", "IMAGE"]
    if not isinstance(value, list) or any(not isinstance(m, str) or m.upper() not in ("TEXT", "IMAGE") for m in value):
        raise InvalidRequest(f"Invalid value at '{field}': each must be TEXT or IMAGE.", field=field)
    modalities = [m.upper() for m in value]
    if "IMAGE" not in modalities:
        raise InvalidRequest("This gateway makes images: responseModalities must include IMAGE.", field=field)
    return modalities


async def parse(model: str, body: dict, fetcher) -> tuple[ImageRequest, dict]:
    """The request as the engine takes it, and what the answer needs ({"modalities"})."""
    top = _object(body, "", TOP, IGNORED_TOP)
    turns = _turns(top.get("contents"))
    if turns[-1].role != "user":
        raise InvalidRequest("The last content must be the user's turn.", field=f"contents[{len(turns) - 1}].role")
    config = _object(top.get("generationConfig") or {}, "generationConfig", CONFIG, IGNORED_CONFIG)
    image_config = _object(config.get("imageConfig") or {}, "generationConfig.imageConfig", {"aspectRatio", "imageSize"})
    modalities = _modalities(config.get("responseModalities"))
    prompt = "\n\n".join(t for t in (_system_text(top.get("systemInstruction")), " ".join(turns[-1].texts)) if t)
    source = next((turn for turn in reversed(turns) if turn.images), None)
    images = []
    for kind, value, field in source.images if source else []:  # base64 is never taken for a URL
        images.append(await fetcher.image(value, field) if kind == "url"
                      else await load_image(await decode_inline(value.translate(URL_SAFE), field), field))
    req = ImageRequest(
        operation=Operation.EDIT if images else Operation.GENERATE, model=model.removeprefix("models/"),
        prompt=prompt, images=images, size=_size(image_config), delivery=Delivery.B64,
        n=_int(config["candidateCount"], "generationConfig.candidateCount") if "candidateCount" in config else 1,
        seed=_int(config["seed"], "generationConfig.seed") if "seed" in config else None)
    return req, {"modalities": modalities, "generationConfig": config}


# -- answers --

def _usage(meta: dict) -> dict:
    """The vendor's token counts where it reports them (Gemini's, gpt-image's), else none."""
    usage = token_usage(meta.get("token_usage"))
    if usage is None:
        return {}
    prompt = usage.text_input + usage.image_input
    return {"promptTokenCount": prompt, "candidatesTokenCount": usage.output, "totalTokenCount": prompt + usage.output,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.text_input}]
            + ([{"modality": "IMAGE", "tokenCount": usage.image_input}] if usage.image_input else [])}


def answer(images: list[tuple[Any, str, str | None]], meta: dict, model: str, response_id: str,
           modalities: list[str]) -> dict:
    """A GenerateContentResponse: one candidate per (base64, format, text) image."""
    candidates = []
    for i, (b64, fmt, text) in enumerate(images):
        parts: list[dict] = [{"text": text}] if text and "TEXT" in modalities else []
        parts.append({"inlineData": {"mimeType": MIME_BY_FORMAT.get(fmt, "image/png"), "data": b64}})
        candidates.append({"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": i})
    return {"candidates": candidates, "usageMetadata": _usage(meta), "modelVersion": model, "responseId": response_id}


def refusal(exc: GatewayError, model: str, response_id: str) -> dict:
    return {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "IMAGE_SAFETY",
                            "finishMessage": exc.message, "index": 0}],
            "usageMetadata": {}, "modelVersion": model, "responseId": response_id}


def _refused(exc: GatewayError) -> bool:
    """A vendor's safety refusal; a task's arrives as the plain error it stored."""
    return isinstance(exc, UpstreamContentFiltered) or exc.code == UpstreamContentFiltered.code


async def render_task(task, base_url: str, services) -> dict:
    items = await _tasks.images(task, base_url, services)
    images = [(item["b64_json"], image["format"], image.get("revised_prompt"))
              for item, image in zip(items, task.output or [])]
    return answer(images, task.meta or {}, task.model, task.request_id,
                  (task.input or {}).get("modalities") or ["TEXT", "IMAGE"])


def operation(task, response: dict | None = None, error: dict | None = None) -> dict:
    """A task as a google.longrunning Operation."""
    body: dict[str, Any] = {"name": f"operations/{task.id}", "done": task.status not in LIVE,
                            "metadata": {"status": task.status, "progress": task.progress,
                                         "createTime": aware(task.created_at).isoformat()}}
    if response is not None:
        body["response"] = response
    if error is not None:
        body["error"] = error
    return body


_BLOB = {"type": "object", "properties": {"mimeType": {"type": "string"}, "data": {"type": "string", "format": "byte"}}}
_PARTS = {"type": "array", "items": {"type": "object", "properties": {
    "text": {"type": "string"}, "inlineData": _BLOB,
    "fileData": {"type": "object", "properties": {"mimeType": {"type": "string"},
                                                  "fileUri": {"type": "string", "format": "uri"}}}}}}
REQUEST_SCHEMA = {"type": "object", "required": ["contents"], "properties": {
    "contents": {"type": "array", "items": {"type": "object", "properties": {
        "role": {"type": "string", "enum": ["user", "model"]}, "parts": _PARTS}}},
    "systemInstruction": {"type": "object", "properties": {"parts": _PARTS}},
    "generationConfig": {"type": "object", "properties": {
        "responseModalities": {"type": "array", "items": {"type": "string", "enum": ["TEXT", "IMAGE"]}},
        "candidateCount": {"type": "integer", "minimum": 1}, "seed": {"type": "integer"},
        "imageConfig": {"type": "object", "properties": {"aspectRatio": {"type": "string", "enum": list(RATIOS)},
                                                         "imageSize": {"type": "string", "enum": list(TIERS)}}}}}},
    "description": "snake_case keys are taken too (inline_data, generation_config...)"}
"""The request body as /openapi.json shows it."""


# -- routes --

async def _generate(model: str, request: Request, services, ctx: RequestContext, stream: bool) -> dict | Response:
    body = await json_body(request)
    webhook = await _tasks.webhook(services, body.pop("webhook", None))
    req, facts = await parse(model, body, services.fetcher)
    try:
        if await _tasks.needs_task(request, services, req, webhook):
            summary = {"prompt": req.prompt, "images": len(req.images), **facts}
            task = await _tasks.submit(request, services, req, ctx, summary, webhook)
            if _tasks.prefers_async(request) and not stream:
                return JSONResponse(operation(task), status_code=202)
            task = await _tasks.settled(services, task, ctx)
            return await render_task(task, str(request.base_url), services)
        ctx.answer_carries_bytes = True
        result = await services.engine.generate(req, ctx)
    except GatewayError as exc:
        if not _refused(exc):
            raise
        # answered 200 as Gemini answers it, yet logged as the refusal it is
        request.state.log_deferred = True
        await ctx.finish()
        services.log_request(ctx, 200, exc)
        return refusal(exc, req.model, ctx.request_id)
    images = [(image.b64, image.format, image.revised_prompt) for image in result.images]
    return answer(images, result.meta, req.model, ctx.request_id, facts["modalities"])


@route("POST", "/models/{model:path}:generateContent", summary="Generate content (images)", responses=GENERATED,
       openapi_extra=body(json(REQUEST_SCHEMA)))
async def generate_content(model: str, request: Request, _: PrincipalDep, services: ServicesDep, ctx: ContextDep
                           ) -> Response:
    """Images from text, or an edit of the images in the conversation, from any model the key may use."""
    result = await _generate(model, request, services, ctx, stream=False)
    return result if isinstance(result, Response) else JSONResponse(result)


@route("POST", "/models/{model:path}:streamGenerateContent", summary="Generate content, streamed",
       responses=STREAMED, openapi_extra=body(json(REQUEST_SCHEMA)))
async def stream_generate_content(model: str, request: Request, _: PrincipalDep, services: ServicesDep,
                                  ctx: ContextDep, alt: str | None = None) -> Response:
    """The answer once made, as one server-sent event (alt=sse) or a JSON array: an image model
    sends its image in one piece, and an error before it comes as a plain HTTP error."""
    result = await _generate(model, request, services, ctx, stream=True)
    if alt == "sse":
        return Response(b"data: " + wirejson.dumps(result) + b"\r\n\r\n", media_type="text/event-stream",
                        headers={"cache-control": "no-cache"})
    return JSONResponse([result])


@route("GET", "/operations/{task_id}", summary="An operation (Prefer: respond-async)",
       responses={**ok(GeminiOperation), **ERRORS(401, 404)})
async def get_operation(task_id: str, request: Request, caller: PrincipalDep, services: ServicesDep) -> Response:
    """The task, `done` once finished, with its `response` (the generateContent answer) or `error`."""
    task = await services.tasks.get(task_id, caller.key_id)
    return JSONResponse(await render_operation(task, str(request.base_url), services))


async def render_operation(task, base_url: str, services) -> dict:
    """A task as its operation: running, or done with the generateContent answer (a refusal is one,
    as Gemini answers it) or the error. Also the body of its webhook."""
    if task.status in LIVE:
        return operation(task)
    try:
        _tasks.raise_failure(task)
    except GatewayError as exc:
        if _refused(exc):
            return operation(task, response=refusal(exc, task.model, task.request_id))
        return operation(task, error={"code": exc.status, "message": exc.message,
                                      "status": STATUS.get(exc.status, "UNKNOWN")})
    return operation(task, response=await render_task(task, base_url, services))


def _model(entry: dict) -> dict:
    return {"name": f"models/{entry['id']}", "baseModelId": entry["id"], "version": "001",
            "displayName": entry["id"], "description": f"{entry['id']}, served by {entry['owned_by']} "
                                                       "through pixelgate (image output)",
            "inputTokenLimit": 0, "outputTokenLimit": 0, "supportedGenerationMethods": ["generateContent"]}


@route("GET", "/models", models_router, v1_models_router, summary="List models",
       responses={**ok(GeminiModelList), **ERRORS(400, 401)})
async def list_models(caller: PrincipalDep, services: ServicesDep, pageSize: int = 50, pageToken: str = "") -> Response:
    """The image models the key may use, `pageSize` at a time (the next page by `nextPageToken`)."""
    if not 1 <= pageSize <= 1000:
        raise InvalidRequest("pageSize must be between 1 and 1000.", field="pageSize")
    if pageToken and not pageToken.isdigit():
        raise InvalidRequest("pageToken is not one this list gave.", field="pageToken")
    models = [_model(m) for m in await _models(services.directory, services.settings) if caller.may_use(m["id"])]
    start = int(pageToken or 0)
    body: dict[str, Any] = {"models": models[start:start + pageSize]}
    if start + pageSize < len(models):
        body["nextPageToken"] = str(start + pageSize)
    return JSONResponse(body)


@route("GET", "/models/{model:path}", models_router, v1_models_router, summary="Get a model",
       responses={**ok(GeminiModel), **ERRORS(401, 404)})
async def get_model(model: str, caller: PrincipalDep, services: ServicesDep) -> Response:
    name = model.removeprefix("models/")
    for entry in await _models(services.directory, services.settings):
        if entry["id"] == name and caller.may_use(name):
            return JSONResponse(_model(entry))
    raise ModelNotFound(f"models/{name} is not found for API version v1beta.", field="model")
