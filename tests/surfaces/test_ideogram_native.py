"""The Ideogram-native surface (/ideogram/...), each endpoint in its own client shape (multipart
for 3.0, the image_request wrapper for legacy), against the strict Ideogram emulator: the exact
calls of the source document's examples, every rule refused before any upstream call, and
Ideogram's own error shapes."""

from __future__ import annotations

import io
import time
from datetime import datetime
from decimal import Decimal

import httpx
import orjson
import pytest
from PIL import Image

from tests.conftest import ADMIN_KEY, png
from pixelgate.simulators.ideogram import SAFETY_ERROR, IdeogramEmulatorState, create_app
from tests.emulators.server import emulated

KEY = "ideogram-emulator-key"
MODELS = ["V4", "V3", "V_1", "V_1_TURBO", "V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO"]
V3 = "/ideogram/v1/ideogram-v3"
V4 = "/ideogram/v1/ideogram-v4"
COVER = ("Delicate 3D cover design with various combat machines flying from an portal. The machines have "
         "different shapes, sizes, and colors. The portal is emitting swirling energy. The background contains "
         "a futuristic city with tall buildings. The text \"One Gateway, Infinite Models\" is placed in the center "
         "with neon lights, expansive view, cinematic lighting, vivid color, bright tone. clean text, cyber punk, "
         "smooth render")
OWL = ("3D cartoon, An adorable white owl baby with tilted head, shiny amber eyes with highlight, fluffy body, "
       "standing on a trunk with moss and lots of glowing mushrooms, Close up, cinematic lighting, low angle, deep "
       "sense of depth. The background is a magical spring landscape, cute and esthetic, huge title design "
       "\"Always curious\"")
BIRD = "bird playing with a cat in the snow, pixel art style"


@pytest.fixture
def upstream():
    with emulated(create_app, IdeogramEmulatorState()) as up:
        yield up


@pytest.fixture
def gw(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[{"name": "ideogram", "provider": "ideogram", "base_url": base,
                                      "api_key": KEY, "models": MODELS}])
    return gateway, state


def client(gateway, key: str = ADMIN_KEY) -> httpx.Client:
    """As the document's examples send it: `Api-Key: <key>`."""
    return gateway.http(key=None, headers={"Api-Key": key})


def curl_form(**fields) -> list:
    """`curl -F name=value`: text parts of a multipart body (no files)."""
    return [(k, (None, str(v))) for k, v in fields.items()]


def jpeg(width: int = 64, height: int = 48, colour=(20, 90, 160)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "JPEG")
    return out.getvalue()


def bw_mask(width: int = 64, height: int = 48, fmt: str = "PNG", fill: int | None = None) -> bytes:
    """Black (edit) on the left half, white (keep) on the right; or all `fill`."""
    img = Image.new("L", (width, height), 255 if fill is None else fill)
    if fill is None:
        img.paste(0, (0, 0, width // 2, height))
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "GIF")
    return out.getvalue()


def last(state: IdeogramEmulatorState):
    return state.api_requests()[-1]


def inner(call) -> dict:
    """A legacy call's image_request, whether JSON or a JSON string part."""
    value = call.fields["image_request"]
    return orjson.loads(value) if isinstance(value, str) else value


def fetch_size(url: str) -> tuple[int, int]:
    resp = httpx.get(url)
    assert resp.status_code == 200, resp.text
    return Image.open(io.BytesIO(resp.content)).size


def check_items(gateway, resp: httpx.Response, count: int, resolution: str, **expected) -> list[dict]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"created", "data"}
    assert datetime.fromisoformat(body["created"]).tzinfo is not None
    assert len(body["data"]) == count
    for item in body["data"]:
        assert {"prompt", "resolution", "is_image_safe", "seed", "url"} <= set(item)
        assert item["is_image_safe"] is True and isinstance(item["seed"], int)
        assert item["resolution"] == resolution
        assert item["url"].startswith(gateway.base_url + "/files/")  # the gateway's own URL
        for key, value in expected.items():
            assert item[key] == value, (key, item)
    return body["data"]


# -- Ideogram 4.0, as its reference page calls it --

