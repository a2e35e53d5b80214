"""bedrock: Stability's models on Bedrock and Amazon Nova Canvas through InvokeModel, signed with
SigV4 by the engine (services/cloud_auth.py), end to end through the gateway against the strict
emulator in pixelgate/simulators/bedrock.py (which checks every signature as AWS does), and that
emulator checked against boto3's bedrock-runtime client."""

from __future__ import annotations

import base64
import io
import json

import boto3
import pytest
from botocore.config import Config
from PIL import Image

from pixelgate.simulators.bedrock import BedrockEmulatorState, create_app
from tests.conftest import b64_images, mask_png, openai_error, png
from tests.emulators.server import emulated

ACCESS, SECRET = "AKIAEMULATOR00000000", "emulator-secret-access-key"
GEN = "/v1/images/generations"
SD35, ULTRA, CORE, NOVA = ("stability.sd3-5-large-v1:0", "stability.stable-image-ultra-v1:1",
                           "stability.stable-image-core-v1:1", "amazon.nova-canvas-v1:0")


def bedrock_channel(base_url: str, name: str = "bedrock", region: str = "us-west-2", **fields) -> dict:
    return {"name": name, "provider": "bedrock", "base_url": base_url, "api_key": f"{ACCESS}:{SECRET}",
            "models": [SD35, ULTRA, CORE, NOVA], "options": {"region": region}, **fields}


@pytest.fixture
def upstream():
    with emulated(create_app, BedrockEmulatorState(region="us-west-2")) as up:
        yield up


@pytest.fixture
def gw(make_gateway, upstream):
    state, base = upstream
    return make_gateway(channels=[bedrock_channel(base)]), state


def test_every_model_generates_signed(gw):
    gateway, state = gw
    with gateway.http() as client:
        for model in (SD35, ULTRA, CORE, NOVA):
            resp = client.post(GEN, json={"model": model, "prompt": "a lighthouse", "size": "16:9",
                                          "response_format": "b64_json"})
            assert resp.status_code == 200, resp.text
            sent = state.requests[-1]
            assert sent.path == f"/model/{model.replace(':', '%3A')}/invoke" or sent.model == model
            assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS}/")
            assert "/us-west-2/bedrock/aws4_request" in sent.headers["authorization"]
            assert SECRET not in json.dumps(sent.headers)
    stability = state.requests[0].body
    assert stability == {"prompt": "a lighthouse", "aspect_ratio": "16:9", "mode": "text-to-image"}
    nova = state.requests[-1].body
    assert nova == {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a lighthouse"},
                    "imageGenerationConfig": {"numberOfImages": 1, "width": 1360, "height": 768}}


def test_nova_canvas_options_sizes_and_n(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": NOVA, "prompt": "a fox", "n": 3, "size": "1024x512", "quality": "premium",
                                      "seed": 42, "cfgScale": 8, "negative_prompt": "blur",
                                      "response_format": "b64_json"})
        images = b64_images(resp)
        assert len(images) == 3 and images[0].size == (1024, 512)
        assert state.requests[-1].body == {
            "taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a fox", "negativeText": "blur"},
            "imageGenerationConfig": {"numberOfImages": 3, "width": 1024, "height": 512, "quality": "premium",
                                      "cfgScale": 8, "seed": 42}}
        refused = client.post(GEN, json={"model": NOVA, "prompt": "a fox", "size": "1000x1000"})
        openai_error(refused, 400, param="size")
        refused = client.post(GEN, json={"model": NOVA, "prompt": "a fox", "quality": "hd"})
        openai_error(refused, 400, param="quality")


def test_nova_inpainting_and_variation(gw):
    gateway, state = gw
    with gateway.http() as client:
        edit = client.post("/v1/images/edits", data={"model": NOVA, "prompt": "a red door", "response_format": "b64_json"},
                           files={"image": ("a.png", png(), "image/png"), "mask": ("m.png", mask_png(), "image/png")})
        assert edit.status_code == 200, edit.text
        sent = state.requests[-1].body
        assert sent["taskType"] == "INPAINTING" and set(sent["inPaintingParams"]) == {"image", "text", "maskImage"}
        var = client.post("/v1/images/variations", data={"model": NOVA, "n": "2", "response_format": "b64_json"},
                          files={"image": ("a.png", png(), "image/png")})
        assert var.status_code == 200, var.text
        assert len(var.json()["data"]) == 2 and state.requests[-1].body["taskType"] == "IMAGE_VARIATION"


