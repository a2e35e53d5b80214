"""The OpenAPI document at /openapi.json, and Swagger UI at /docs served from the package.

The surfaces parse their own bodies (each dialect has its own rules and error shapes), so
FastAPI sees no body parameters and would describe none. The bodies are declared here instead,
from the same pydantic models and field tables the surfaces check against, so the document
cannot drift far from what is accepted; the handlers are not changed by it. Routes hidden from
FastAPI's own listing (the unversioned /images/generations, the /mj-* speed prefixes, /healthz)
are added as the copies they are. The fuzz test (tests/test_fuzz.py) walks this document.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.staticfiles import StaticFiles

from pixelgate.domain.request import Operation

SECURITY = {"bearer": {"type": "http", "scheme": "bearer",
                       "description": "The gateway key (pg-...). Ideogram's routes also take `Api-Key`, "
                                      "midjourney-proxy's `mj-api-secret`."},
            "apiKey": {"type": "apiKey", "in": "header", "name": "Api-Key"},
            "mjApiSecret": {"type": "apiKey", "in": "header", "name": "mj-api-secret"}}
BINARY = {"type": "string", "format": "binary"}


def install(app: FastAPI) -> None:
    """Replace FastAPI's document with the full one; serve Swagger UI's files from the package."""
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the UI is optional; the document is not
        return
    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")


def build(app: FastAPI) -> dict:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="Image generation behind the OpenAI, Replicate, predictions, Ideogram and "
                                  "midjourney-proxy APIs.")
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = SECURITY
    doc["security"] = [{"bearer": []}, {"apiKey": []}, {"mjApiSecret": []}]
    paths = doc["paths"]
    for (path, method), body in _bodies(schemas).items():
        operation = paths.get(path, {}).get(method)
        if operation is not None:
            operation["requestBody"] = {"required": True, "content": body}
    _copy(paths, "/v1/images/generations", "/images/generations")
    _copy(paths, "/ideogram/edit", "/ideogram/eidt")
    for path in [p for p in paths if p.startswith("/mj/")]:
        for mode in ("mj-fast", "mj-turbo", "mj-relax"):
            _copy(paths, path, f"/{mode}{path}")
    paths["/healthz"] = {"get": {"operationId": "healthz", "summary": "Liveness", "security": [],
                                 "responses": {"200": {"description": "The gateway is up",
                                                       "content": {"application/json": {"schema": {
                                                           "type": "object"}}}}}}}
    return doc


def _copy(paths: dict, source: str, target: str) -> None:
    if source not in paths:
        return
    item = copy.deepcopy(paths[source])
    suffix = "_" + "".join(c if c.isalnum() else "_" for c in target.strip("/"))
    for operation in item.values():
        if isinstance(operation, dict) and "operationId" in operation:
            operation["operationId"] += suffix
    paths[target] = item


def _model(model: type[BaseModel], schemas: dict) -> dict:
    """A pydantic model's JSON schema, its nested definitions moved into components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    return schema


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _form(properties: dict, required: list[str] | tuple = ()) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = sorted(required)
    return {"multipart/form-data": {"schema": schema}}