def test_v4_generate_curl_example(gw):
    """developer.ideogram.ai's example: `curl -F text_prompt="A photo of a cat"`, nothing else."""
    gateway, state = gw
    with client(gateway) as c:
        resp = c.post(f"{V4}/generate", files=curl_form(text_prompt="A photo of a cat"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"created", "data", "response_type"} and body["response_type"] == "url"
    item = body["data"][0]
    assert len(body["data"]) == 1 and item["resolution"] == "2048x2048" and item["is_image_safe"] is True
    assert item["prompt"].startswith("A photo of a cat, ")  # magic prompt: always on for a text prompt
    assert item["url"].startswith(gateway.base_url + "/files/") and "style_type" not in item
    assert fetch_size(item["url"]) == (2048, 2048)
    call = last(state)
    assert call.path == "/v1/ideogram-v4/generate" and call.headers["api-key"] == KEY
    assert call.fields == {"text_prompt": "A photo of a cat", "rendering_speed": "DEFAULT"}
    assert Decimal(resp.headers["x-pixelgate-cost"]) == Decimal("0.06")


def test_v4_generate_every_field_and_body_form(gw):
    gateway, state = gw
    layout = {"high_level_description": "a lighthouse poster", "style_description": {"art_style": "flat"}}
    with gateway.http() as c:  # Authorization: Bearer works too
        resp = c.post(f"{V4}/generate", files=curl_form(text_prompt="a poster", resolution="2560x1440",
                                                        rendering_speed="QUALITY", seed="11"))
        item = resp.json()["data"][0]
        assert resp.status_code == 200 and item["resolution"] == "2560x1440" and item["seed"] == 11
        assert last(state).fields == {"text_prompt": "a poster", "resolution": "2560x1440",
                                      "rendering_speed": "QUALITY", "seed": "11"}
        assert Decimal(resp.headers["x-pixelgate-cost"]) == Decimal("0.10")
        # a JSON body with the structured prompt: sent on as a JSON part, not magic-prompted
        resp = c.post(f"{V4}/generate", json={"json_prompt": layout, "rendering_speed": "TURBO"})
        assert resp.status_code == 200, resp.text
        assert orjson.loads(last(state).fields["json_prompt"]) == layout
        assert "text_prompt" not in last(state).fields
        assert Decimal(resp.headers["x-pixelgate-cost"]) == Decimal("0.03")
        # the legacy `prompt` is 4.0's text_prompt
        resp = c.post(f"{V4}/generate", data={"prompt": "a cat", "resolution": "1440x2560"})
        assert resp.status_code == 200 and resp.json()["data"][0]["resolution"] == "1440x2560", resp.text
        assert last(state).fields["text_prompt"] == "a cat"


V4_CASES = [
    ({"text_prompt": "x", "json_prompt": '{"a": 1}'}, "json_prompt"),
    ({"text_prompt": "x", "prompt": "y"}, "prompt"),
    ({"seed": "1"}, "text_prompt"),
    ({"text_prompt": "x", "resolution": "1024x1024"}, "resolution"),
    ({"text_prompt": "x", "resolution": "16x9"}, "resolution"),
    ({"text_prompt": "x", "rendering_speed": "FLASH"}, "rendering_speed"),
    ({"text_prompt": "x", "rendering_speed": "BALANCED"}, "rendering_speed"),
    ({"text_prompt": "x", "aspect_ratio": "16x9"}, "aspect_ratio"),
    ({"text_prompt": "x", "num_images": "2"}, "num_images"),
    ({"text_prompt": "x", "magic_prompt_option": "OFF"}, "magic_prompt_option"),
    ({"text_prompt": "x", "seed": "-1"}, "seed"),
    ({"json_prompt": "not json"}, "json_prompt"),
]


def test_v4_rules(gw):
    gateway, state = gw
    with client(gateway) as c:
        for data, field in V4_CASES:
            resp = c.post(f"{V4}/generate", files=curl_form(**data))
            assert resp.status_code == 400, (data, resp.text)
            body = resp.json()
            assert set(body) == {"error"} and f"'{field}'" in body["error"], (data, body)
    assert state.requests == []


# -- Ideogram 3.0, the document's examples --

def test_v3_generate_curl_example(gw):
    gateway, state = gw
    with client(gateway) as c:
        resp = c.post(f"{V3}/generate", files=curl_form(prompt=COVER, rendering_speed="QUALITY", num_images="2",
                                                          aspect_ratio="2x1"))
        items = check_items(gateway, resp, 2, "1408x704", prompt=COVER, style_type="AUTO")
    assert fetch_size(items[0]["url"]) == (1408, 704)
    call = last(state)
    assert call.path == "/v1/ideogram-v3/generate" and call.headers["api-key"] == KEY
    assert call.fields == {"prompt": COVER, "num_images": 2, "aspect_ratio": "2x1", "rendering_speed": "QUALITY",
                           "magic_prompt": "AUTO", "style_type": "AUTO"}


def test_images_withheld_by_the_safety_filter_are_listed_as_ideogram_lists_them(gw):
    gateway, state = gw
    state.unsafe_images = 1
    with client(gateway) as c:
        resp = c.post(f"{V3}/generate", files=curl_form(prompt=BIRD, num_images="3", aspect_ratio="1x1"))
    assert resp.status_code == 200, resp.text
    safe = [i for i in resp.json()["data"] if i["is_image_safe"]]
    unsafe = [i for i in resp.json()["data"] if not i["is_image_safe"]]
    assert len(safe) == 2 and all(i["url"].startswith(gateway.base_url + "/files/") for i in safe)
    assert len(unsafe) == 1 and unsafe[0]["url"] is None and unsafe[0]["resolution"] == "1024x1024"
    assert isinstance(unsafe[0]["seed"], int) and unsafe[0]["prompt"]
    assert gateway.log_row(resp.headers["x-request-id"])["images_delivered"] == 2  # paid: the 2 delivered


def test_v3_generate_every_field_and_body_form(gw):
    gateway, state = gw
    refs = [("style_reference_images", ("r1.png", png(16, 16), "image/png")),
            ("style_reference_images", ("r2.jpg", jpeg(16, 16), "image/jpeg"))]
    fields = dict(prompt="a neon sign", rendering_speed="TURBO", num_images="3", aspect_ratio="10x16",
                  magic_prompt="ON", style_type="DESIGN", negative_prompt="blurry", seed="7")
    with gateway.http() as c:  # Authorization: Bearer works too
        resp = c.post(f"{V3}/generate", data=fields, files=refs)
        items = check_items(gateway, resp, 3, "800x1280", seed=7, style_type="DESIGN")
        assert items[0]["prompt"].startswith("a neon sign, rendered")  # the upstream's magic prompt
        call = last(state)
        assert call.content_type.startswith("multipart/form-data")
        assert call.fields == {**fields, "num_images": "3", "seed": "7"}
        assert [u.filename for u in call.files["style_reference_images"]] == ["r1.png", "r2.jpg"]
        # requests' data= without files (url-encoded) and a JSON body, with upstream-only fields
        resp = c.post(f"{V3}/generate", data={"prompt": "x", "resolution": "1280x704", "style_preset": "WATERCOLOR"})
        check_items(gateway, resp, 1, "1280x704")
        assert last(state).fields["resolution"] == "1280x704" and last(state).fields["style_preset"] == "WATERCOLOR"
        resp = c.post(f"{V3}/generate", json={"prompt": "x", "num_images": 2, "seed": 3,
                                             "color_palette": {"name": "PASTEL"}})
        check_items(gateway, resp, 2, "1024x1024", seed=3)
        assert last(state).fields["color_palette"] == {"name": "PASTEL"}


def test_v3_remix_example(gw):
    gateway, state = gw
    data = {"prompt": BIRD, "image_weight": "60", "rendering_speed": "QUALITY", "num_images": 1, "seed": 1,
            "aspect_ratio": "16x9", "magic_prompt": "AUTO", "style_type": "AUTO",
            "negative_prompt": "blurry, bad anatomy, watermark"}
    files = {"image": ("image.jpeg", jpeg(), "image/jpeg"),
             "style_reference_images": ("reference-image.png", png(32, 32), "image/png")}
    with client(gateway) as c:
        resp = c.post(f"{V3}/remix", data=data, files=files)
    items = check_items(gateway, resp, 1, "1312x736", seed=1, prompt=BIRD, style_type="AUTO")
    assert fetch_size(items[0]["url"]) == (1312, 736)
    call = last(state)
    assert call.path == "/v1/ideogram-v3/remix"
    assert call.fields == {"prompt": BIRD, "num_images": "1", "seed": "1", "aspect_ratio": "16x9",
                           "rendering_speed": "QUALITY", "magic_prompt": "AUTO", "style_type": "AUTO",
                           "negative_prompt": "blurry, bad anatomy, watermark", "image_weight": "60"}
    assert call.files["image"][0].data == files["image"][1]
    assert call.files["style_reference_images"][0].data == files["style_reference_images"][1]


def test_v3_edit_example(gw):
    """The example sends a JPEG mask, aspect_ratio and negative_prompt: the last two are in the
    document but not in Ideogram's edit endpoint, so they are checked and not sent."""
    gateway, state = gw
    data = {"prompt": "remove text", "rendering_speed": "DEFAULT", "num_images": 1, "seed": 1,
            "aspect_ratio": "16x9", "magic_prompt": "AUTO", "style_type": "AUTO",
            "negative_prompt": "blurry, bad anatomy, watermark"}
    with client(gateway) as c:
        resp = c.post(f"{V3}/edit", data=data, files={"image": ("image.jpeg", jpeg(64, 48), "image/jpeg"),
                                                       "mask": ("mask.jpg", bw_mask(64, 48, "JPEG"), "image/jpeg")})
        check_items(gateway, resp, 1, "64x48", seed=1, prompt="remove text")
        call = last(state)
        assert call.path == "/v1/ideogram-v3/edit"
        assert call.fields == {"prompt": "remove text", "num_images": "1", "seed": "1", "rendering_speed": "DEFAULT",
                               "magic_prompt": "AUTO", "style_type": "AUTO"}
        mask = call.files["mask"][0].image.convert("L")
        assert call.files["mask"][0].image.format == "PNG"
        assert mask.getpixel((3, 3)) == 0 and mask.getpixel((60, 3)) == 255  # black = edit, as sent
        resp = c.post(f"{V3}/edit", data={"prompt": "x"}, files={"image": ("a.png", png(64, 48), "image/png"),
                                                                 "mask": ("m.png", bw_mask(), "image/png")})
        check_items(gateway, resp, 1, "64x48")


def test_v3_replace_background_example_and_reframe(gw):
    gateway, state = gw
    data = {"prompt": BIRD, "rendering_speed": "QUALITY", "num_images": 1, "seed": 1, "magic_prompt": "AUTO",
            "style_type": "AUTO"}
    with client(gateway) as c:
        resp = c.post(f"{V3}/replace-background", data=data,
                      files={"image": ("image.png", png(80, 40), "image/png"),
                             "style_reference_images": ("reference-image.png", png(16, 16), "image/png")})
        check_items(gateway, resp, 1, "80x40", seed=1)
        call = last(state)
        assert call.path == "/v1/ideogram-v3/replace-background"
        assert call.fields == {"prompt": BIRD, "num_images": "1", "seed": "1", "rendering_speed": "QUALITY",
                               "magic_prompt": "AUTO"}  # style_type: not an input of that endpoint
        assert set(call.files) == {"image", "style_reference_images"}
        resp = c.post(f"{V3}/reframe", data={"resolution": "1536x512", "num_images": 2, "rendering_speed": "TURBO"},
                      files={"image": ("sq.png", png(64, 64), "image/png")})
        items = check_items(gateway, resp, 2, "1536x512", prompt="")
        assert fetch_size(items[1]["url"]) == (1536, 512)
        assert last(state).path == "/v1/ideogram-v3/reframe"
        assert last(state).fields == {"num_images": "2", "resolution": "1536x512", "rendering_speed": "TURBO"}


# -- legacy, the document's examples --

def test_legacy_generate_example(gw):
    gateway, state = gw
    payload = {"image_request": {"prompt": OWL, "negative_prompt": "blurry, bad anatomy, watermark",
                                 "aspect_ratio": "ASPECT_3_2", "model": "V_2", "num_images": 2,
                                 "magic_prompt_option": "AUTO", "style_type": "RENDER_3D"}}
    with client(gateway) as c:
        resp = c.post("/ideogram/generate", json=payload, headers={"Content-Type": "application/json"})
        items = check_items(gateway, resp, 2, "1248x832", prompt=OWL, style_type="RENDER_3D")
        assert fetch_size(items[0]["url"]) == (1248, 832)
        call = last(state)
        assert call.path == "/generate" and call.headers["api-key"] == KEY
        assert call.fields == {"image_request": {**payload["image_request"], "num_images": 2}}
        # the document's spelling SPECT_16_10, a WxH resolution, a string seed (its commented-out line)
        resp = c.post("/ideogram/generate", json={"image_request": {"prompt": "x", "aspect_ratio": "SPECT_16_10",
                                                                    "model": "V_1", "seed": "2"}})
        item = check_items(gateway, resp, 1, "1280x800", seed=2)[0]
        assert "style_type" not in item  # V_1 has none, Ideogram reports none
        assert inner(last(state)) == {"prompt": "x", "num_images": 1, "seed": 2, "aspect_ratio": "ASPECT_16_10",
                                      "model": "V_1", "magic_prompt_option": "AUTO"}
        resp = c.post("/ideogram/generate", json={"image_request": {"prompt": "x", "resolution": "1280x720",
                                                                    "model": "V_2A_TURBO"}})
        check_items(gateway, resp, 1, "1280x720")
        assert inner(last(state))["resolution"] == "RESOLUTION_1280_720"


def test_legacy_remix_example(gw):
    gateway, state = gw
    payload = {"image_request": '''{
        "prompt": "watercolor",
        "aspect_ratio": "ASPECT_10_16",
        "image_weight": 50,
        "magic_prompt_option": "ON",
        "model": "V_2"
    }'''}
    with client(gateway) as c:
        resp = c.post("/ideogram/remix", data=payload, files={"image_file": ("file1.png", png(), "image/png")})
    item = check_items(gateway, resp, 1, "640x1024")[0]
    assert item["prompt"].startswith("watercolor, rendered")  # magic prompt ON
    call = last(state)
    assert call.path == "/remix" and set(call.files) == {"image_file"}
    assert inner(call) == {"prompt": "watercolor", "num_images": 1, "aspect_ratio": "ASPECT_10_16",
                           "magic_prompt_option": "ON", "image_weight": 50, "style_type": "AUTO", "model": "V_2"}


def test_legacy_edit_example(gw):
    """The example posts to /ideogram/eidt, leaves two values blank (not valid Python) and sends
    style_type 16 and the mask as a string: each part that can run is answered as it should be."""
    gateway, state = gw
    files = {"image_file": ("file1.png", png(64, 48), "image/png"), "mask": ("mask.png", bw_mask(), "image/png")}
    with client(gateway) as c:
        resp = c.post("/ideogram/eidt", data={"prompt": '"prompt"', "model": "V_2", "num_images": 1,
                                              "style_type": 16}, files=files)
        assert resp.status_code == 400 and "'style_type'" in resp.json()["error"]
        resp = c.post("/ideogram/eidt", data={"prompt": "x", "model": "V_2"},
                      files={"image_file": files["image_file"], "mask": "open('<file1>', 'rb')"})
        assert resp.status_code == 400 and "'mask'" in resp.json()["error"]
        assert state.api_requests() == []
        for path in ("/ideogram/eidt", "/ideogram/edit"):
            resp = c.post(path, data={"prompt": '"prompt"', "model": "V_2", "num_images": 1,
                                      "magic_prompt_option": "AUTO", "seed": 5, "style_type": "ANIME"}, files=files)
            check_items(gateway, resp, 1, "64x48", seed=5, prompt='"prompt"', style_type="ANIME")
            call = last(state)
            assert call.path == "/edit" and set(call.files) == {"image_file", "mask"}
            assert call.fields == {"prompt": '"prompt"', "num_images": "1", "seed": "5", "model": "V_2",
                                   "magic_prompt_option": "AUTO", "style_type": "ANIME"}


def test_legacy_upscale_and_describe_examples(gw):
    gateway, state = gw
    with client(gateway) as c:
        resp = c.post("/ideogram/upscale", data={"image_request": "{}"},
                      files={"image_file": ("file1.png", png(40, 30), "image/png")})
        item = check_items(gateway, resp, 1, "40x30")[0]
        assert item["upscaled_resolution"] == "80x60" and fetch_size(item["url"]) == (80, 60)
        call = last(state)
        assert call.path == "/upscale" and inner(call) == {"num_images": 1, "magic_prompt_option": "AUTO"}
        resp = c.post("/ideogram/upscale", data={"image_request": orjson.dumps(
            {"prompt": "sharper", "resemblance": 80, "detail": 20, "num_images": 2, "seed": 9}).decode()},
            files={"image_file": ("a.jpg", jpeg(32, 32), "image/jpeg")})
        check_items(gateway, resp, 2, "32x32", upscaled_resolution="64x64", seed=9)
        assert inner(last(state)) == {"prompt": "sharper", "num_images": 2, "seed": 9, "resemblance": 80,
                                      "detail": 20, "magic_prompt_option": "AUTO"}
        resp = c.post("/ideogram/describe", files={"image_file": ("file1.png", png(), "image/png")})
        assert resp.status_code == 200, resp.text
        text = "A flat coloured square with a lighter square in its centre."
        assert resp.json() == {"descriptions": [{"text": text}]}
        call = last(state)
        assert call.path == "/describe" and call.fields == {} and set(call.files) == {"image_file"}
        resp = c.post("/ideogram/describe", data={"describe_model_version": "V_2"},
                      files={"image_file": ("a.webp", _webp(), "image/webp")})
        assert resp.status_code == 200 and last(state).fields == {"describe_model_version": "V_2"}


def _webp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 24), (5, 5, 5)).save(out, "WEBP")
    return out.getvalue()


