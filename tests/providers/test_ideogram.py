"""Ideogram through the OpenAI surface, end to end against the strict emulator; plus the
emulator's own rules (the native /ideogram surface will be built on them) and a few pure
build/parse checks."""

from __future__ import annotations

import base64
import io
import time

import httpx
import orjson
import pytest
from PIL import Image

from pixelgate.errors import (UpstreamContentFiltered, UpstreamRateLimited, UpstreamRejected,
                              UpstreamUnavailable)
from pixelgate.providers.base import UpstreamReply
from pixelgate.providers.ideogram import Ideogram
from tests.conftest import mask_png, png
from pixelgate.simulators.ideogram import SAFETY_ERROR, IdeogramEmulatorState, create_app
from tests.emulators.server import emulated, serve

KEY = "ideogram-emulator-key"
V3_IDS = ["V3", "ideogram-v3", "V_3"]
LEGACY_IDS = ["V_1", "V_1_TURBO", "V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO"]
MODELS = V3_IDS + LEGACY_IDS
V4_IDS = ["V4", "ideogram-v4", "V_4_0"]
GEN, EDITS = "/v1/images/generations", "/v1/images/edits"
# The source document's defaults, which the gateway always sends (Ideogram's own differ).
V3_DEFAULTS = {"rendering_speed": "DEFAULT", "magic_prompt": "AUTO", "style_type": "AUTO"}
LEGACY_DEFAULTS = {"V_1": {"magic_prompt_option": "AUTO"}, "V_1_TURBO": {"magic_prompt_option": "AUTO"},
                   **{m: {"magic_prompt_option": "AUTO", "style_type": "AUTO"}
                      for m in ("V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO")}}
DEER = ("A deer drinking in the lake, Sakura petals falling, green and clean water, japanese temple, "
        "dappled sunlight, cinematic lighting, expansive view, peace, in the style of Pixar 3D")


def channel(base: str, name: str = "ideogram", **fields) -> dict:
    return {"name": name, "provider": "ideogram", "base_url": base, "api_key": KEY, "models": MODELS + V4_IDS,
            **fields}


@pytest.fixture
def upstream():
    with emulated(create_app, IdeogramEmulatorState()) as up:
        yield up


@pytest.fixture
def gw(make_gateway, upstream):
    state, base = upstream
    return make_gateway(channels=[channel(base)]), state


@pytest.fixture(scope="module")
def shared_gw(make_module_gateway):
    """One gateway and emulator for a module's many cases that each make one call or none."""
    with emulated(create_app, IdeogramEmulatorState(), "") as (state, base):
        yield make_module_gateway(channels=[channel(base)]), state


@pytest.fixture
def quiet_gw(shared_gw):
    """shared_gw with the emulator's log emptied: what it holds, this test sent."""
    shared_gw[1].requests.clear()
    return shared_gw


def sent(state: IdeogramEmulatorState, index: int = -1) -> dict:
    """The fields of an upstream call as Ideogram reads them (image_request unwrapped)."""
    fields = state.api_requests()[index].fields
    inner = fields.get("image_request")
    if isinstance(inner, str):
        return orjson.loads(inner)
    return inner if isinstance(inner, dict) else fields


def sizes_of(resp: httpx.Response) -> list[tuple[int, int]]:
    assert resp.status_code == 200, resp.text
    return [Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))).size for d in resp.json()["data"]]


def gen(client: httpx.Client, **body) -> httpx.Response:
    return client.post(GEN, json={"prompt": "a lighthouse", "response_format": "b64_json", **body})


