"""Stability AI through the OpenAI and predictions APIs, end to end against the strict emulator
on loopback (every endpoint, sizes, the content filter, the creative upscale's polling, errors);
plus the emulator's own rules."""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from PIL import Image

from pixelgate.providers.stability import ENDPOINTS, GENERATORS, SD3_MODELS
from pixelgate.simulators.stability import StabilityEmulatorState, create_app
from tests.conftest import b64_images, mask_png, openai_error, png
from tests.emulators.server import emulated

KEY = "sk-stability-emulator"
GEN, EDITS = "/v1/images/generations", "/v1/images/edits"


def channel(base: str, **fields) -> dict:
    return {"name": "stability", "provider": "stability", "base_url": base, "api_key": KEY,
            "models": sorted(ENDPOINTS), **fields}


@pytest.fixture(scope="module")
def shared_gw(make_module_gateway):
    with emulated(create_app, StabilityEmulatorState(), "") as (state, base):
        yield make_module_gateway(channels=[channel(base)]), state


@pytest.fixture
def gw(shared_gw):
    """The module's gateway with the emulator's log emptied: what it holds, this test sent."""
    shared_gw[1].requests.clear()
    return shared_gw


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def predict(client: httpx.Client, model: str, **inputs) -> httpx.Response:
    return client.post(f"/models/stability/{model}/predictions", json={"input": {"response_format": "b64_json",
                                                                                  **inputs}})


def output_size(resp: httpx.Response) -> tuple[int, int]:
    assert resp.status_code == 200, resp.text
    (item,) = resp.json()["output"]
    return Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size


@pytest.mark.parametrize("size, ratio, pixels", [("1792x1024", "16:9", (1344, 768)), ("1024x1024", "1:1", (1024, 1024)),
                                                 ("1024x1536", "2:3", (832, 1216)), ("21:9", "21:9", (1536, 640)),
                                                 (None, None, (1024, 1024))])
def test_every_generator_makes_the_nearest_ratio(gw, size, ratio, pixels):
    gateway, state = gw
    with gateway.http() as client:
        for model in GENERATORS:
            body = {"model": model, "prompt": "a lighthouse", "response_format": "b64_json",
                    **({"size": size} if size else {})}
            images = b64_images(client.post(GEN, json=body))
            assert [i.size for i in images] == [pixels], model
            call = state.requests[-1]
            assert call.headers["authorization"] == f"Bearer {KEY}" and call.headers["accept"] == "image/*"
            assert call.headers["content-type"].startswith("multipart/form-data")
            expected = {"prompt": "a lighthouse", "output_format": "png", **({"aspect_ratio": ratio} if ratio else {})}
            if model in SD3_MODELS:
                assert call.path == "/v2beta/stable-image/generate/sd3"
                expected |= {"model": model, "mode": "text-to-image"}
            else:
                assert call.path == "/v2beta/stable-image/generate/" + model.removeprefix("stable-image-")
            assert call.fields == expected


def test_n_fans_out_one_call_each_and_fields_reach_the_vendor(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "stable-image-core", "prompt": "a fox", "n": 3, "seed": 42,
                                      "output_format": "jpeg", "style_preset": "anime", "negative_prompt": "rain",
                                      "response_format": "b64_json"})
    assert [i.format for i in b64_images(resp)] == ["JPEG"] * 3
    assert len(state.requests) == 3
    assert state.requests[0].fields == {"prompt": "a fox", "style_preset": "anime", "negative_prompt": "rain",
                                        "seed": "42", "output_format": "jpeg"}


def test_webp_from_sd3_is_made_as_png_and_converted(gw):
    gateway, state = gw
    with gateway.http() as client:
        images = b64_images(client.post(GEN, json={"model": "sd3.5-flash", "prompt": "a fox", "output_format": "webp",
                                                   "response_format": "b64_json"}))
    assert images[0].format == "WEBP" and state.requests[-1].fields["output_format"] == "png"


def test_openai_sdk_generates_and_edits(gw):
    gateway, state = gw
    sdk = gateway.sdk()
    made = sdk.images.generate(model="stable-image-ultra", prompt="a fox", size="1536x1024", response_format="b64_json")
    assert Image.open(io.BytesIO(base64.b64decode(made.data[0].b64_json))).size == (1216, 832)
    # without a mask: image-to-image, the shape of the input kept
    edited = sdk.images.edit(model="sd3.5-large", image=("a.png", png(320, 192)), prompt="make it snow",
                             response_format="b64_json")
    assert Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json))).size == (320, 192)
    call = state.requests[-1]
    assert call.path == "/v2beta/stable-image/generate/sd3"
    assert call.fields == {"prompt": "make it snow", "model": "sd3.5-large", "mode": "image-to-image",
                           "strength": "0.5", "output_format": "png"}
    # with a mask: inpaint, the mask turned white-for-edit
    sdk.images.edit(model="stable-image-ultra", image=("a.png", png(128, 128)), mask=("m.png", mask_png(128, 128)),
                    prompt="a red door", response_format="b64_json")
    call = state.requests[-1]
    assert call.path == "/v2beta/stable-image/edit/inpaint" and set(call.files) == {"image", "mask"}
    mask = Image.open(io.BytesIO(call.files["mask"])).convert("L")
    assert mask.getpixel((10, 64)) == 255 and mask.getpixel((120, 64)) == 0  # left half transparent: edit