def test_which_channels_serve(make_gateway, upstream):
    """Only Ideogram channels serve these routes. Upscale and describe name no model: any model
    an Ideogram channel serves does them (here only V3, through the legacy endpoints)."""
    state, base = upstream
    gateway = make_gateway(channels=[{"name": "v3only", "provider": "ideogram", "base_url": base, "api_key": KEY,
                                      "models": ["ideogram-v3"]}])
    with client(gateway) as c:
        check_items(gateway, c.post(f"{V3}/generate", files=curl_form(prompt="x")), 1, "1024x1024")
        resp = c.post("/ideogram/upscale", data={"image_request": '{"magic_prompt_option": "OFF", "detail": 60}'},
                      files={"image_file": ("a.png", png(20, 10), "image/png")})
        check_items(gateway, resp, 1, "20x10", upscaled_resolution="40x20")
        assert last(state).path == "/upscale"
        assert inner(last(state)) == {"num_images": 1, "magic_prompt_option": "OFF", "detail": 60}
        resp = c.post("/ideogram/describe", files={"image_file": ("a.png", png(), "image/png")})
        assert resp.status_code == 200 and resp.json()["descriptions"]
        resp = c.post("/ideogram/generate", json={"image_request": {"prompt": "x"}})  # V_2: not served
        assert resp.status_code == 404 and "'model'" in resp.json()["error"]
    with client(make_gateway()) as c:  # the sandbox only: no Ideogram channel at all
        for path, files in [(f"{V3}/generate", curl_form(prompt="x")),
                            ("/ideogram/describe", {"image_file": ("a.png", png(), "image/png")})]:
            resp = c.post(path, files=files)
            assert resp.status_code == 404 and set(resp.json()) == {"error"}, resp.text


