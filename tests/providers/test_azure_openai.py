"""azure-openai: the GPT image models deployed in an Azure OpenAI resource, end to end through the
gateway (OpenAI SDK, predictions API) against the strict emulator in pixelgate/simulators/azure_openai.py,
and that emulator checked against openai-python's own AzureOpenAI client."""

from __future__ import annotations

import openai
import pytest

from pixelgate.simulators.azure_openai import AzureEmulatorState, create_app
from tests.conftest import LEGACY_DAY, openai_error, png
from tests.emulators.server import emulated

KEY = "azure-emulator-key"
GEN = "/v1/images/generations"


def azure_channel(base_url: str, name: str = "azure", **options) -> dict:
    return {"name": name, "provider": "azure-openai", "base_url": base_url, "api_key": KEY,
            "models": ["gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"], "options": options}


@pytest.fixture
def upstream():
    with emulated(create_app, AzureEmulatorState(today=LEGACY_DAY)) as up:
        yield up


def test_sdk_generates_through_a_deployment(make_gateway, upstream):
    state, base = upstream
    state.deployments = {"img-prod": "gpt-image-1"}
    gateway = make_gateway(channels=[azure_channel(base, deployments={"gpt-image-1": "img-prod"})])
    result = gateway.sdk().images.generate(model="gpt-image-1", prompt="a lighthouse", size="1536x1024",
                                           quality="low")
    assert result.data[0].b64_json
    sent = state.requests[-1]
    assert sent.path == "/openai/deployments/img-prod/images/generations"
    assert sent.query == "api-version=2025-04-01-preview"
    assert sent.headers["api-key"] == KEY and "authorization" not in sent.headers
    assert sent.fields["size"] == "1536x1024" and sent.fields["quality"] == "low"


def test_edit_on_the_v1_api_sends_the_deployment_as_model(make_gateway, upstream):
    state, base = upstream
    state.deployments = {"mini": "gpt-image-1-mini"}
    gateway = make_gateway(channels=[azure_channel(base, api_version="v1", deployments={"gpt-image-1-mini": "mini"})])
    with gateway.http() as client:
        resp = client.post("/v1/images/edits", data={"model": "gpt-image-1-mini", "prompt": "add a hat"},
                           files={"image": ("a.png", png(), "image/png")})
    assert resp.status_code == 200, resp.text
    sent = state.requests[-1]
    assert sent.path == "/openai/v1/images/edits" and sent.query == ""
    assert sent.fields["model"] == "mini"


def test_entra_id_token_from_the_environment(make_gateway, upstream, monkeypatch):
    state, base = upstream
    state.ad_token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra.token"
    monkeypatch.setenv("PIXELGATE_TEST_AZURE_TOKEN", state.ad_token)
    gateway = make_gateway(channels=[azure_channel(base, azure_ad_token_env="PIXELGATE_TEST_AZURE_TOKEN")])
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "gpt-image-1.5", "prompt": "a fox"})
    assert resp.status_code == 200, resp.text
    assert state.requests[-1].headers["authorization"] == f"Bearer {state.ad_token}"
    assert "api-key" not in state.requests[-1].headers


def test_predictions_api(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[azure_channel(base)])
    with gateway.http() as client:
        resp = client.post("/models/azure/gpt-image-1/predictions", json={"input": {"prompt": "a fox"}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "succeeded" and len(resp.json()["output"]) == 1


def test_content_filter_is_the_gateways_content_filter_error(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[azure_channel(base)])
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "gpt-image-1", "prompt": "something forbidden"})
    err = openai_error(resp, 400, code="content_policy_violation", param="prompt")
    assert "violence" in err["message"]


@pytest.mark.parametrize("options, code", [
    ({"deployments": {"gpt-image-1": "missing"}}, "deployment_not_found"),
    ({"api_version": "2023-05-15"}, "api_version_not_supported"),
])
def test_channel_misconfiguration_fails_over(make_gateway, upstream, options, code):
    """A deployment or api-version the resource lacks is the channel's fault: the next channel serves."""
    state, base = upstream
    gateway = make_gateway(channels=[azure_channel(base, "bad", **options) | {"priority": 10},
                                     azure_channel(base, "good")])
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "gpt-image-1", "prompt": "a fox"})
    assert resp.status_code == 200, resp.text
    attempts = gateway.log_row(resp.headers["x-request-id"])["attempts"]
    assert [a["channel"] for a in attempts] == ["bad", "good"] and attempts[0]["error"] == code


def test_wrong_key_names_nothing_of_it(make_gateway, upstream):
    state, base = upstream
    secret = "azure-wrong-key-0123456789"
    gateway = make_gateway(channels=[azure_channel(base) | {"api_key": secret}])
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "gpt-image-1", "prompt": "a fox"})
    assert resp.status_code in (502, 503) and secret not in resp.text
    assert "credentials" in resp.json()["error"]["message"]


def test_reference_client_is_accepted(upstream):
    """openai-python's AzureOpenAI, as users call Azure, against the emulator: what it sends is what
    the emulator (and so the provider's tests) takes."""
    state, base = upstream
    client = openai.AzureOpenAI(azure_endpoint=base, api_key=KEY, api_version="2025-04-01-preview", max_retries=0)
    result = client.images.generate(model="gpt-image-1", prompt="a lighthouse", size="1024x1024")
    assert result.data[0].b64_json
    edit = client.images.edit(model="gpt-image-1", prompt="add a hat", image=("a.png", png(), "image/png"))
    assert edit.data[0].b64_json
    assert [r.path for r in state.requests] == ["/openai/deployments/gpt-image-1/images/generations",
                                                 "/openai/deployments/gpt-image-1/images/edits"]
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="no-such-deployment", prompt="a fox")
