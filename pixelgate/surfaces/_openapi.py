"""The OpenAPI document at /openapi.json, and Swagger UI at /docs and ReDoc at /redoc, both
served from the package (pixelgate/surfaces/apidocs: swagger-ui-dist 5.36.0 and redoc 2.5.4 from
npm, with their licenses), so that they work offline.

The surfaces parse their own bodies (each dialect has its own rules and error shapes), so
FastAPI sees no body parameters and would describe none. Each route declares its body instead
(`openapi_extra=body(json(Model))`, or `form(...)` for multipart), from the same pydantic models
its parser checks against, so the document cannot drift far from what is accepted. What each route
answers (its success body, and each error status in its API's own shape) the surfaces declare
on their routes with `ok` and an `Errors` of their shape; the models are in _answers.py. Routes
hidden from FastAPI's own listing (the unversioned /images/generations, the /mj-* speed
prefixes, /healthz) are added as the copies they are. The fuzz test (tests/test_fuzz.py) walks
this document; tests/test_openapi.py checks real answers against it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.staticfiles import StaticFiles

from pixelgate.surfaces._answers import Health

SECURITY = {"bearer": {"type": "http", "scheme": "bearer",
                       "description": "The gateway key (pg-...). Ideogram's routes also take `Api-Key`, "
                                      "midjourney-proxy's `mj-api-secret`, Gemini's `x-goog-api-key` "
                                      "or `?key=`."},
            "apiKey": {"type": "apiKey", "in": "header", "name": "Api-Key"},
            "mjApiSecret": {"type": "apiKey", "in": "header", "name": "mj-api-secret"},
            "googApiKey": {"type": "apiKey", "in": "header", "name": "x-goog-api-key"}}
BINARY = {"type": "string", "format": "binary"}
ASSETS = Path(__file__).parent / "apidocs"

TAGS = [
    {"name": "OpenAI Images", "description": "OpenAI's Images API (the official SDKs work with base_url set "
                                             "here), and its model list. Errors: `{\"error\": {message, type, "
                                             "param, code}}`."},
    {"name": "Chat", "description": "Images from a chat conversation, in OpenRouter's shape (`message.images`): "
                                   "for chat clients and SDKs. Errors in OpenAI's shape."},
    {"name": "Responses", "description": "OpenAI's Responses API with the `image_generation` tool, or an image "
                                        "model as `model`. Errors in OpenAI's shape."},
    {"name": "Predictions", "description": "The predictions and tasks API. Errors in OpenAI's shape, the field "
                                           "named as `input.<name>`."},
    {"name": "Replicate", "description": "Replicate's predictions API (the official client works). Errors: "
                                         "problem details, 422 naming the field in `invalid_fields`."},
    {"name": "Ideogram", "description": "Ideogram's own API: 4.0, 3.0 and legacy routes. Errors: "
                                        "`{\"error\": \"<message naming the field>\"}`."},
    {"name": "Midjourney", "description": "The midjourney-proxy API, also under /mj-fast, /mj-turbo and "
                                          "/mj-relax. Outcomes are HTTP 200 with a result `code`; only a "
                                          "missing key (401) and an unknown task (404) are not."},
    {"name": "Gemini", "description": "Gemini's own API (generateContent; google-genai works with base_url set "
                                      "here) in front of every image model. Errors: `{\"error\": {code, message, "
                                      "status, details}}`, the field named in the message and in a BadRequest "
                                      "fieldViolation."},
    {"name": "Stability", "description": "Stability AI's v2beta Stable Image API (generate, edit, upscale, "
                                         "results), the gateway key as Bearer. Answers the image's bytes "
                                         "(`Accept: image/*`) or JSON. Errors: `{\"id\", \"name\", "
                                         "\"errors\": [\"<field>: <message>\"]}`."},
    {"name": "Files", "description": "Images in the gateway's storage, by signed link."},
    {"name": "Admin", "description": "Keys, channels, accounts, prices, usage and the request log (admin keys "
                                     "only). Errors in OpenAI's shape."},
    {"name": "Health", "description": "Liveness, for load balancers."},
]

STATUS_TEXT = {
    400: "The request is invalid; the message names the field",
    401: "The key is missing, unknown, expired or disabled",
    402: "The key's balance or spending limit cannot cover the request",
    403: "The key may not use this model or route (or the model has no price and unpriced models are refused)",
    404: "No such model, task or object",
    410: "The vendor retired the model and the operator refuses it",
    413: "The request body is larger than max_body_bytes",
    422: "Refused",
    429: "Rate limited: the key's requests per minute or in flight, the vendor's, or too many unknown keys "
         "from this address (see Retry-After)",
    500: "An internal error; the message carries the request id",
    502: "The vendor failed, or answered something the gateway cannot read",
    503: "Every channel of the model is disabled",
    504: "The vendor did not answer in time",
}
GENERATING = (400, 401, 402, 403, 404, 410, 413, 429, 500, 502, 503, 504)
"""What a request that makes images can answer besides success."""
CANCELING = (401, 404, 429, 502, 503, 504)
"""A task's vendor may be told to stop its job, and refuse or fail."""