# -- rules: a 400 naming the field, before any upstream call --

def _img(name="image", data=None, ctype="image/png"):
    return (name, ("a.png", data if data is not None else png(64, 64), ctype))


V3_CASES = [  # path, form fields, files, the field the error names
    ("generate", {"prompt": "x", "num_images": 9}, [], "num_images"),
    ("generate", {"prompt": "x", "num_images": 0}, [], "num_images"),
    ("generate", {"prompt": "x", "num_images": "two"}, [], "num_images"),
    ("generate", {"prompt": "x", "seed": -1}, [], "seed"),
    ("generate", {"prompt": "x", "seed": 2147483648}, [], "seed"),
    ("generate", {"prompt": "x", "rendering_speed": "FLASH"}, [], "rendering_speed"),
    ("generate", {"prompt": "x", "aspect_ratio": "16:9"}, [], "aspect_ratio"),
    ("generate", {"prompt": "x", "aspect_ratio": "7x3"}, [], "aspect_ratio"),
    ("generate", {"prompt": "x", "aspect_ratio": "16x9", "resolution": "1312x736"}, [], "resolution"),
    ("generate", {"prompt": "x", "resolution": "1000x1000"}, [], "resolution"),
    ("generate", {"prompt": "x", "magic_prompt": "YES"}, [], "magic_prompt"),
    ("generate", {"prompt": "x", "magic_prompt_option": "ON"}, [], "magic_prompt_option"),
    ("generate", {"prompt": "x", "style_type": "ANIME"}, [], "style_type"),
    ("generate", {"prompt": "x", "style_preset": "NEON"}, [], "style_preset"),
    ("generate", {"prompt": "x", "color_palette": '{"name": "NEON"}'}, [], "color_palette.name"),
    ("generate", {"prompt": "x", "image_weight": 50}, [], "image_weight"),
    ("generate", {"prompt": "x", "foo": "1"}, [], "foo"),
    ("generate", {"prompt": ""}, [], "prompt"),
    ("generate", {"prompt": "x"}, [_img("style_reference_images", gif(), "image/gif")], "style_reference_images"),
    ("generate", {"prompt": "x"}, [_img("image")], "image"),
    ("remix", {"prompt": "x", "image_weight": 0}, [_img()], "image_weight"),
    ("remix", {"prompt": "x", "image_weight": 101}, [_img()], "image_weight"),
    ("remix", {"prompt": "x"}, [], "image"),
    ("remix", {"prompt": "x", "image": "not a file"}, [], "image"),
    ("remix", {"prompt": "x"}, [_img(data=b"not an image")], "image"),
    ("remix", {"prompt": "x"}, [_img(data=gif(), ctype="image/gif")], "image"),
    ("edit", {"prompt": "x"}, [_img()], "mask"),
    ("edit", {"prompt": "x"}, [_img(), _img("mask", bw_mask(64, 64, fill=255))], "mask"),  # all white
    ("edit", {"prompt": "x"}, [_img(), _img("mask", png(64, 64, colour=(128, 128, 128)))], "mask"),  # grey
    ("edit", {"prompt": "x"}, [_img(), _img("mask", bw_mask(32, 32))], "mask"),  # not the image's size
    ("edit", {"prompt": "x", "resolution": "1024x1024"}, [_img(), _img("mask", bw_mask(64, 64))], "resolution"),
    ("reframe", {"resolution": "1536x512"}, [_img(data=png(64, 32))], "image"),  # not square
    ("reframe", {}, [_img()], "resolution"),
    ("reframe", {"resolution": "1536x512", "prompt": "x"}, [_img()], "prompt"),
    ("replace-background", {"prompt": "x", "aspect_ratio": "16x9"}, [_img()], "aspect_ratio"),
    ("replace-background", {"prompt": "x", "negative_prompt": "fog"}, [_img()], "negative_prompt"),
]


