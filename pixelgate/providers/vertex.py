"""Google Vertex AI: Imagen (`:predict`) and the Gemini image models (`:generateContent`) of
Google's publisher models, with the Gemini API's translation (providers/google.py), Vertex's
addresses and a service account's OAuth token.

Upstream (reference: google-genai with vertexai=True), base https://aiplatform.googleapis.com for
location `global`, else https://{location}-aiplatform.googleapis.com:
  POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:predict
  POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent
  bodies and answers as on the Gemini API; Imagen also takes `seed` (with addWatermark false).
auth: `Authorization: Bearer <access token>`, exchanged for the channel's service account by
services/cloud_auth.py (Provider.credentials), never by this module.
errors: {"error": {"code", "message", "status"}}: PERMISSION_DENIED 403 (the account lacks the
role or the API is off), UNAUTHENTICATED 401, RESOURCE_EXHAUSTED 429 (quota), NOT_FOUND 404 (a
retired or unserved model in that location), INVALID_ARGUMENT 400: the Gemini API's mapping.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pixelgate.providers.base import Channel
from pixelgate.providers.google import Google

_ID = r"^[a-z][a-z0-9-]{3,61}[a-z0-9]$"


class VertexOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(pattern=_ID)
    """The Google Cloud project id."""
    location: str = Field(default="global", pattern=r"^[a-z0-9-]+$")
    """`global`, or a region such as us-central1 (a model is served where Google lists it)."""
    credentials_file: str | None = None
    """A service account's JSON key file; without it the channel's api_key holds that JSON."""


class Vertex(Google):
    name = "vertex"
    default_base_url = None
    credentials = "google-service-account"
    channel_options = VertexOptions
    imagen_seed = True

    def base_url(self, channel: Channel) -> str:
        """The service root (base_url overrides the host; the project path is always added)."""
        location = channel.options.get("location", "global")
        host = channel.base_url or ("https://aiplatform.googleapis.com" if location == "global"
                                    else f"https://{location}-aiplatform.googleapis.com")
        return (f"{host.rstrip('/')}/v1/projects/{channel.options.get('project', '')}/locations/{location}"
                "/publishers/google")

    def auth_headers(self, channel: Channel) -> dict[str, str]:
        return {}  # the engine adds the access token (cloud_auth)
