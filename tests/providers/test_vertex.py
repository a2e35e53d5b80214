"""vertex: Imagen and the Gemini image models on Vertex AI, with a service account's token
exchanged by the engine (services/cloud_auth.py, google-auth), end to end through the gateway
against the strict emulator in pixelgate/simulators/vertex.py (token endpoint included), and that
emulator checked against google-genai's Vertex client."""

from __future__ import annotations

import json

import pytest

from pixelgate.simulators.vertex import VertexEmulatorState, create_app, service_account
from tests.conftest import LEGACY_DAY, openai_error
from tests.emulators.server import emulated

GEN = "/v1/images/generations"
MODELS = ["imagen-4.0-generate-001", "imagen-4.0-fast-generate-001", "gemini-2.5-flash-image", "gemini-3-pro-image"]


def vertex_channel(base: str, name: str = "vertex", **options) -> dict:
    return {"name": name, "provider": "vertex", "base_url": base, "api_key": json.dumps(service_account(f"{base}/token")),
            "models": MODELS, "options": {"project": "emulator-project", "location": "us-central1", **options}}


@pytest.fixture
def upstream():
    with emulated(create_app, VertexEmulatorState(today=LEGACY_DAY, location="us-central1")) as up:
        yield up


@pytest.fixture
def gw(make_gateway, upstream):
    state, base = upstream
    return make_gateway(channels=[vertex_channel(base)]), state


def test_every_model_with_one_token(gw):
    gateway, state = gw
    with gateway.http() as client:
        for model in MODELS:
            resp = client.post(GEN, json={"model": model, "prompt": "a lighthouse", "response_format": "b64_json"})
            assert resp.status_code == 200, resp.text
            sent = state.requests[-1]
            action = "predict" if model.startswith("imagen") else "generateContent"
            assert sent.path == (f"/v1/projects/emulator-project/locations/us-central1/publishers/google/models/"
                                 f"{model}:{action}")
            assert sent.headers["authorization"].startswith("Bearer ya29.emulator-")
            assert "x-goog-api-key" not in sent.headers
    assert state.exchanges == 1  # cached for the channel


def test_imagen_seed_on_vertex(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "imagen-4.0-generate-001", "prompt": "a fox", "seed": 5, "n": 2})
    assert resp.status_code == 200, resp.text
    assert state.requests[-1].body["parameters"] == {"sampleCount": 2, "includeRaiReason": True, "seed": 5,
                                                     "addWatermark": False}


def test_token_refreshed_before_expiry(make_gateway, upstream):
    """A token within minutes of its expiry is replaced before the call, not after a 401."""
    state, base = upstream
    state.token_ttl = 60  # under google-auth's refresh threshold: every call exchanges anew
    gateway = make_gateway(channels=[vertex_channel(base)])
    with gateway.http() as client:
        for _ in range(2):
            assert client.post(GEN, json={"model": "gemini-2.5-flash-image", "prompt": "a fox"}).status_code == 200
    assert state.exchanges == 2


def test_predictions_api(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post("/models/vertex/imagen-4.0-fast-generate-001/predictions",
                           json={"input": {"prompt": "a fox", "size": "16:9"}})
    assert resp.status_code == 200, resp.text
    assert state.requests[-1].body["parameters"]["aspectRatio"] == "16:9"


def test_bad_service_account_fails_over_and_says_nothing_of_the_key(make_gateway, upstream):
    state, base = upstream
    other = json.loads(vertex_channel(base)["api_key"]) | {"client_email": "someone@else.iam.gserviceaccount.com"}
    gateway = make_gateway(channels=[vertex_channel(base, "stranger") | {"api_key": json.dumps(other), "priority": 10},
                                     vertex_channel(base, "not-json") | {"api_key": "not json at all", "priority": 5},
                                     vertex_channel(base, "good")])
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "imagen-4.0-generate-001", "prompt": "a fox"})
    assert resp.status_code == 200, resp.text
    attempts = gateway.log_row(resp.headers["x-request-id"])["attempts"]
    assert [a.get("error") for a in attempts] == ["upstream_auth_failed", "upstream_auth_failed", None]
    assert "invalid_grant" in attempts[0]["message"] and "PRIVATE KEY" not in json.dumps(attempts)


@pytest.mark.parametrize("status, body_status, http", [(429, "RESOURCE_EXHAUSTED", 429), (404, "NOT_FOUND", 502),
                                                       (403, "PERMISSION_DENIED", 502)])
def test_vertex_errors(gw, status, body_status, http):
    gateway, state = gw
    state.fail_next(status, {"error": {"code": status, "message": "no", "status": body_status}})
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "imagen-4.0-generate-001", "prompt": "a fox"})
    assert resp.status_code == http, resp.text


def test_invalid_argument_is_a_400(gw):
    gateway, state = gw
    state.fail_next(400, {"error": {"code": 400, "message": "Unsupported aspect ratio", "status": "INVALID_ARGUMENT"}})
    with gateway.http() as client:
        openai_error(client.post(GEN, json={"model": "imagen-4.0-generate-001", "prompt": "a fox"}), 400, param="size")


def test_reference_client_is_accepted(upstream, tmp_path):
    """google-genai with vertexai=True and the test service account, pointed at the emulator."""
    from google import genai
    from google.genai import types
    from google.oauth2 import service_account as sa

    state, base = upstream
    creds = sa.Credentials.from_service_account_info(service_account(f"{base}/token"),
                                                      scopes=["https://www.googleapis.com/auth/cloud-platform"])
    client = genai.Client(vertexai=True, project="emulator-project", location="us-central1", credentials=creds,
                          http_options=types.HttpOptions(base_url=base + "/"))
    out = client.models.generate_images(model="imagen-4.0-generate-001", prompt="a fox",
                                        config=types.GenerateImagesConfig(number_of_images=1))
    assert out.generated_images[0].image.image_bytes
    out = client.models.generate_content(model="gemini-2.5-flash-image", contents="a fox",
                                         config=types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"]))
    assert any(p.inline_data for p in out.candidates[0].content.parts)
    assert state.exchanges == 1