_models: dict[str, type[BaseModel]] = {}
"""The answer models the routes name, added to components by build()."""


_defs: dict[str, dict] = {}
"""The definitions nested in the request bodies' models, added to components by build()."""


def ref(model: type[BaseModel]) -> dict:
    _models[model.__name__] = model
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _schema(body: Any) -> dict:
    """A model, any of several (a tuple), a list of one ([Model]) or a plain schema (a dict)."""
    if isinstance(body, dict):
        return body
    if isinstance(body, tuple):
        return {"anyOf": [_schema(b) for b in body]}
    if isinstance(body, list):
        return {"type": "array", "items": _schema(body[0])}
    return ref(body)


def ok(body: Any, status: int = 200, description: str = "Success", also: dict[str, Any] | None = None
       ) -> dict[int, dict]:
    """A success answer for a route's `responses`: a JSON body (None: none), and `also` other
    media types ({"text/event-stream": schema})."""
    content = {"application/json": {"schema": _schema(body)}} if body is not None else {}
    content |= {media: {"schema": _schema(schema)} for media, schema in (also or {}).items()}
    return {status: {"description": description, "content": content}}


class Errors:
    """An API's error shape, as a route's `responses` for the statuses it answers. `always`: the
    statuses every route of the surface can answer (SurfaceRoute's auth throttle, 429, and its
    last resort, 500, for most)."""

    def __init__(self, model: type[BaseModel], media: str = "application/json", always: tuple[int, ...] = (429, 500),
                 notes: dict[int, str] | None = None) -> None:
        self.model, self.media, self.always, self.notes = model, media, always, notes or {}

    def __call__(self, *statuses: int) -> dict[int, dict]:
        return {status: {"description": self.notes.get(status, STATUS_TEXT[status]),
                         "content": {self.media: {"schema": ref(self.model)}}}
                for status in sorted({*statuses, *self.always})}


def install(app: FastAPI) -> None:
    """Replace FastAPI's document with the full one; serve Swagger UI and ReDoc from the package."""
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount("/docs/static", StaticFiles(directory=ASSETS), name="api-docs")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})  # its badge asks swagger.io

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} API",
                              redoc_js_url="/docs/static/redoc.standalone.js",
                              redoc_favicon_url="/docs/static/favicon-32x32.png", with_google_fonts=False)