def test_v3_rules(gw):
    gateway, state = gw
    with client(gateway) as c:
        for path, data, files, field in V3_CASES:
            resp = c.post(f"{V3}/{path}", data={k: str(v) for k, v in data.items()}, files=files or None)
            assert resp.status_code == 400, (path, data, resp.text)
            body = resp.json()
            assert set(body) == {"error"} and f"'{field}'" in body["error"], (path, data, body)
        resp = c.post(f"{V3}/generate", content=b"prompt=x", headers={"Content-Type": "text/plain"})
        assert resp.status_code == 400 and "error" in resp.json()
    assert state.requests == []


def _legacy_json(**fields):
    return ("generate", {"json": {"image_request": {"prompt": "x", **fields}}})


def _wrapped(path, request, image=True):
    data = {"image_request": request if isinstance(request, str) else orjson.dumps(request).decode()}
    return (path, {"data": data, "files": {"image_file": ("a.png", png(), "image/png")} if image else None})


def _edit_form(mask=None, **fields):
    files = {"image_file": ("a.png", png(64, 64), "image/png"),
             "mask": ("m.png", mask if mask is not None else bw_mask(64, 64), "image/png")}
    return ("edit", {"data": {"prompt": "x", "model": "V_2", **fields}, "files": files})


LEGACY_CASES = [  # (path, httpx arguments), the field the error names
    (_legacy_json(model="V_1", style_type="GENERAL"), "style_type"),
    (_legacy_json(model="V_1_TURBO", style_type="AUTO"), "style_type"),
    (_legacy_json(aspect_ratio="ASPECT_1_1", resolution="RESOLUTION_1024_1024"), "resolution"),
    (_legacy_json(model="V_1", resolution="RESOLUTION_1024_1024"), "resolution"),
    (_legacy_json(resolution="RESOLUTION_1000_1000"), "resolution"),
    (_legacy_json(model="V_2A", negative_prompt="fog"), "negative_prompt"),
    (_legacy_json(model="V_2A_TURBO", color_palette={"name": "PASTEL"}), "color_palette"),
    (_legacy_json(model="V_3"), "model"),
    (_legacy_json(model="V_9"), "model"),
    (_legacy_json(aspect_ratio="16x9"), "aspect_ratio"),
    (_legacy_json(num_images=9), "num_images"),
    (_legacy_json(seed=2147483648), "seed"),
    (_legacy_json(style_type="STYLIZED"), "style_type"),
    (_legacy_json(magic_prompt="ON"), "magic_prompt"),
    (_legacy_json(magic_prompt_option="MAYBE"), "magic_prompt_option"),
    (_legacy_json(image_weight=50), "image_weight"),
    (_legacy_json(prompt=""), "prompt"),
    (("generate", {"json": {"prompt": "x"}}), "prompt"),  # not wrapped
    (("generate", {"json": {}}), "image_request"),
    (("generate", {"json": {"image_request": {"prompt": "x"}, "model": "V_2"}}), "model"),
    (_wrapped("remix", {"prompt": "x", "image_weight": 0}), "image_weight"),
    (_wrapped("remix", {"prompt": "x"}, image=False), "image_file"),
    (_wrapped("remix", "{not json"), "image_request"),
    (_wrapped("remix", {"prompt": "x", "model": "V_1", "style_type": "ANIME"}), "style_type"),
    (_edit_form(model="V_1"), "model"),
    (_edit_form(model="V_2A_TURBO"), "model"),
    (_edit_form(model=None), "model"),
    (_edit_form(mask=bw_mask(32, 32)), "mask"),
    (_edit_form(mask=bw_mask(64, 64, fill=255)), "mask"),
    (_edit_form(mask=png(64, 64, colour=(255, 0, 0))), "mask"),
    (_edit_form(negative_prompt="fog"), "negative_prompt"),  # not an /edit field
    (_edit_form(image_request="{}"), "image_request"),
    (_wrapped("upscale", {"resemblance": 0}), "resemblance"),
    (_wrapped("upscale", {"detail": 101}), "detail"),
    (_wrapped("upscale", {"model": "V_2"}), "model"),
    (_wrapped("upscale", {}, image=False), "image_file"),
    (("describe", {"data": {"describe_model_version": "V_9"},
                   "files": {"image_file": ("a.png", png(), "image/png")}}), "describe_model_version"),
    (("describe", {"files": {"image": ("a.png", png(), "image/png")}}), "image"),
    (("describe", {"data": {"x": "1"}, "files": None}), "x"),
]


