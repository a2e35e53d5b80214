"""Stability's own API on the gateway (/stability/v2beta/...), spoken as a Stability client speaks
it: raw httpx multipart, the gateway key as Bearer, answers as bytes or JSON, errors in
Stability's shape; behind it the strict emulator on loopback."""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from PIL import Image

from pixelgate.providers.stability import ENDPOINTS
from pixelgate.simulators.stability import StabilityEmulatorState, create_app
from tests.conftest import png
from tests.emulators.server import emulated

KEY = "sk-stability-emulator"
BASE = "/stability/v2beta/stable-image/"


@pytest.fixture(scope="module")
def shared(make_module_gateway):
    with emulated(create_app, StabilityEmulatorState(creative_seconds=0.5), "") as (state, base):
        yield make_module_gateway(channels=[{"name": "stability", "provider": "stability", "base_url": base,
                                             "api_key": KEY, "models": sorted(ENDPOINTS)}]), state


@pytest.fixture
def gw(shared):
    shared[1].requests.clear()
    return shared


def post(client: httpx.Client, route: str, accept: str = "image/*", files: dict | None = None, **data) -> httpx.Response:
    # as Stability's own examples: an empty `none` file forces multipart when there are no others
    return client.post(BASE + route, headers={"accept": accept}, files=files or {"none": ""},
                       data={k: str(v) for k, v in data.items()})


def picture(resp: httpx.Response) -> Image.Image:
    assert resp.status_code == 200, resp.text
    return Image.open(io.BytesIO(resp.content))


def stability_error(resp: httpx.Response, status: int, name: str, field: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"id", "name", "errors"} and body["name"] == name, body
    assert body["errors"][0].startswith(field), body
    return body["errors"][0]