def edit(client: httpx.Client, image: bytes, mask: bytes | None = None, **data) -> httpx.Response:
    files = {"image": ("photo.png", image, "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return client.post(EDITS, data={"prompt": "add a red umbrella", "response_format": "b64_json", **data},
                       files=files)


def rgba_half_transparent(size: int = 64) -> bytes:
    img = Image.new("RGBA", (size, size), (10, 120, 10, 255))
    img.paste((0, 0, 0, 0), (0, 0, size // 2, size))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


# -- end to end through the gateway --

def test_every_model_generates(gw):
    gateway, state = gw
    with gateway.http() as client:
        for model in MODELS:
            assert sizes_of(gen(client, model=model)) == [(1024, 1024)], model
            call = state.api_requests()[-1]
            assert call.headers["api-key"] == KEY
            if model in V3_IDS:  # 3.0 endpoint, JSON (see the provider), 3.0 field names
                assert call.path == "/v1/ideogram-v3/generate"
                assert call.content_type == "application/json"
                assert call.fields == {"prompt": "a lighthouse", "num_images": 1, **V3_DEFAULTS}
            else:
                assert call.path == "/generate"
                assert call.fields == {"image_request": {"prompt": "a lighthouse", "num_images": 1, "model": model,
                                                         **LEGACY_DEFAULTS[model]}}
        resp = client.post(GEN, json={"model": "V3", "prompt": "a lighthouse"})  # delivered as our URL
        assert resp.status_code == 200, resp.text
        url = resp.json()["data"][0]["url"]
        assert url.startswith(gateway.base_url)
        assert client.get(url).content.startswith(b"\x89PNG")
    assert any(r.method == "GET" and r.path.startswith("/api/images/ephemeral/") for r in state.requests)


def test_source_document_examples_succeed(gw):
    gateway, state = gw
    with gateway.http() as client:
        # 000: the catalog's V3 prediction input, sent as top-level fields
        assert sizes_of(gen(client, model="V3", prompt=DEER, rendering_speed="QUALITY",
                            aspect_ratio="2x1")) == [(1408, 704)]
        assert sent(state) == {"prompt": DEER, "num_images": 1, "aspect_ratio": "2x1", "rendering_speed": "QUALITY",
                               "magic_prompt": "AUTO", "style_type": "AUTO"}
        # 001: the V3 generate curl (num_images is n here)
        assert sizes_of(gen(client, model="ideogram-v3", prompt="cover design", rendering_speed="QUALITY", n=2,
                            aspect_ratio="2x1")) == [(1408, 704)] * 2
        assert sent(state)["num_images"] == 2
        # 001: the legacy generate example
        resp = gen(client, model="V_2", prompt="3D cartoon owl", negative_prompt="blurry, bad anatomy, watermark",
                   aspect_ratio="ASPECT_3_2", n=2, magic_prompt_option="AUTO", style_type="RENDER_3D")
        assert sizes_of(resp) == [(1248, 832)] * 2
        assert sent(state) == {"prompt": "3D cartoon owl", "num_images": 2, "aspect_ratio": "ASPECT_3_2",
                               "negative_prompt": "blurry, bad anatomy, watermark", "magic_prompt_option": "AUTO",
                               "style_type": "RENDER_3D", "model": "V_2"}


def test_source_document_v3_edit_example(gw):
    """001's edit example sends aspect_ratio and negative_prompt, which the 3.0 edit endpoint
    lacks: accepted and left out. The OpenAI mask (transparent = edit) arrives black = edit."""
    gateway, state = gw
    with gateway.http() as client:
        resp = edit(client, png(64, 64), mask_png(), model="V3", prompt="remove text", rendering_speed="DEFAULT",
                    n="1", seed="1", aspect_ratio="16x9", magic_prompt="AUTO", style_type="AUTO",
                    negative_prompt="blurry, bad anatomy, watermark")
    assert sizes_of(resp) == [(64, 64)]
    call = state.api_requests()[-1]
    assert call.path == "/v1/ideogram-v3/edit" and call.content_type.startswith("multipart/form-data")
    assert call.fields == {"prompt": "remove text", "num_images": "1", "seed": "1", "rendering_speed": "DEFAULT",
                           "magic_prompt": "AUTO", "style_type": "AUTO"}
    mask = call.files["mask"][0].image.convert("L")
    assert mask.size == (64, 64) and mask.getpixel((5, 32)) == 0 and mask.getpixel((60, 32)) == 255
    assert call.files["image"][0].image.size == (64, 64)


def test_size_translation(gw):
    gateway, state = gw
    cases = [  # model, size, what Ideogram receives, image size
        ("V3", "1024x1024", {"resolution": "1024x1024"}, (1024, 1024)),
        ("V3", "1280x704", {"resolution": "1280x704"}, (1280, 704)),
        ("V3", "1920x1080", {"resolution": "1312x736"}, (1312, 736)),  # nearest
        ("V3", "1024*768", {"resolution": "1152x864"}, (1152, 864)),
        ("V3", "16:9", {"aspect_ratio": "16x9"}, (1312, 736)),
        ("V3", "9x16", {"aspect_ratio": "9x16"}, (736, 1312)),
        ("V3", "ASPECT_10_16", {"aspect_ratio": "10x16"}, (800, 1280)),
        ("V3", "21:9", {"aspect_ratio": "2x1"}, (1408, 704)),  # nearest ratio
        ("V3", "2K", {"resolution": "1024x1024"}, (1024, 1024)),  # 3.0 makes about 1 MP at most
        ("V3", "auto", {}, (1024, 1024)),
        ("V_2", "1280x720", {"resolution": "RESOLUTION_1280_720"}, (1280, 720)),
        ("V_2A_TURBO", "RESOLUTION_1024_768", {"resolution": "RESOLUTION_1024_768"}, (1024, 768)),
        ("V_2", "16:9", {"aspect_ratio": "ASPECT_16_9"}, (1280, 720)),
        ("V_1", "1280x720", {"aspect_ratio": "ASPECT_16_9"}, (1280, 720)),  # V_1 takes no resolution
        ("V_1_TURBO", "1K", {"aspect_ratio": "ASPECT_1_1"}, (1024, 1024)),
    ]
    with gateway.http() as client:
        for model, size, wanted, out in cases:
            assert sizes_of(gen(client, model=model, size=size)) == [out], (model, size)
            got = {k: v for k, v in sent(state).items() if k in ("aspect_ratio", "resolution")}
            assert got == wanted, (model, size, got)


def test_impossible_size_is_refused_before_any_call(gw):
    gateway, state = gw
    with gateway.http() as client:
        for model, size in [("V3", "10:1"), ("V3", "4096x256"), ("V_1", "1x10"), ("V_2", "256x4096"),
                            ("V3", "big")]:
            resp = gen(client, model=model, size=size)
            assert resp.status_code == 400, (model, size)
            assert resp.json()["error"]["param"] == "size"
        assert "16:9" in gen(client, model="V3", size="10:1").json()["error"]["message"]
    assert state.requests == []


def test_n_fans_out_in_calls_of_eight(gw):
    gateway, state = gw
    with gateway.http() as client:
        assert len(sizes_of(gen(client, model="V3", n=10))) == 10
        assert sorted(r.fields["num_images"] for r in state.api_requests()) == [2, 8]
        assert len(sizes_of(gen(client, model="V_2A", n=9))) == 9
        assert sorted(sent(state, i)["num_images"] for i in (-1, -2)) == [1, 8]
        calls = len(state.requests)
        resp = gen(client, model="V3", n=11)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "n"
        assert len(state.requests) == calls


def test_vendor_options_pass_through(gw):
    gateway, state = gw
    palette = {"members": [{"color_hex": "#aabbcc", "color_weight": 0.5}, {"color_hex": "#123"}]}
    with gateway.http() as client:
        assert gen(client, model="V3", magic_prompt="OFF", style_type="DESIGN", negative_prompt="blurry",
                   style_preset="WATERCOLOR", color_palette={"name": "PASTEL"}, quality="low",
                   aspect_ratio="16:9", seed=42).status_code == 200
        assert sent(state) == {"prompt": "a lighthouse", "num_images": 1, "seed": 42, "aspect_ratio": "16x9",
                               "rendering_speed": "TURBO", "magic_prompt": "OFF", "style_type": "DESIGN",
                               "negative_prompt": "blurry", "style_preset": "WATERCOLOR",
                               "color_palette": {"name": "PASTEL"}}
        assert gen(client, model="V3", quality="high").status_code == 200
        assert sent(state)["rendering_speed"] == "QUALITY"
        assert gen(client, model="V3", quality="high", rendering_speed="FLASH").status_code == 200
        assert sent(state)["rendering_speed"] == "FLASH"  # the vendor's own field wins
        resp = gen(client, model="V_2", magic_prompt="ON", color_palette=palette, aspect_ratio="16x9",
                   output_format="jpeg")
        assert resp.status_code == 200, resp.text
        assert sent(state) == {"prompt": "a lighthouse", "num_images": 1, "aspect_ratio": "ASPECT_16_9",
                               "magic_prompt_option": "ON", "color_palette": palette, "model": "V_2",
                               "style_type": "AUTO"}
        item = resp.json()["data"][0]
        assert item["revised_prompt"].startswith("a lighthouse, rendered")  # magic prompt's rewrite
        assert base64.b64decode(item["b64_json"]).startswith(b"\xff\xd8")  # converted to JPEG
        assert "revised_prompt" not in gen(client, model="V_1", magic_prompt="OFF").json()["data"][0]
        assert gen(client, model="V_2A", magic_prompt_option="ON", magic_prompt_version="V_0_3").status_code == 200
        assert sent(state)["magic_prompt_option"] == "ON" and sent(state)["magic_prompt_version"] == "V_0_3"


@pytest.mark.parametrize("body, param", [
    ({"model": "V3", "foo": 1}, "foo"),
    ({"model": "V3", "num_images": 2}, "num_images"),  # n is the field here
    ({"model": "V3", "rendering_speed": "FAST"}, "rendering_speed"),
    ({"model": "V3", "magic_prompt": "MAYBE"}, "magic_prompt"),
    ({"model": "V3", "style_type": "ANIME"}, "style_type"),  # a legacy-only style
    ({"model": "V3", "aspect_ratio": "7:3"}, "aspect_ratio"),
    ({"model": "V3", "aspect_ratio": "16x9", "size": "1024x1024"}, "aspect_ratio"),
    ({"model": "V3", "color_palette": {"name": "NEON"}}, "color_palette.name"),
    ({"model": "V3", "color_palette": {"members": [{"color_hex": "#abc", "color_weight": 2}]}},
     "color_palette.members.0.color_weight"),
    ({"model": "V3", "style_preset": "NEON_NOIR"}, "style_preset"),
    ({"model": "V3", "seed": -1}, "seed"),
    ({"model": "V3", "seed": 2147483648}, "seed"),
    ({"model": "V3", "style": "vivid"}, "style"),
    ({"model": "V_1", "style_type": "GENERAL"}, "style_type"),  # not before V_2
    ({"model": "V_1_TURBO", "color_palette": {"name": "PASTEL"}}, "color_palette"),
    ({"model": "V_2A", "negative_prompt": "x"}, "negative_prompt"),  # V_1 and V_2 only
    ({"model": "V_2A_TURBO", "color_palette": {"name": "PASTEL"}}, "color_palette"),
    ({"model": "V_2", "aspect_ratio": "4x5"}, "aspect_ratio"),  # a 3.0-only ratio
    ({"model": "V_2", "quality": "high"}, "quality"),
    ({"model": "V_2", "rendering_speed": "TURBO"}, "rendering_speed"),
    ({"model": "V_2", "magic_prompt": "ON", "magic_prompt_option": "ON"}, None),
    ({"model": "V_2", "magic_prompt_version": "V_9"}, "magic_prompt_version"),
])
def test_invalid_options_are_refused_before_any_call(quiet_gw, body, param):
    gateway, state = quiet_gw
    with gateway.http() as client:
        resp = gen(client, **body)
    assert resp.status_code == 400, resp.text
    if param is not None:
        assert resp.json()["error"]["param"] == param
    assert state.requests == []


def test_legacy_edit(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = edit(client, png(48, 32), mask_png(48, 32), model="V_2_TURBO", magic_prompt="OFF", style_type="ANIME",
                    negative_prompt="fog", size="1024x1024")
        assert sizes_of(resp) == [(48, 32)]
        call = state.api_requests()[-1]
        assert call.path == "/edit"
        assert call.fields == {"prompt": "add a red umbrella", "num_images": "1", "model": "V_2_TURBO",
                               "magic_prompt_option": "OFF", "style_type": "ANIME"}
        assert set(call.files) == {"image_file", "mask"}
        assert call.files["mask"][0].image.convert("L").getpixel((2, 2)) == 0
        for model in ("V_1", "V_2A", "V_2A_TURBO", "V_1_TURBO"):  # only V_2 and V_2_TURBO edit
            resp = edit(client, png(), mask_png(), model=model)
            assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"
    assert len(state.api_requests()) == 1


def test_edit_without_mask_uses_the_images_transparency(gw):
    gateway, state = gw
    with gateway.http() as client:
        assert sizes_of(edit(client, rgba_half_transparent(), model="ideogram-v3")) == [(64, 64)]
        mask = state.api_requests()[-1].files["mask"][0].image.convert("L")
        assert mask.getpixel((5, 5)) == 0 and mask.getpixel((60, 5)) == 255
        resp = edit(client, png(), model="V3")  # opaque and no mask: nothing marks the area
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "image"
        resp = edit(client, png(64, 64), mask_png(32, 32), model="V3")
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "mask"
    assert len(state.api_requests()) == 1


def test_moderation(gw):
    gateway, state = gw
    with gateway.http() as client:
        for prompt in ("a forbidden thing", "a prohibited thing"):  # unsafe images; 422 refusal
            for model in ("V3", "V_2"):
                resp = gen(client, model=model, prompt=prompt, n=2)
                assert resp.status_code == 400, resp.text
                assert resp.json()["error"]["code"] == "content_policy_violation"
        state.unsafe_images = 1
        resp = gen(client, model="V3", n=3)
        assert len(sizes_of(resp)) == 2 and "withheld" in resp.json()["partial"]


def test_upstream_errors(gw):
    gateway, state = gw
    with gateway.http() as client:
        for status, body, want, code in [
            (500, None, 502, "upstream_unavailable"), (503, "down", 502, "upstream_unavailable"),
            (429, None, 429, "upstream_rate_limited"), (401, None, 502, "upstream_auth_failed"),
            (400, {"error": "Invalid input provided."}, 400, "upstream_rejected"),
            (422, {"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]}, 400, "upstream_rejected"),
            (422, {"error": "The input image was flagged."}, 400, "content_policy_violation"),
        ]:
            state.fail_next(status, body)
            resp = gen(client, model="V3")
            assert (resp.status_code, resp.json()["error"]["code"]) == (want, code), (status, resp.text)
        # an opaque OpenAI mask marks nothing: Ideogram refuses the all-white mask it becomes
        resp = edit(client, png(), png(colour=(0, 0, 0)), model="V3")
        assert resp.status_code == 400 and "all white" in resp.json()["error"]["message"]


def test_bad_channel_key_and_failover(make_gateway):
    first, second = IdeogramEmulatorState(), IdeogramEmulatorState()
    with serve(create_app(first)) as a, serve(create_app(second)) as b:
        gateway = make_gateway(channels=[channel(a, "first", priority=10), channel(b, "second")])
        with gateway.http() as client:
            first.fail_next(502)
            resp = gen(client, model="V_2")
            assert resp.status_code == 200, resp.text
            assert [att["channel"] for att in gateway.log_row(resp.headers["x-request-id"])["attempts"]] == \
                ["first", "second"]
            first.api_key = "rotated"  # the channel's key is now wrong: 401, try elsewhere
            assert gen(client, model="V3").status_code == 200
            second.fail_next(500)
            resp = gen(client, model="V3")
            assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_unavailable"
        assert len(second.api_requests()) == 3


def test_errors_inside_200(gw):
    gateway, state = gw
    with gateway.http() as client:
        for body, want, code in [
            ({"error": "Internal failure"}, 502, "upstream_bad_response"),
            ({"error": SAFETY_ERROR}, 400, "content_policy_violation"),
            ({"created": "2025-01-01T00:00:00Z"}, 502, "upstream_bad_response"),
            ({"created": "x", "data": [{"is_image_safe": True, "url": None, "prompt": "p", "seed": 1,
                                        "resolution": "1x1"}]}, 502, "upstream_bad_response"),
            ({"created": "x", "data": []}, 502, "upstream_bad_response"),
        ]:
            state.fail_next(200, body)
            resp = gen(client, model="V3")
            assert (resp.status_code, resp.json()["error"]["code"]) == (want, code), (body, resp.text)


# -- pure build/parse --

def test_parse_error_mapping():
    provider = Ideogram()
    cases = [(422, {"error": SAFETY_ERROR}, UpstreamContentFiltered), (400, {"error": "bad"}, UpstreamRejected),
             (429, {"error": "slow down"}, UpstreamRateLimited), (403, {"error": "no"}, UpstreamUnavailable),
             (500, None, UpstreamUnavailable)]
    for status, body, cls in cases:
        error = provider.parse_error(UpstreamReply(status, {}, orjson.dumps(body) if body else b"<html>"))
        assert type(error) is cls, (status, error)
    assert provider.parse_error(UpstreamReply(400, {}, b'{"error": "bad"}')).message == "bad"


def test_endpoint_tables_cover_every_ideogram_operation():
    from pixelgate.providers.ideogram import LEGACY_ENDPOINTS, V3_ENDPOINTS, V4_PATH, V4_RESOLUTIONS
    from pixelgate.simulators.ideogram import ENDPOINTS, V4_RESOLUTIONS as EMULATED_V4

    paths = {path for path, _ in V3_ENDPOINTS.values()} | {e[0] for e in LEGACY_ENDPOINTS.values()} | {V4_PATH}
    assert paths == set(ENDPOINTS)
    assert set(V4_RESOLUTIONS) == set(EMULATED_V4) and len(V4_RESOLUTIONS) == 21
    for path, fields in V3_ENDPOINTS.values():
        assert fields <= ENDPOINTS[path][1], path  # never a field the endpoint lacks
    for path, fields, _ in LEGACY_ENDPOINTS.values():
        assert fields <= ENDPOINTS[path][1], path


# -- Ideogram 4.0 --

def test_v4_generates_through_the_openai_api_with_its_own_fields(gw):
    gateway, state = gw
    with gateway.http() as client:
        for model in V4_IDS:
            assert sizes_of(gen(client, model=model)) == [(2048, 2048)], model
            call = state.api_requests()[-1]
            assert call.path == "/v1/ideogram-v4/generate" and call.content_type.startswith("multipart/form-data")
            assert call.fields == {"text_prompt": "a lighthouse", "rendering_speed": "DEFAULT"}
        resp = gen(client, model="V4", size="16:9", quality="low", seed=7)
        assert sizes_of(resp) == [(2560, 1440)]
        assert state.api_requests()[-1].fields == {"text_prompt": "a lighthouse", "rendering_speed": "TURBO",
                                                   "seed": "7", "resolution": "2560x1440"}
        assert resp.json()["data"][0]["revised_prompt"].startswith("a lighthouse, ")  # magic prompt is on
        assert sizes_of(gen(client, model="V4", size="1024x1792", rendering_speed="QUALITY")) == [(1440, 2560)]
        assert state.api_requests()[-1].fields["rendering_speed"] == "QUALITY"
        # the structured prompt instead of a text one: sent as a JSON part, not magic-prompted
        layout = {"high_level_description": "a lighthouse poster", "compositional_deconstruction": {}}
        resp = client.post(GEN, json={"model": "V4", "json_prompt": layout, "response_format": "b64_json"})
        assert sizes_of(resp) == [(2048, 2048)]
        assert orjson.loads(state.api_requests()[-1].fields["json_prompt"]) == layout
        assert "text_prompt" not in state.api_requests()[-1].fields


def test_v4_one_image_a_call(gw):
    gateway, state = gw
    with gateway.http() as client:
        calls = len(state.api_requests())
        assert len(sizes_of(gen(client, model="V4", n=3))) == 3
        assert len(state.api_requests()) == calls + 3
        assert all("num_images" not in r.fields for r in state.api_requests()[calls:])


@pytest.mark.parametrize("body,param", [
    ({"size": "10:1"}, "size"),
    ({"size": "4096x256"}, "size"),
    ({"rendering_speed": "FLASH"}, "rendering_speed"),
    ({"rendering_speed": "BALANCED"}, "rendering_speed"),
    ({"json_prompt": {"high_level_description": "x"}}, "json_prompt"),
    ({"magic_prompt": "OFF"}, "magic_prompt"),
    ({"seed": 2147483648}, "seed"),
])
def test_v4_refuses_what_it_cannot_do_before_any_call(gw, body, param):
    gateway, state = gw
    with gateway.http() as client:
        resp = gen(client, model="V4", **body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param, resp.text
    assert state.requests == []


def test_v4_without_any_prompt_is_refused(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "V4", "prompt": ""})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "prompt", resp.text
    assert state.requests == []


def _v4(client, **data):
    return client.post("/v1/ideogram-v4/generate", files=[(k, (None, str(v))) for k, v in data.items()])


def test_emulator_v4_rules(upstream):
    state, base = upstream
    with httpx.Client(base_url=base, headers={"Api-Key": KEY}) as c:
        ok = _v4(c, text_prompt="a poster", resolution="2560x1440", rendering_speed="QUALITY", seed=5)
        assert ok.status_code == 200, ok.text
        assert ok.json()["response_type"] == "url"
        item = ok.json()["data"][0]
        assert item["resolution"] == "2560x1440" and item["seed"] == 5 and "style_type" not in item
        assert c.get(item["url"]).status_code == 200
        assert _v4(c, prompt="a poster").status_code == 200  # the legacy name of text_prompt
        assert _v4(c, json_prompt='{"high_level_description": "a poster"}').json()["data"][0]["resolution"] == \
            "2048x2048"  # no resolution: the model picks
        for bad in [dict(text_prompt="x", json_prompt='{"a": 1}'), dict(text_prompt="x", prompt="y"), dict(),
                    dict(json_prompt="not json"), dict(json_prompt="[1]"),
                    dict(text_prompt="x", resolution="1024x1024"),
                    dict(text_prompt="x", resolution="2048x2049"), dict(text_prompt="x", rendering_speed="FLASH"),
                    dict(text_prompt="x", rendering_speed="BALANCED"), dict(text_prompt="x", aspect_ratio="16x9"),
                    dict(text_prompt="x", num_images=2), dict(text_prompt="x", magic_prompt_option="OFF"),
                    dict(text_prompt="x", seed=-1)]:
            resp = _v4(c, **bad)
            assert resp.status_code == 400 and "error" in resp.json(), bad
        assert "coming soon" in _v4(c, text_prompt="x", rendering_speed="FLASH").json()["error"]
        both = _v4(c, text_prompt="x", json_prompt='{"a": 1}').json()["error"]
        assert "text_prompt" in both and "json_prompt" in both
        assert c.post("/v1/ideogram-v4/generate", json={"text_prompt": "x"}).status_code == 400  # multipart only
        refused = _v4(c, text_prompt="a prohibited act")
        assert refused.status_code == 422 and refused.json() == {"error": SAFETY_ERROR}
        assert c.post("/v1/ideogram-v4/generate", files={"text_prompt": (None, "x")},
                      headers={"Api-Key": "wrong"}).status_code == 401


# -- the emulator's own rules (the native surface will rely on them) --

def _v3(client, path="generate", files=None, **data):
    return client.post(f"/v1/ideogram-v3/{path}", data={k: str(v) for k, v in data.items()}, files=files or {})


def _f(name, data, ctype="image/png"):
    return (name, data, ctype)


def test_emulator_v3_rules(upstream):
    state, base = upstream
    white, half = png(64, 64, colour=(255, 255, 255)), mask_black_left()
    with httpx.Client(base_url=base, headers={"Api-Key": KEY}) as c:
        assert c.post("/v1/ideogram-v3/generate", data={"prompt": "x"}).status_code == 400  # url-encoded
        refs = [("style_reference_images", _f("r.png", png()))] * 2
        ok = _v3(c, prompt="x", aspect_ratio="16x9", num_images=2, files=refs)
        assert ok.status_code == 200 and [d["resolution"] for d in ok.json()["data"]] == ["1312x736"] * 2
        assert ok.json()["created"].endswith("+00:00")
        assert c.get(ok.json()["data"][0]["url"]).status_code == 200
        assert c.get(ok.json()["data"][0]["url"].replace("sig=", "sig=0")).status_code == 403
        for bad in [dict(aspect_ratio="16x9", resolution="1024x1024"), dict(num_images=9), dict(num_images=0),
                    dict(seed=-1), dict(seed=2147483648), dict(rendering_speed="FAST"), dict(magic_prompt="YES"),
                    dict(style_type="ANIME"), dict(aspect_ratio="16:9"), dict(resolution="1000x1000"),
                    dict(style_preset="NOPE"), dict(color_palette="{bad"), dict(color_palette='{"name": "NEON"}'),
                    dict(style_codes="AAFF5733", style_type="GENERAL"), dict(image_weight=50), dict(foo=1)]:
            resp = _v3(c, prompt="x", **bad)
            assert resp.status_code == 400 and "error" in resp.json(), bad
        two_refs = [("character_reference_images", _f("c.png", png()))] * 2
        assert _v3(c, prompt="x", files=two_refs).status_code == 400
        assert _v3(c, files=[("image", _f("a.png", png()))], path="remix").status_code == 400  # no prompt
        resp = c.post("/v1/ideogram-v3/generate", json={"prompt": "a prohibited act"})
        assert resp.status_code == 422 and resp.json() == {"error": SAFETY_ERROR}
        assert c.post("/v1/ideogram-v3/generate", json={"prompt": "x", "num_images": "2"}).status_code == 400
        # remix, edit, reframe, replace-background
        remix = _v3(c, "remix", {"image": _f("a.png", png(100, 50))}, prompt="x", image_weight=60,
                    resolution="1280x704")
        assert remix.status_code == 200 and remix.json()["data"][0]["resolution"] == "1280x704"
        assert _v3(c, "remix", {"image": _f("a.png", png())}, prompt="x", image_weight=101).status_code == 400
        edit_ok = _v3(c, "edit", {"image": _f("a.png", png()), "mask": _f("m.png", half)}, prompt="x",
                      rendering_speed="TURBO")
        assert edit_ok.status_code == 200 and edit_ok.json()["data"][0]["resolution"] == "64x64"
        for mask in (white, png(32, 32, colour=(0, 0, 0)), png(64, 64, colour=(128, 128, 128))):
            files = {"image": _f("a.png", png()), "mask": _f("m.png", mask)}
            assert _v3(c, "edit", files, prompt="x").status_code == 400
        assert _v3(c, "edit", {"image": _f("a.png", png()), "mask": _f("m.png", half)}, prompt="x",
                   aspect_ratio="16x9").status_code == 400
        reframe = _v3(c, "reframe", {"image": _f("a.png", png(64, 64))}, resolution="1536x512")
        assert reframe.status_code == 200 and reframe.json()["data"][0]["resolution"] == "1536x512"
        assert _v3(c, "reframe", {"image": _f("a.png", png(64, 32))}, resolution="1536x512").status_code == 400
        assert _v3(c, "reframe", {"image": _f("a.png", png())}).status_code == 400  # resolution required
        bg = _v3(c, "replace-background", {"image": _f("a.jpg", _jpeg(80, 40), "image/jpeg")}, prompt="a beach")
        assert bg.status_code == 200 and bg.json()["data"][0]["resolution"] == "80x40"
        assert _v3(c, "replace-background", {"image": _f("a.png", png())}, prompt="x",
                   style_type="AUTO").status_code == 400
        gif_ref = {"style_reference_images": _f("a.gif", _gif(), "image/gif")}
        assert _v3(c, "generate", gif_ref, prompt="x").status_code == 400


def test_emulator_legacy_rules(upstream):
    state, base = upstream
    with httpx.Client(base_url=base, headers={"Api-Key": KEY}) as c:
        def legacy(**fields):
            return c.post("/generate", json={"image_request": {"prompt": "x", **fields}})
        assert legacy(model="V_2A", resolution="RESOLUTION_1280_720").json()["data"][0]["resolution"] == "1280x720"
        for bad in [dict(model="V_1", style_type="GENERAL"), dict(model="V_2A", negative_prompt="x"),
                    dict(model="V_1_TURBO", resolution="RESOLUTION_1024_1024"), dict(model="V_2A_TURBO",
                    color_palette={"name": "PASTEL"}), dict(model="V_9"), dict(aspect_ratio="16x9"),
                    dict(aspect_ratio="ASPECT_1_1", resolution="RESOLUTION_1024_1024"), dict(num_images=9),
                    dict(magic_prompt="ON"), dict(style_type="STYLIZED", model="V_1")]:
            assert legacy(**bad).status_code == 400, bad
        assert c.post("/generate", json={"prompt": "x"}).status_code == 400  # not wrapped
        assert c.post("/generate", data={"image_request": "{}"}, files={"f": ("a", b"b")}).status_code == 400
        form = {"image_request": orjson.dumps({"prompt": "p", "image_weight": 60, "model": "V_1"}).decode()}
        assert c.post("/remix", data=form, files={"image_file": ("a.png", png(), "image/png")}).status_code == 200
        assert c.post("/remix", data=form).status_code == 400
        up = c.post("/upscale", data={"image_request": "{}"}, files={"image_file": ("a.png", png(40, 30), "image/png")})
        assert up.status_code == 200 and up.json()["data"][0]["upscaled_resolution"] == "80x60"
        assert Image.open(io.BytesIO(c.get(up.json()["data"][0]["url"]).content)).size == (80, 60)
        bad_up = {"image_request": '{"resemblance": 0}'}
        assert c.post("/upscale", data=bad_up, files={"image_file": ("a.png", png(), "image/png")}).status_code == 400
        desc = c.post("/describe", files={"image_file": ("a.png", png(), "image/png")},
                      data={"describe_model_version": "V_2"})
        assert desc.status_code == 200 and desc.json()["descriptions"][0]["text"]
        edit_files = {"image_file": ("a.png", png(), "image/png"), "mask": ("m.png", mask_black_left(), "image/png")}
        assert c.post("/edit", data={"prompt": "x", "model": "V_2"}, files=edit_files).status_code == 200
        assert c.post("/edit", data={"prompt": "x", "model": "V_1"}, files=edit_files).status_code == 400
        assert c.post("/edit", data={"prompt": "x"}, files=edit_files).status_code == 400  # model required
    with httpx.Client(base_url=base) as anonymous:
        for path, status in [("/v1/ideogram-v3/generate", 401), ("/v1/ideogram-v3/remix", 403), ("/generate", 401),
                             ("/remix", 403), ("/upscale", 403), ("/edit", 401)]:
            resp = anonymous.post(path, json={})
            assert resp.status_code == status and "error" in resp.json(), path
    with httpx.Client(base_url=base, headers={"Api-Key": KEY}) as c:
        state.max_in_flight = 0
        assert c.post("/generate", json={"image_request": {"prompt": "x"}}).status_code == 429
        state.max_in_flight = 10
        state.fail_next(503, count=2)
        statuses = [c.post("/generate", json={"image_request": {"prompt": "x"}}).status_code for _ in range(3)]
        assert statuses == [503, 503, 200]
        state.delay = 0.2
        started = time.monotonic()
        assert c.post("/generate", json={"image_request": {"prompt": "x"}}).status_code == 200
        assert time.monotonic() - started >= 0.2


def mask_black_left(size: int = 64) -> bytes:
    img = Image.new("L", (size, size), 255)
    img.paste(0, (0, 0, size // 2, size))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _jpeg(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(out, "JPEG")
    return out.getvalue()


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "GIF")
    return out.getvalue()
