"""AUTOMATIC1111's WebUI through the gateway, end to end against the strict emulator on loopback:
txt2img and img2img with a mask, the checkpoint named per model, basic auth, its errors, and a
self-hosted model's price (none until the operator sets one)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from pixelgate.simulators.automatic1111 import A1111EmulatorState, create_app
from tests.conftest import b64_images, mask_png, png
from tests.emulators.server import emulated

CHECKPOINT = "sd_xl_base_1.0.safetensors [31e35c80fc]"


def webui_channel(base: str, **fields) -> dict:
    return {"name": "webui", "provider": "automatic1111", "base_url": base, "api_key": "alice:s3cret-pass",
            "models": ["public-model", "sd15", "loaded"], "model_map": {"sd15": "v1-5-pruned-emaonly.safetensors"},
            "options": {"checkpoints": {"public-model": CHECKPOINT}}, **fields}


@pytest.fixture
def gw(make_gateway):
    with emulated(create_app, A1111EmulatorState(auth="alice:s3cret-pass")) as (state, base):
        yield make_gateway(channels=[webui_channel(base)]), state


def test_txt2img_through_the_sdk_with_the_models_checkpoint(gw):
    gateway, state = gw
    result = gateway.sdk().images.generate(model="public-model", prompt="a red fox", size="768x512", n=2,
                                           response_format="b64_json",
                                           extra_body={"seed": 42, "steps": 25, "cfg_scale": 6.0,
                                                       "negative_prompt": "blurry", "sampler_name": "DPM++ 2M"})
    assert [Image.open(io.BytesIO(base64.b64decode(d.b64_json))).size for d in result.data] == [(768, 512)] * 2
    (sent,) = state.requests
    assert sent["path"] == "/sdapi/v1/txt2img"
    assert sent["headers"]["authorization"] == "Basic " + base64.b64encode(b"alice:s3cret-pass").decode()
    assert sent["fields"] == {"prompt": "a red fox", "negative_prompt": "blurry", "width": 768, "height": 512,
                              "steps": 25, "cfg_scale": 6.0, "sampler_name": "DPM++ 2M", "seed": 42,
                              "batch_size": 2, "n_iter": 1,
                              "override_settings": {"sd_model_checkpoint": CHECKPOINT}}


def test_model_map_names_the_checkpoint_and_an_unnamed_model_runs_what_is_loaded(gw):
    gateway, state = gw
    with gateway.http() as client:
        for model in ("sd15", "loaded"):
            b64_images(client.post("/v1/images/generations", json={"model": model, "prompt": "a fox",
                                                                   "response_format": "b64_json"}))
    assert state.requests[0]["fields"]["override_settings"] == {"sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors"}
    assert "override_settings" not in state.requests[1]["fields"]
    assert state.requests[1]["fields"]["seed"] == -1  # random, the WebUI's way


def test_img2img_with_a_mask_through_predictions(gw):
    gateway, state = gw
    source = "data:image/png;base64," + base64.b64encode(png(96, 64)).decode()
    mask = "data:image/png;base64," + base64.b64encode(mask_png(96, 64)).decode()
    with gateway.http() as client:
        resp = client.post("/models/automatic1111/public-model/predictions",
                           json={"input": {"prompt": "a hat", "image": source, "mask": mask,
                                           "denoising_strength": 0.6}})
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
    sent = state.requests[-1]
    assert sent["path"] == "/sdapi/v1/img2img"
    fields = sent["fields"]
    assert fields["init_images"] == {"width": 96, "height": 64, "mode": "RGB"}
    assert fields["denoising_strength"] == 0.6 and fields["inpainting_fill"] == 1
    assert (fields["width"], fields["height"]) == (96, 64)
    white = sent["images"]["mask"].convert("L")  # the WebUI repaints white: the OpenAI mask's transparent half
    assert white.getpixel((10, 10)) == 255 and white.getpixel((80, 10)) == 0


def test_the_webui_wants_its_basic_auth(make_gateway):
    with emulated(create_app, A1111EmulatorState(auth="alice:s3cret-pass")) as (state, base):
        gateway = make_gateway(channels=[webui_channel(base, api_key=None)])
        with gateway.http() as client:
            resp = client.post("/v1/images/generations", json={"model": "public-model", "prompt": "a fox"})
    assert resp.status_code == 502, resp.text
    assert resp.json()["error"]["code"] == "upstream_auth_failed"


def test_webui_errors_in_the_clients_terms(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "public-model", "prompt": "a fox",
                                                           "sampler_name": "Nonexistent"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "sampler_name", resp.text
        resp = client.post("/v1/images/generations", json={"model": "public-model", "prompt": "a fox", "steps": 500})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "steps", resp.text  # refused by us
        state.fail_next(500)
        resp = client.post("/v1/images/generations", json={"model": "public-model", "prompt": "a fox"})
        assert resp.status_code == 502 and "CUDA out of memory" in resp.json()["error"]["message"], resp.text
        resp = client.post("/v1/images/generations", json={"model": "public-model", "prompt": "a fox",
                                                           "size": "2x2"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "size", resp.text


def test_a_self_hosted_model_is_refused_unpriced_until_the_operator_prices_it(make_gateway):
    with emulated(create_app, A1111EmulatorState(auth="alice:s3cret-pass")) as (state, base):
        gateway = make_gateway(channels=[webui_channel(base)], unpriced="refuse")
        with gateway.http() as client:
            resp = client.post("/v1/images/generations", json={"model": "public-model", "prompt": "a fox"})
            assert resp.status_code == 403 and resp.json()["error"]["param"] == "model", resp.text
            assert state.requests == []
            gateway.set_price("public-model", "0.002")
            resp = client.post("/v1/images/generations", json={"model": "public-model", "prompt": "a fox"})
        assert resp.status_code == 200, resp.text
        assert gateway.log_row(resp.headers["x-request-id"])["cost"] == "0.002"