def test_generate_answers_bytes_with_finish_reason_and_seed(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = post(client, "generate/ultra", prompt="a lighthouse", aspect_ratio="16:9", seed=1234,
                    output_format="jpeg")
        assert picture(resp).size == (1344, 768) and picture(resp).format == "JPEG"
        assert resp.headers["content-type"] == "image/jpeg"
        assert resp.headers["finish-reason"] == "SUCCESS" and resp.headers["seed"] == "1234"
        core = post(client, "generate/core", prompt="a fox", style_preset="anime")
        assert picture(core).size == (1024, 1024) and core.headers["content-type"] == "image/png"
        assert core.headers["seed"].isdigit() and int(core.headers["seed"]) > 0  # the vendor's own pick
    assert [r.path for r in state.requests] == ["/v2beta/stable-image/generate/ultra",
                                                "/v2beta/stable-image/generate/core"]
    assert state.requests[0].fields == {"prompt": "a lighthouse", "aspect_ratio": "16:9", "seed": "1234",
                                        "output_format": "jpeg"}


def test_json_accept_and_sd3_models(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = post(client, "generate/sd3", "application/json", prompt="a fox", model="sd3.5-medium",
                    aspect_ratio="9:16", seed=9)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["finish_reason"] == "SUCCESS" and body["seed"] == 9
        assert Image.open(io.BytesIO(base64.b64decode(body["image"]))).size == (768, 1344)
        i2i = post(client, "generate/sd3", files={"image": ("a.png", png(256, 128))}, prompt="snow",
                   mode="image-to-image", strength=0.7, model="sd3.5-large-turbo")
        assert picture(i2i).size == (256, 128)
    assert state.requests[0].fields["model"] == "sd3.5-medium"
    assert state.requests[1].fields == {"prompt": "snow", "model": "sd3.5-large-turbo", "mode": "image-to-image",
                                        "strength": "0.7", "output_format": "png"}


def test_edits_and_upscales(gw):
    gateway, state = gw
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (0, 0, 64, 128))  # white: redraw
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    image = ("a.png", png(128, 128))
    with gateway.http() as client:
        assert picture(post(client, "edit/inpaint", files={"image": image, "mask": ("m.png", buf.getvalue())},
                            prompt="a cat", grow_mask=4)).size == (128, 128)
        assert set(state.requests[-1].files) == {"image", "mask"}
        sent = Image.open(io.BytesIO(state.requests[-1].files["mask"])).convert("L")
        assert sent.getpixel((10, 10)) == 255 and sent.getpixel((100, 10)) == 0  # white stays the edit
        assert picture(post(client, "edit/outpaint", files={"image": image}, right=64)).size == (192, 128)
        assert picture(post(client, "edit/search-and-replace", files={"image": image}, prompt="a dog",
                            search_prompt="cat")).size == (128, 128)
        assert picture(post(client, "edit/search-and-recolor", files={"image": image}, prompt="blue",
                            select_prompt="car")).size == (128, 128)
        assert picture(post(client, "edit/remove-background", files={"image": image})).mode == "RGBA"
        assert picture(post(client, "edit/erase", files={"image": ("a.png", png(128, 128, alpha=True))})).size == (128, 128)
        assert picture(post(client, "upscale/fast", files={"image": image})).size == (512, 512)
        assert picture(post(client, "upscale/conservative", files={"image": image}, prompt="sharp")).size == (2048, 2048)
    assert [r.path.rsplit("/", 1)[1] for r in state.requests] == [
        "inpaint", "outpaint", "search-and-replace", "search-and-recolor", "remove-background", "erase", "fast",
        "conservative"]


def results(client: httpx.Client, job: str, accept: str = "image/*") -> httpx.Response:
    deadline = time.monotonic() + 20
    while (resp := client.get(f"/stability/v2beta/results/{job}", headers={"accept": accept})).status_code == 202:
        assert resp.json() == {"id": job, "status": "in-progress"}
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return resp


def test_creative_upscale_answers_an_id_then_results(gw):
    gateway, state = gw
    with gateway.http() as client:
        job = post(client, "upscale/creative", "application/json", files={"image": ("a.png", png(256, 256))},
                   prompt="crisp", creativity=0.25, seed=5)
        assert job.status_code == 200 and set(job.json()) == {"id"}, job.text
        first = client.get(f"/stability/v2beta/results/{job.json()['id']}")
        assert first.status_code == 202 and first.json()["status"] == "in-progress"
        done = results(client, job.json()["id"])
        assert picture(done).size == (2048, 2048) and done.headers["finish-reason"] == "SUCCESS"
        assert done.headers["seed"] == "5"
        again = results(client, job.json()["id"], "application/json")
        assert again.json()["seed"] == 5 and again.json()["finish_reason"] == "SUCCESS"
        # any route, asked to answer at once, is polled the same way
        quick = client.post(BASE + "generate/core", headers={"Prefer": "respond-async"}, files={"none": ""},
                            data={"prompt": "a fox"})
        assert quick.status_code == 200 and set(quick.json()) == {"id"}
        assert picture(results(client, quick.json()["id"])).size == (1024, 1024)
        stability_error(client.get("/stability/v2beta/results/no-such-job"), 404, "not_found", "id")
    assert state.requests[0].fields == {"prompt": "crisp", "creativity": "0.25", "seed": "5", "output_format": "png"}


@pytest.mark.parametrize("route, data, files, field", [
    ("generate/core", {}, None, "prompt"),
    ("generate/core", {"prompt": "x", "aspect_ratio": "4:3"}, None, "aspect_ratio"),
    ("generate/core", {"prompt": "x", "strength": "0.5"}, None, "strength"),
    ("generate/core", {"prompt": "x", "seed": "4294967295"}, None, "seed"),
    ("generate/sd3", {"prompt": "x", "model": "sd3-large"}, None, "model"),
    ("generate/sd3", {"prompt": "x", "mode": "image-to-image"}, None, "image"),
    ("generate/sd3", {"prompt": "x", "output_format": "webp"}, None, "output_format"),
    ("edit/inpaint", {"prompt": "x", "grow_mask": "30"}, {"image": ("a.png", png(64, 64, alpha=True))}, "grow_mask"),
    ("edit/search-and-replace", {"prompt": "x"}, {"image": ("a.png", png(64, 64))}, "search_prompt"),
    ("edit/remove-background", {"prompt": "x"}, {"image": ("a.png", png(64, 64))}, "prompt"),
    ("upscale/fast", {}, None, "image"),
])
def test_invalid_requests_name_the_field_in_stabilitys_shape(gw, route, data, files, field):
    gateway, state = gw
    with gateway.http() as client:
        stability_error(post(client, route, files=files, **data), 400, "bad_request", field)
    assert state.requests == []


def test_refusals_in_stabilitys_shape(gw):
    gateway, state = gw
    with gateway.http(key=None) as anonymous:
        stability_error(post(anonymous, "generate/core", prompt="x"), 401, "unauthorized", "")
    with gateway.http() as client:
        stability_error(post(client, "generate/core", prompt="a forbidden fox"), 403, "content_moderation", "")
        stability_error(post(client, "generate/core", prompt="a prohibited fox"), 403, "content_moderation", "")
        stability_error(post(client, "generate/core", accept="text/html", prompt="x"), 400, "bad_request", "accept")
        state.fail_next(429, "rate_limit_exceeded", ["You have exceeded the rate limit."])
        stability_error(post(client, "generate/core", prompt="x"), 429, "rate_limit_exceeded", "")
