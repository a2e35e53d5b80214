"""Strict loopback emulator of Azure OpenAI's image endpoints: the OpenAI emulator
(simulators/openai_images.py: its validation, images and streams) behind Azure's addresses, auth
and errors. Clients use the resource endpoint as base URL.

  POST /openai/deployments/{deployment}/images/{generations,edits}?api-version=...
  POST /openai/v1/images/{generations,edits}         (`model` names the deployment)

Auth: `api-key` header, or `Authorization: Bearer <Entra ID token>` (state.ad_token). Errors in
Azure's words: 401 {"error": {"code": "401", "message": "Access denied due to invalid
subscription key or wrong API endpoint..."}}; an unknown deployment 404 DeploymentNotFound; a
missing api-version 404 "Resource not found"; an unknown one 400 "API version not supported"; the
content filter (a prompt containing the needle) 400 content_policy_violation with
`inner_error.content_filter_results`. The model behind a deployment is what the body's `model` is
checked as (Azure ignores the body's own `model` on the deployments path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pixelgate.simulators import openai_images as oa

__all__ = ["AzureEmulatorState", "create_app", "API_VERSIONS"]

# api-versions serving GPT image models (Azure's API lifecycle page, as recorded)
API_VERSIONS = ("2025-04-01-preview", "2025-03-01-preview", "2025-05-01-preview", "2025-06-01",
                "2025-08-01-preview", "2025-10-01-preview", "2026-01-01-preview")
_CATEGORIES = ("hate", "self_harm", "sexual", "violence")


@dataclass
class AzureEmulatorState(oa.OpenAIEmulatorState):
    api_key: str = "azure-emulator-key"
    ad_token: str | None = None
    deployments: dict[str, str] = field(default_factory=lambda: {
        m: m for m in oa.MODELS if m.startswith("gpt-image")})
    """Deployment name -> the model it runs (default: one deployment per GPT image model, named after it)."""


def _error(status: int, code: str, message: str, **extra) -> oa.ApiError:
    return oa.ApiError.raw(status, {"error": {"code": code, "message": message, **extra}})


def _auth(request: Request, state: AzureEmulatorState) -> oa.ApiError | None:
    key = request.headers.get("api-key")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if key is not None and key == state.api_key:
        return None
    if key is None and scheme.lower() == "bearer" and state.ad_token and token.strip() == state.ad_token:
        return None
    return _error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
                              "provide a valid key for an active subscription and use a correct regional API "
                              "endpoint for your resource.")


def _admit(request: Request, state: AzureEmulatorState, fields: dict) -> None:
    v1 = request.url.path.startswith("/openai/v1/")
    if not v1:
        version = request.query_params.get("api-version")
        if version is None:
            raise _error(404, "404", "Resource not found")
        if version not in API_VERSIONS:
            raise _error(400, "BadRequest", "API version not supported")
    deployment = fields.get("model") if v1 else request.path_params["deployment"]
    if deployment not in state.deployments:
        raise _error(404, "DeploymentNotFound", "The API deployment for this resource does not exist. If you "
                                                "created the deployment within the last 5 minutes, please wait "
                                                "a moment and try again.")
    fields["model"] = state.deployments[deployment]
    needle = state.refuse_prompts_containing
    if needle and needle.lower() in str(fields.get("prompt", "")).lower():
        results = {c: {"filtered": c == "violence", "severity": "high" if c == "violence" else "safe"}
                   for c in _CATEGORIES}
        raise _error(400, "content_policy_violation",
                     "Your request was rejected as a result of our safety system. Your prompt may contain text "
                     "that is not allowed by our safety system.", param="prompt", type="invalid_request_error",
                     inner_error={"code": "ResponsibleAIPolicyViolation", "content_filter_results": results})


async def _not_found(request: Request) -> Response:
    oa._record(request.app.state.emulator, request, {})
    return oa._json({"error": {"code": "404", "message": "Resource not found"}}, "", 404)


def create_app(state: AzureEmulatorState | None = None) -> Starlette:
    routes = []
    for endpoint in ("generations", "edits"):
        handler = oa._endpoint(endpoint, _auth, _admit)
        routes += [Route(f"/openai/deployments/{{deployment}}/images/{endpoint}", handler, methods=["POST"]),
                   Route(f"/openai/v1/images/{endpoint}", handler, methods=["POST"])]
    app = Starlette(routes=[*routes, Route("/{path:path}", _not_found, methods=["GET", "POST", "PUT", "DELETE"])])
    app.state.emulator = state if state is not None else AzureEmulatorState()
    return app