OPERATIONS = [
    ("stability-inpaint", {"prompt": "a cat", "mask": data_url(mask_png(128, 128)), "grow_mask": 3}, (128, 128),
     {"prompt": "a cat", "grow_mask": "3"}),
    ("stability-outpaint", {"left": 100, "down": 50, "creativity": 0.4}, (228, 178),
     {"left": "100", "down": "50", "creativity": "0.4"}),
    ("stability-search-and-replace", {"prompt": "a dog", "search_prompt": "cat"}, (128, 128),
     {"prompt": "a dog", "search_prompt": "cat"}),
    ("stability-search-and-recolor", {"prompt": "blue", "select_prompt": "the car"}, (128, 128),
     {"prompt": "blue", "select_prompt": "the car"}),
    ("stability-remove-background", {}, (128, 128), {}),
    ("stability-erase", {"mask": data_url(mask_png(128, 128))}, (128, 128), {}),
    ("stability-upscale-fast", {}, (512, 512), {}),
    ("stability-upscale-conservative", {"prompt": "sharp", "creativity": 0.3}, (2048, 2048),
     {"prompt": "sharp", "creativity": "0.3"}),
]


@pytest.mark.parametrize("model, inputs, size, sent", OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_every_operation_through_predictions(gw, model, inputs, size, sent):
    gateway, state = gw
    with gateway.http() as client:
        resp = predict(client, model, image=data_url(png(128, 128)), **inputs)
    assert output_size(resp) == size
    call = state.requests[-1]
    assert call.path == ENDPOINTS[model].path
    assert call.fields == {**sent, "output_format": "png"}
    assert set(call.files) == {"image", *(["mask"] if "mask" in inputs else [])}


def test_remove_background_keeps_transparency_and_refuses_jpeg(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = predict(client, "stability-remove-background", image=data_url(png(96, 96)), output_format="webp")
        assert output_size(resp) == (96, 96)
        refused = predict(client, "stability-remove-background", image=data_url(png(96, 96)), output_format="jpeg")
    assert openai_error(refused, 400, param="input.output_format")
    assert len(state.requests) == 1


@pytest.mark.parametrize("model, inputs, param", [
    ("stability-search-and-replace", {"prompt": "a dog"}, "input.search_prompt"),
    ("sd3.5-large", {"prompt": "a fox", "strength": 0.3}, "input.strength"),
    ("stability-outpaint", {"left": 3000}, "input.left"),
    ("stability-inpaint", {"prompt": "x", "grow_mask": 21}, "input.grow_mask"),
    ("stable-image-core", {"prompt": "x", "style_preset": "watercolor"}, "input.style_preset"),
    ("stable-image-core", {"prompt": "x", "seed": 4294967295}, "input.seed"),
    ("stability-upscale-creative", {}, "input.prompt"),
])
def test_refused_before_any_call_naming_the_field(gw, model, inputs, param):
    gateway, state = gw
    if model.startswith("stability-") and "image" not in inputs:
        inputs = {**inputs, "image": data_url(png(128, 128))}
    with gateway.http() as client:
        openai_error(predict(client, model, **inputs), 400, param=param)
    assert state.requests == []


def test_content_filter_is_a_refusal_and_not_billed(make_gateway):
    with emulated(create_app, StabilityEmulatorState(), "") as (state, base):
        gateway = make_gateway(channels=[channel(base)], unpriced="refuse")
        account, key = gateway.paying_key("1.00")
        with gateway.http(key=key) as client:
            for prompt in ("a forbidden fox", "a prohibited fox"):  # a filtered image; a refused prompt (403)
                resp = client.post(GEN, json={"model": "stable-image-ultra", "prompt": prompt})
                openai_error(resp, 400, code="content_policy_violation")
            made = client.post(GEN, json={"model": "stable-image-core", "prompt": "a fox"})
            assert made.status_code == 200 and made.headers["x-pixelgate-cost"] == "0.03"
        with gateway.http() as admin:
            assert admin.get(f"/admin/accounts/{account}").json()["balance"] == "0.97"
    assert [r.fields["prompt"] for r in state.requests] == ["a forbidden fox", "a prohibited fox", "a fox"]


def test_creative_upscale_is_submitted_then_polled(make_gateway):
    with emulated(create_app, StabilityEmulatorState(creative_seconds=1.0), "") as (state, base):
        gateway = make_gateway(channels=[channel(base)])
        with gateway.http() as client:
            task = predict(client, "stability-upscale-creative", image=data_url(png(256, 256)), prompt="crisp",
                           creativity=0.2)
            assert task.status_code == 201, task.text
            deadline = time.monotonic() + 20
            while (got := client.get(f"/tasks/{task.json()['id']}").json())["status"] not in ("succeeded", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert got["status"] == "succeeded", got
            # the OpenAI API waits for it in the request
            edited = client.post(EDITS, data={"model": "stability-upscale-creative", "prompt": "crisp",
                                              "response_format": "b64_json"}, files={"image": ("a.png", png(256, 256))})
            assert [i.size for i in b64_images(edited)] == [(2048, 2048)]
    submits = [r for r in state.requests if r.method == "POST"]
    polls = [r for r in state.requests if r.method == "GET"]
    assert [r.path for r in submits] == ["/v2beta/stable-image/upscale/creative"] * 2
    assert submits[0].headers["accept"] == "application/json"
    assert submits[0].fields == {"prompt": "crisp", "creativity": "0.2", "output_format": "png"}
    assert len(polls) > 2 and all(r.headers["authorization"] == f"Bearer {KEY}" for r in polls)


def test_vendor_errors(gw):
    gateway, state = gw
    with gateway.http() as client:
        too_small = predict(client, "stability-inpaint", image=data_url(png(32, 32)), prompt="x",
                            mask=data_url(mask_png(32, 32)))
        err = openai_error(too_small, 400, param="input.image")
        assert "32x32" in err["message"]
        state.fail_next(429, "rate_limit_exceeded", ["You have exceeded the rate limit."])
        openai_error(client.post(GEN, json={"model": "stable-image-core", "prompt": "x"}), 429)
        state.fail_next(500)
        openai_error(client.post(GEN, json={"model": "stable-image-core", "prompt": "x"}), 502)
        state.api_key = "another"
        try:
            resp = client.post(GEN, json={"model": "stable-image-core", "prompt": "x"})
        finally:
            state.api_key = KEY
        openai_error(resp, 502, code="upstream_auth_failed")


# -- the emulator's own rules --

def test_emulator_is_strict(gw):
    _, state = gw
    with emulated(create_app, StabilityEmulatorState(), "") as (_, base):
        auth = {"authorization": f"Bearer {KEY}"}
        url = base + "/v2beta/stable-image/generate/core"
        with httpx.Client(timeout=30) as client:
            def err(resp, status, field):
                assert resp.status_code == status, resp.text
                body = resp.json()
                assert set(body) == {"id", "name", "errors"} and body["errors"][0].startswith(field), body
            err(client.post(url, files={"prompt": (None, "x")}), 401, "authorization")
            err(client.post(url, headers=auth, data={"prompt": "x"}), 400, "content-type")
            err(client.post(url, headers=auth, files={"prompt": (None, "x"), "cfg_scale": (None, "3")}), 400,
                "cfg_scale")
            err(client.post(url, headers=auth, files={"prompt": (None, "x"), "aspect_ratio": (None, "4:3")}), 400,
                "aspect_ratio")
            err(client.post(url, headers=auth, files={"negative_prompt": (None, "x")}), 400, "prompt")
            err(client.post(url, headers={**auth, "accept": "text/html"}, files={"prompt": (None, "x")}), 400, "accept")
            ok = client.post(url, headers={**auth, "accept": "application/json"},
                             files={"prompt": (None, "x"), "seed": (None, "7"), "none": ("", b"")})
            assert ok.status_code == 200 and ok.json()["finish_reason"] == "SUCCESS" and ok.json()["seed"] == 7
            raw = client.post(url, headers=auth, files={"prompt": (None, "a forbidden x")})
            assert raw.headers["finish-reason"] == "CONTENT_FILTERED" and raw.headers["content-type"] == "image/png"
            err(client.get(base + "/v2beta/results/nope", headers=auth), 404, "id")


def test_a_masked_edit_is_billed_as_the_inpaint_it_becomes(gw):
    """An edit with a mask is Stability's inpaint whatever generator was named (5 credits); without
    a mask, the named model's image-to-image at its own price."""
    gateway, state = gw
    with gateway.http() as client:
        masked = client.post("/v1/images/edits", data={"model": "sd3.5-large", "prompt": "a red door",
                                                       "response_format": "b64_json"},
                             files={"image": ("a.png", png(128, 128)), "mask": ("m.png", mask_png(128, 128))})
        plain = client.post("/v1/images/edits", data={"model": "sd3.5-large", "prompt": "a red door",
                                                      "response_format": "b64_json"},
                            files={"image": ("a.png", png(128, 128))})
    assert masked.status_code == 200 and plain.status_code == 200, (masked.text, plain.text)
    assert [r.path for r in state.requests] == ["/v2beta/stable-image/edit/inpaint", "/v2beta/stable-image/generate/sd3"]
    assert masked.headers["x-pixelgate-cost"] == "0.05" and plain.headers["x-pixelgate-cost"] == "0.065"