def test_legacy_rules(gw):
    gateway, state = gw
    with client(gateway) as c:
        for (path, kwargs), field in LEGACY_CASES:
            if "data" in kwargs:
                kwargs = {**kwargs, "data": {k: v for k, v in kwargs["data"].items() if v is not None}}
            resp = c.post(f"/ideogram/{path}", **kwargs)
            assert resp.status_code == 400, (path, kwargs, resp.text)
            body = resp.json()
            assert set(body) == {"error"} and f"'{field}'" in body["error"], (path, kwargs, body)
        resp = c.post("/ideogram/generate", content=b"{oops", headers={"Content-Type": "application/json"})
        assert resp.status_code == 400 and "error" in resp.json()
    assert state.requests == []


# -- auth and upstream errors in Ideogram's shape --

def test_auth(gw):
    gateway, state = gw
    for headers in ({"Api-Key": "pg-wrong"}, {"Authorization": "Bearer pg-wrong"}, {}):
        with gateway.http(key=None, headers=headers) as c:
            for path in ("/ideogram/generate", f"{V3}/generate", "/ideogram/describe"):
                resp = c.post(path, json={"image_request": {"prompt": "x"}})
                assert resp.status_code == 401, (headers, path, resp.text)
                assert set(resp.json()) == {"error"} and resp.json()["error"]
    limited = gateway.create_key(allowed_models=["V_2"])
    with client(gateway, limited) as c:
        resp = c.post(f"{V3}/generate", json={"prompt": "x"})
        assert resp.status_code == 403 and set(resp.json()) == {"error"}
        assert c.post("/ideogram/generate", json={"image_request": {"prompt": "x"}}).status_code == 200
    assert len(state.api_requests()) == 1