def test_sd35_image_to_image(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post("/v1/images/edits", data={"model": SD35, "prompt": "as a watercolour", "strength": "0.4",
                                                     "response_format": "b64_json"},
                           files={"image": ("a.png", png(96, 64), "image/png")})
    assert resp.status_code == 200, resp.text
    sent = state.requests[-1].body
    assert sent["mode"] == "image-to-image" and sent["strength"] == 0.4 and "aspect_ratio" not in sent


def test_predictions_and_sdk(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post(f"/models/amazon/{NOVA}/predictions", json={"input": {"prompt": "a fox", "seed": 7}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "succeeded"
    result = gateway.sdk().images.generate(model=CORE, prompt="a fox", response_format="b64_json")
    assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).size == (1024, 1024)


def test_content_filters(gw):
    gateway, state = gw
    with gateway.http() as client:
        for model in (ULTRA, NOVA):  # Stability: HTTP 200 with a finish reason; Nova: a ValidationException
            resp = client.post(GEN, json={"model": model, "prompt": "something forbidden"})
            openai_error(resp, 400, code="content_policy_violation")


@pytest.mark.parametrize("kind, status", [("ThrottlingException", 429), ("ModelNotReadyException", 429),
                                          ("ServiceUnavailableException", 502), ("AccessDeniedException", 502),
                                          ("ResourceNotFoundException", 502)])
def test_bedrock_errors(make_gateway, upstream, kind, status):
    state, base = upstream
    gateway = make_gateway(channels=[bedrock_channel(base)])
    state.fail_next(kind, count=3)
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": CORE, "prompt": "a fox"})
    assert resp.status_code == status, resp.text


def test_validation_exception_is_a_400(gw):
    gateway, state = gw
    state.fail_next("ValidationException", "Malformed input request: #/seed: -5 is not a valid value")
    with gateway.http() as client:
        openai_error(client.post(GEN, json={"model": CORE, "prompt": "a fox"}), 400, param="seed")


def test_wrong_secret_or_region_is_refused_by_signature(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[bedrock_channel(base, "wrong-secret", priority=10,
                                                     api_key=f"{ACCESS}:not-the-secret-at-all"),
                                     bedrock_channel(base, "wrong-region", priority=5, region="eu-west-1"),
                                     bedrock_channel(base, "good")])
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": CORE, "prompt": "a fox"})
    assert resp.status_code == 200, resp.text
    attempts = gateway.log_row(resp.headers["x-request-id"])["attempts"]
    assert [a.get("error") for a in attempts] == ["upstream_auth_failed", "upstream_auth_failed", None]
    assert "not-the-secret-at-all" not in json.dumps(attempts)


def test_credentials_from_the_aws_chain(make_gateway, upstream, monkeypatch):
    """Without a key, the standard chain (here: the environment) signs."""
    state, base = upstream
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    gateway = make_gateway(channels=[bedrock_channel(base) | {"api_key": None}])
    with gateway.http() as client:
        assert client.post(GEN, json={"model": NOVA, "prompt": "a fox"}).status_code == 200


def test_reference_client_is_accepted(upstream):
    """boto3's bedrock-runtime client, pointed at the emulator: its signature is accepted, its
    answers and errors read as boto3 reads AWS's."""
    state, base = upstream
    client = boto3.client("bedrock-runtime", region_name="us-west-2", endpoint_url=base, aws_access_key_id=ACCESS,
                          aws_secret_access_key=SECRET, config=Config(retries={"max_attempts": 1}))
    body = {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a fox"},
            "imageGenerationConfig": {"numberOfImages": 1, "width": 512, "height": 512}}
    out = json.loads(client.invoke_model(modelId=NOVA, body=json.dumps(body))["body"].read())
    assert Image.open(io.BytesIO(base64.b64decode(out["images"][0]))).size == (512, 512)
    out = json.loads(client.invoke_model(modelId=SD35, body=json.dumps({"prompt": "a fox"}))["body"].read())
    assert out["finish_reasons"] == [None]
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model(modelId=SD35, body=json.dumps({"prompt": "a fox", "aspect_ratio": "7:3"}))
    wrong = boto3.client("bedrock-runtime", region_name="us-west-2", endpoint_url=base, aws_access_key_id=ACCESS,
                         aws_secret_access_key="wrong", config=Config(retries={"max_attempts": 1}))
    with pytest.raises(wrong.exceptions.ClientError, match="InvalidSignatureException"):
        wrong.invoke_model(modelId=SD35, body=json.dumps({"prompt": "a fox"}))


def test_simulated_cloud_channels(make_gateway):
    """simulate_vendors: the three cloud providers work offline through their real code (the
    Vertex token exchange and the SigV4 signature included)."""
    gateway = make_gateway(simulate_vendors=True)
    with gateway.http() as client:
        for vendor, model in (("bedrock", NOVA), ("bedrock", SD35), ("vertex", "gemini-2.5-flash-image"),
                              ("azure", "gpt-image-2")):
            resp = client.post(f"/models/{vendor}/{model}/predictions", json={"input": {"prompt": "a fox"}})
            assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
            row = gateway.requests_log()[0]
            assert row["channel"] == f"simulated-{'azure-openai' if vendor == 'azure' else vendor}", row
        assert client.post(GEN, json={"model": CORE, "prompt": "a fox"}).status_code == 200