def build(app: FastAPI) -> dict:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes, tags=TAGS,
                      description="Image generation behind the OpenAI, Replicate, predictions, Ideogram, "
                                  "midjourney-proxy and Gemini APIs. Each API answers errors in its own shape; none "
                                  "answers FastAPI's 422 (invalid input is a 400 naming the field).")
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = SECURITY
    doc["security"] = [{"bearer": []}, {"apiKey": []}, {"mjApiSecret": []}, {"googApiKey": []}]
    paths = doc["paths"]
    for item in paths.values():
        for operation in item.values():
            _drop_placeholders(operation["responses"])
    schemas.update(_defs)
    _copy(paths, "/v1/images/generations", "/images/generations", "without /v1")
    _copy(paths, "/ideogram/edit", "/ideogram/eidt", "the document's own spelling")
    for path in [p for p in paths if p.startswith("/mj/")]:
        for mode in ("mj-fast", "mj-turbo", "mj-relax"):
            _copy(paths, path, f"/{mode}{path}", mode)
    paths["/healthz"] = {"get": {"operationId": "healthz", "summary": "Liveness", "security": [],
                                 "tags": ["Health"],
                                 "responses": {"200": ok(Health, description="The gateway is up")[200]}}}
    for name, model in sorted(_models.items()):
        schemas[name] = _model(model, schemas)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def _drop_placeholders(responses: dict) -> None:
    """FastAPI's own entries for routes that return their own Response: an empty-schema JSON body
    beside the one a route declared, and 422 for path parameters (SurfaceRoute answers 400)."""
    if "HTTPValidationError" in str(responses.get("422")):
        del responses["422"]
    for answer in responses.values():
        content = answer.get("content", {})
        if content.get("application/json") == {"schema": {}} and len(content) > 1:
            del content["application/json"]


def _copy(paths: dict, source: str, target: str, note: str) -> None:
    if source not in paths:
        return
    item = copy.deepcopy(paths[source])
    suffix = "_" + "".join(c if c.isalnum() else "_" for c in target.strip("/"))
    for operation in item.values():
        if isinstance(operation, dict) and "operationId" in operation:
            operation["operationId"] += suffix
            operation["summary"] = f"{operation['summary']} ({note})"
    paths[target] = item


def _model(model: type[BaseModel], schemas: dict) -> dict:
    """A pydantic model's JSON schema, its nested definitions moved into components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    return schema


def schema_of(model: type[BaseModel]) -> dict:
    """A request model's JSON schema, inline, its nested definitions kept for components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _defs.update(schema.pop("$defs", {}))
    return schema


def body(*contents: dict) -> dict:
    """A route's `openapi_extra`: its request body, in one or more media types (json(), form())."""
    return {"requestBody": {"required": True, "content": {k: v for c in contents for k, v in c.items()}}}


def conversational(fields: dict, name: str, conversation: dict, own: dict) -> dict:
    """A chat or Responses body: model, the conversation, stream, its own fields, and any field of
    the Images API beside them (size, quality, n...)."""
    images = {k: v for k, v in fields["properties"].items() if k not in ("prompt", "response_format", "stream")}
    return {"type": "object", "properties": {**images, name: conversation, "stream": {"type": "boolean"}, **own},
            "required": ["model", name]}


def json(body: type[BaseModel] | dict) -> dict:
    return {"application/json": {"schema": body if isinstance(body, dict) else schema_of(body)}}


def form(model: type[BaseModel] | None = None, required: tuple[str, ...] = (), **parts: dict) -> dict:
    """A multipart body: `model`'s fields as the text parts they arrive as (files stay files),
    and `parts` besides."""
    schema = schema_of(model) if model is not None else {}
    properties = {name: _part(p) for name, p in schema.get("properties", {}).items()} | parts
    needed = sorted({*schema.get("required", ()), *required})
    return {"multipart/form-data": {"schema": {"type": "object", "properties": properties,
                                               **({"required": needed} if needed else {})}}}


def _part(schema: dict) -> dict:
    one = next((s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"), schema)
    if one.get("format") == "binary":
        return BINARY
    if one.get("items", {}).get("format") == "binary":
        return {"type": "array", "items": BINARY}
    if "enum" in one:
        return {"type": "string", "enum": [str(v) for v in one["enum"]]}
    if one.get("type") == "integer":
        return {"type": "string", "pattern": r"^-?[0-9]+$"}
    if one.get("type") == "boolean":
        return {"type": "string", "enum": ["true", "false"]}
    if one.get("type") == "object":
        return {"type": "string", "description": "a JSON object"}
    return {"type": "string"}