def test_upstream_errors(gw):
    gateway, state = gw
    with client(gateway) as c:
        for status, body, want in [(429, None, 429), (500, None, 502), (400, {"error": "Invalid input."}, 400)]:
            state.fail_next(status, body)
            resp = c.post(f"{V3}/generate", files=curl_form(prompt="x"))
            assert resp.status_code == want, (status, resp.text)
            assert set(resp.json()) == {"error"}
        state.max_in_flight = 0  # the emulator's own in-flight limit: 429 from Ideogram
        resp = c.post("/ideogram/generate", json={"image_request": {"prompt": "x"}})
        assert resp.status_code == 429 and "Too many requests" in resp.json()["error"]
        state.max_in_flight = 10
        resp = c.post("/ideogram/generate", json={"image_request": {"prompt": "a prohibited act"}})
        assert resp.status_code == 422 and resp.json() == {"error": SAFETY_ERROR}
        resp = c.post(f"{V3}/remix", data={"prompt": "a forbidden thing"}, files=[_img()])
        assert resp.status_code == 422 and "safety" in resp.json()["error"]


def test_an_empty_balance_is_a_402_in_ideograms_shape_before_any_upstream_call(gw):
    gateway, state = gw
    gateway.set_price("V3", "0.08")
    _, key = gateway.paying_key("0.05")
    with client(gateway, key) as c:
        resp = c.post(f"{V3}/generate", files=curl_form(prompt=BIRD))
    assert resp.status_code == 402 and set(resp.json()) == {"error"} and "balance" in resp.json()["error"]
    assert state.api_requests() == []


