"""Azure OpenAI: OpenAI's GPT image models deployed in an Azure resource. The wire format is
OpenAI's (this provider is the OpenAI one with Azure's addresses, key header and errors).

Upstream (reference: openai-python's AzureOpenAI, openai/lib/azure.py), base_url = the resource
endpoint https://<resource>.openai.azure.com:
  POST /openai/deployments/{deployment}/images/generations?api-version=2025-04-01-preview  (JSON)
  POST /openai/deployments/{deployment}/images/edits?api-version=...                     (multipart)
  or, with api_version = "v1": POST /openai/v1/images/{generations,edits}, `model` = the deployment
auth: `api-key: <key>`, or `Authorization: Bearer <Entra ID token>` (options.azure_ad_token_env
names the environment variable holding it, refreshed by whoever sets it).
errors: OpenAI's shape; code "DeploymentNotFound" (404), "API version not supported" (400) or a
bare 404 "Resource not found" for a wrong api-version or path, "content_policy_violation" /
"contentFilter" with `inner_error`/`innererror` content_filter_result(s) for the content filter,
numeric codes ("401", "429") elsewhere.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from pixelgate.domain.request import ImageRequest
from pixelgate.errors import UpstreamContentFiltered, UpstreamError, UpstreamRateLimited, UpstreamUnavailable
from pixelgate.providers.base import Channel, UpstreamCall, UpstreamReply
from pixelgate.providers.openai import OpenAI, error_from_body

DEFAULT_API_VERSION = "2025-04-01-preview"


class AzureOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_version: str = Field(default=DEFAULT_API_VERSION, pattern=r"^(v1|\d{4}-\d{2}-\d{2}(-preview)?)$")
    """A GA or preview api-version serving GPT image models, or "v1" for the /openai/v1/ API."""
    deployments: dict[str, str] = Field(default_factory=dict)
    """Public model name -> the deployment's name in the resource (default: the model's name)."""
    azure_ad_token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """An environment variable holding a Microsoft Entra ID token, sent instead of the api-key."""


_FILTER_CODES = {"content_policy_violation", "contentfilter", "content_filter", "responsibleaipolicyviolation"}
_VERSION = re.compile(r"api[- ]version", re.I)


class AzureOpenAI(OpenAI):
    name = "azure-openai"
    default_base_url = None
    needs_base_url = True
    channel_options = AzureOptions
    # Azure deploys the GPT image models (DALL-E was retired there first); the same limits apply.
    models = {m: caps for m, caps in OpenAI.models.items() if m.startswith("gpt-image")}

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        call = super().build(req, model, channel)
        options = channel.options
        deployment = options.get("deployments", {}).get(req.model) or model
        version = options.get("api_version", DEFAULT_API_VERSION)
        endpoint = call.url.rsplit("/images/", 1)[1]
        base = self.base_url(channel)
        if version == "v1":  # the deployment travels as `model`
            call.url = f"{base}/openai/v1/images/{endpoint}"
            _set_model(call, deployment)
        else:
            call.url = f"{base}/openai/deployments/{quote(deployment, safe='')}/images/{endpoint}?api-version={version}"
        token_env = options.get("azure_ad_token_env")
        call.headers = ({"Authorization": f"Bearer {os.environ.get(token_env, '')}"} if token_env
                        else {"api-key": channel.api_key or ""})
        return call

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        body = reply.json_or_none()
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return super().parse_error(reply)
        message = str(err.get("message") or f"upstream answered HTTP {reply.status}")
        code = str(err.get("code") or "")
        inner = err.get("inner_error") or err.get("innererror") or {}
        inner_code = str(inner.get("code") or "") if isinstance(inner, dict) else ""
        if {code.lower(), inner_code.lower()} & _FILTER_CODES:
            return UpstreamContentFiltered(_filtered(message, inner), field=err.get("param") or "prompt")
        if code == "DeploymentNotFound" or reply.status == 404 and code in ("404", "NotFound", ""):
            # The channel names a deployment, endpoint or api-version the resource lacks: another may serve.
            return UpstreamUnavailable(message, code="deployment_not_found" if code == "DeploymentNotFound"
                                       else "upstream_not_found")
        if reply.status == 400 and _VERSION.search(message):
            return UpstreamUnavailable(message, code="api_version_not_supported")
        if reply.status == 429:
            retry = reply.headers.get("retry-after")
            return UpstreamRateLimited(message, code="rate_limited",
                                       headers={"retry-after": retry} if retry and retry.isdigit() else None)
        if code.isdigit():  # Azure's numeric codes say no more than the status
            err = {**err, "code": None}
        return error_from_body(reply.status, {"error": err})


def _set_model(call: UpstreamCall, deployment: str) -> None:
    if call.json is not None:
        call.json["model"] = deployment
    elif call.form is not None:
        call.form = [(k, deployment if k == "model" else v) for k, v in call.form]


def _filtered(message: str, inner: Any) -> str:
    """The message, with the categories Azure's content filter flagged."""
    results = inner.get("content_filter_results") or inner.get("content_filter_result") if isinstance(inner, dict) else None
    if not isinstance(results, dict):
        return message
    flagged = sorted(k for k, v in results.items() if isinstance(v, dict) and v.get("filtered"))
    return f"{message} (Azure content filter: {', '.join(flagged)})" if flagged else message