def _bodies(schemas: dict) -> dict[tuple[str, str], dict]:
    from pixelgate.config import ChannelConfig
    from pixelgate.surfaces import admin, ideogram, midjourney, predictions
    from pixelgate.surfaces.openai_images import FormFields, ImageFields

    fields = _model(ImageFields, schemas)
    form_fields = {k: ({"type": "string"} if v.get("type") in ("integer", "boolean") or "anyOf" in v else v)
                   for k, v in _model(FormFields, schemas)["properties"].items()}
    image_ref = {"type": "object", "properties": {"image_url": {"type": "string"}}, "required": ["image_url"]}
    inputs = _model(predictions.CommonInput, schemas)
    prediction = {"type": "object", "properties": {"input": inputs, "webhook": {"type": "string", "format": "uri"}},
                  "required": ["input"]}
    bodies: dict[tuple[str, str], dict] = {
        ("/v1/images/generations", "post"): _json(fields),
        ("/v1/images/edits", "post"): {
            **_form({**form_fields, "image": BINARY, "image[]": {"type": "array", "items": BINARY}, "mask": BINARY},
                    ["image", "prompt"]),
            **_json({"type": "object", "properties": {**fields["properties"], "images": {
                "type": "array", "items": image_ref}, "mask": image_ref}, "required": ["images", "prompt"]})},
        ("/v1/images/variations", "post"): _form({**form_fields, "image": BINARY}, ["image"]),
        ("/models/{vendor}/{model}/predictions", "post"): _json(prediction),
        ("/v1/models/{owner}/{name}/predictions", "post"): _json({
            "type": "object", "properties": {**prediction["properties"], "webhook_completed": {"type": "string"},
                                             "webhook_events_filter": {"type": "array", "items": {"type": "string"}},
                                             "stream": {"type": "boolean"}}, "required": ["input"]}),
        ("/mj/task/list-by-condition", "post"): _json({"type": "object", "properties": {
            "ids": {"type": "array", "items": {"type": "string"}}}}),
        ("/admin/keys", "post"): _json(_model(admin.KeyCreate, schemas)),
        ("/admin/keys/{key_id}", "patch"): _json(_model(admin.KeyUpdate, schemas)),
        ("/admin/accounts", "post"): _json(_model(admin.AccountCreate, schemas)),
        ("/admin/accounts/{account_id}/topup", "post"): _json(_model(admin.TopUp, schemas)),
        ("/admin/prices", "post"): _json(_model(admin.PriceCreate, schemas)),
        ("/admin/channels", "post"): _json(_model(ChannelConfig, schemas)),
        ("/admin/channels/{name}", "patch"): _json({"type": "object", "properties": _model(
            ChannelConfig, schemas)["properties"]}),
    }
    for path, model in (("imagine", midjourney.ImagineBody), ("blend", midjourney.BlendBody),
                        ("describe", midjourney.DescribeBody), ("change", midjourney.ChangeBody),
                        ("simple-change", midjourney.SimpleChangeBody), ("action", midjourney.ActionBody),
                        ("modal", midjourney.ModalBody)):
        bodies[(f"/mj/submit/{path}", "post")] = _json(_model(model, schemas))
    v3_paths = {Operation.GENERATE: "generate", Operation.REMIX: "remix", Operation.EDIT: "edit",
                Operation.REFRAME: "reframe", Operation.REPLACE_BACKGROUND: "replace-background"}
    for op, (spec, required) in ideogram.V3.items():
        body = _form({name: _field(kind, ideogram) for name, kind in spec.items()}, tuple(required))
        if op is Operation.GENERATE:
            body.update(_json(body["multipart/form-data"]["schema"]))
        bodies[(f"/ideogram/v1/ideogram-v3/{v3_paths[op]}", "post")] = body
    legacy_paths = {Operation.GENERATE: "generate", Operation.REMIX: "remix", Operation.EDIT: "edit",
                    Operation.UPSCALE: "upscale", Operation.DESCRIBE: "describe"}
    for op, (spec, required, how) in ideogram.LEGACY.items():
        files = {n: _field(k, ideogram) for n, k in spec.items() if k in (ideogram.FILE, ideogram.FILES)}
        text = {n: _field(k, ideogram, json_value=how == "request") for n, k in spec.items() if n not in files}
        if how == "form":
            body = _form({**text, **files}, tuple(required))
        else:
            request = {"type": "object", "properties": text, "required": sorted(set(required) - set(files))}
            body = _form({"image_request": {"type": "string", "description": "a JSON object: "
                                            + ", ".join(sorted(text))}, **files},
                         ["image_request", *sorted(set(required) & set(files))])
            if op is Operation.GENERATE:
                body = _json({"type": "object", "properties": {"image_request": request},
                              "required": ["image_request"]})
        bodies[(f"/ideogram/{legacy_paths[op]}", "post")] = body
    return bodies


def _field(kind: Any, ideogram: Any, json_value: bool = False) -> dict:
    """One field of the Ideogram tables as a schema (a multipart part is text unless a file)."""
    if kind == ideogram.FILE:
        return BINARY
    if kind == ideogram.FILES:
        return {"type": "array", "items": BINARY}
    if kind == ideogram.OBJECT:
        return {"type": "object"} if json_value else {"type": "string", "description": "a JSON object"}
    if isinstance(kind, ideogram.Int):
        schema = {"type": "integer", "minimum": kind.lo, "maximum": kind.hi}
        return schema if json_value else {"type": "string", "pattern": r"^-?[0-9]+$"}
    if isinstance(kind, tuple):
        return {"type": "string", "enum": list(kind)}
    return {"type": "string"}