# -- asynchronous and idempotent, as the OpenAI API is --

def _settled(c: httpx.Client, url: str, seconds: float = 15) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while (resp := c.get(url)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.05)
    return resp


def test_respond_async_answers_a_task_and_then_exactly_the_synchronous_answer(gw):
    gateway, state = gw
    state.unsafe_images = 1
    with client(gateway) as c:
        accepted = c.post(f"{V3}/generate", headers={"Prefer": "respond-async"},
                          files=curl_form(prompt=COVER, num_images="3", aspect_ratio="2x1", seed="7"))
        assert accepted.status_code == 202, accepted.text
        task = accepted.json()
        assert task["status"] in ("pending", "running") and task["id"].startswith("task_")
        assert task["polling_url"] == f"{gateway.base_url}/ideogram/tasks/{task['id']}"
        done = _settled(c, task["polling_url"])
        state.unsafe_images = 0
        v4 = c.post(f"{V4}/generate", headers={"Prefer": "respond-async"}, files=curl_form(text_prompt="a cat"))
        v4_done = _settled(c, v4.json()["polling_url"])
        described = c.post("/ideogram/describe", headers={"Prefer": "respond-async"},
                           files={"image_file": ("a.png", png(), "image/png")})
        described_done = _settled(c, described.json()["polling_url"])
        missing = c.get("/ideogram/tasks/task_nothing")
        state.unsafe_images = 1
        synchronous = c.post(f"{V3}/generate", files=curl_form(prompt=COVER, num_images="3", aspect_ratio="2x1",
                                                                 seed="7"))
    body = done.json()
    assert [{k: v for k, v in i.items() if k != "url"} for i in body["data"]] == [
        {k: v for k, v in i.items() if k != "url"} for i in synchronous.json()["data"]]
    assert done.status_code == 200 and set(body) == {"created", "data"}, done.text  # no task fields
    assert datetime.fromisoformat(body["created"]).tzinfo is not None
    safe = [i for i in body["data"] if i["is_image_safe"]]
    assert len(safe) == 2 and [i for i in body["data"] if not i["is_image_safe"]][0]["url"] is None
    for item in safe:  # each image's own facts, kept on the task
        assert item["resolution"] == "1408x704" and item["seed"] == 7 and item["style_type"] == "AUTO"
        assert item["prompt"] == COVER and fetch_size(item["url"]) == (1408, 704)
    assert v4_done.status_code == 200 and v4_done.json()["response_type"] == "url", v4_done.text
    assert described_done.status_code == 200 and set(described_done.json()) == {"descriptions"}
    assert described_done.json()["descriptions"][0]["text"]
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    assert len(state.api_requests()) == 4


def test_a_failed_task_answers_the_synchronous_calls_error(gw):
    gateway, state = gw
    state.fail_next(429)
    with client(gateway) as c:
        accepted = c.post(f"{V3}/generate", headers={"Prefer": "respond-async"}, files=curl_form(prompt=BIRD))
        failed = _settled(c, accepted.json()["polling_url"])
    assert accepted.status_code == 202
    assert failed.status_code == 429 and set(failed.json()) == {"error"}, failed.text


def test_a_repeat_with_the_same_idempotency_key_gets_the_same_images_and_is_charged_once(gw):
    gateway, state = gw
    gateway.set_price("V3", "0.08")
    account_id, key = gateway.paying_key("1")
    form = curl_form(prompt=BIRD, num_images="2")
    with client(gateway, key) as c:
        first = c.post(f"{V3}/generate", files=form, headers={"Idempotency-Key": "order-1"})
        again = c.post(f"{V3}/generate", files=form, headers={"Idempotency-Key": "order-1"})
        other = c.post(f"{V3}/generate", files=curl_form(prompt=OWL), headers={"Idempotency-Key": "order-1"})
    with gateway.http() as admin:
        account = admin.get(f"/admin/accounts/{account_id}").json()
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    def unsigned(answer):  # the same images; a link's signature may be made a second later
        return [{**item, "url": item["url"].split("?")[0]} for item in answer.json()["data"]]

    assert unsigned(first) == unsigned(again) and len(first.json()["data"]) == 2
    assert again.headers["idempotent-replayed"] == "true"
    assert first.headers["x-pixelgate-cost"] == "0.16" and again.headers["x-pixelgate-cost"] == "0"
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]
    assert Decimal(account["spent"]) == Decimal("0.16") and len(state.api_requests()) == 1
