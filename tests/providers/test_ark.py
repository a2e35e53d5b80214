"""Volcengine Ark (Doubao Seedream): the gateway end to end against the strict Ark emulator."""

from __future__ import annotations

import base64
import io
from datetime import date, timedelta

import httpx
import orjson
import pytest
from PIL import Image

from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.errors import UpstreamBadResponse, UpstreamContentFiltered, UpstreamError
from pixelgate.providers.ark import Ark
from pixelgate.providers.base import UpstreamReply
from tests.conftest import LEGACY_DAY, b64_images, mask_png, openai_error, png
from pixelgate.simulators.ark import ArkEmulatorState, create_app
from tests.emulators.server import emulated, serve

GEN, EDIT = "/v1/images/generations", "/v1/images/edits"
PUBLIC = {"doubao-seedream-4-0": "doubao-seedream-4-0-250828", "doubao-seedream-4-5": "doubao-seedream-4-5-251128",
          "doubao-seedream-5.0-lite": "doubao-seedream-5-0-260128"}
VENDOR = ["doubao-seedream-4-0-250828", "doubao-seedream-4-5-251128", "doubao-seedream-5-0-260128",
          "doubao-seedream-5-0-lite-260128", "doubao-seedream-3-0-t2i-250415", "doubao-seededit-3-0-i2i-250628"]
SOURCE_EXAMPLE = {  # the first source document's Doubao example, its `input` as top-level fields
    "prompt": "星际穿越,黑洞,黑洞里冲出一辆快支离破碎的复古列车,抢视觉冲击力,电影大片,末日既视感,动感,对比色,oc渲染,"
              "光线追踪,动态模糊,景深,超现实主义,深蓝,画面通过细腻的丰富的色彩层次塑造主体与场景,质感真实,暗黑风背景的光影效果"
              "营造出氛围,整体兼具艺术幻想感,夸张的广角透视效果,耀光,反 射,极致的光影,强引力,吞噬",
    "size": "2K", "sequential_image_generation": "disabled", "stream": False, "response_format": "url",
    "watermark": True}


def ark_channel(base: str, name: str = "ark", **fields) -> dict:
    return {"name": name, "provider": "ark", "base_url": base, "api_key": "ark-emulator-key",
            "models": [*PUBLIC, *VENDOR], **fields}


@pytest.fixture
def ark():
    with emulated(create_app, ArkEmulatorState(today=LEGACY_DAY), "/api/v3") as up:
        yield up


@pytest.fixture
def gw(make_gateway, ark):
    state, base = ark
    return make_gateway(channels=[ark_channel(base)]), state


@pytest.fixture(scope="module")
def shared_gw(make_module_gateway):
    """One gateway and emulator for a module's many cases that each make one call or none."""
    with emulated(create_app, ArkEmulatorState(), "/api/v3") as (state, base):
        yield make_module_gateway(channels=[ark_channel(base)]), state


@pytest.fixture
def quiet_gw(shared_gw):
    """shared_gw with the emulator's log emptied: what it holds, this test sent."""
    shared_gw[1].requests.clear()
    return shared_gw


def _gen(client, model="doubao-seedream-4-0", **fields) -> httpx.Response:
    return client.post(GEN, json={"model": model, "prompt": "a red fox", "response_format": "b64_json", **fields})


def _edit(client, images, model="doubao-seedream-4-0", **fields) -> httpx.Response:
    files = [("image[]", (f"i{i}.{fmt}", data, f"image/{fmt}")) for i, (data, fmt) in enumerate(images)]
    return client.post(EDIT, data={"model": model, "prompt": "put them on a roller coaster",
                                   "response_format": "b64_json", **fields}, files=files)


def _jpeg(w=64, h=48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


# -- catalog and the source document --

def test_every_generating_model_answers_with_its_vendor_id(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        for model in [*PUBLIC, *VENDOR[:-1]]:
            (image,) = b64_images(_gen(client, model, size="2K"))
            assert image.format == "JPEG" and image.size == (2048, 2048), model
            sent = upstream.requests[-1].body
            assert sent["model"] == PUBLIC.get(model, model)
            assert sent["size"] == ("2048x2048" if "3-0" in model else "2K")  # 3.0 has no keywords
            assert sent["watermark"] is True and "n" not in sent


def test_source_document_example_succeeds(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "doubao-seedream-4-0", **SOURCE_EXAMPLE})
        assert resp.status_code == 200, resp.text
        (item,) = resp.json()["data"]
        fetched = client.get(item["url"])
    assert fetched.status_code == 200 and Image.open(io.BytesIO(fetched.content)).size == (2048, 2048)
    (sent,) = [r.body for r in upstream.requests]
    assert sent == {"model": "doubao-seedream-4-0-250828", "prompt": SOURCE_EXAMPLE["prompt"], "size": "2K",
                    "response_format": "b64_json", "watermark": True, "sequential_image_generation": "disabled"}


def test_source_document_example_through_its_predictions_api(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        resp = client.post("/models/doubao/doubao-seedream-4-0/predictions", json={"input": SOURCE_EXAMPLE})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "succeeded" and len(resp.json()["output"]) == 1
    sent = upstream.requests[-1].body
    assert sent["size"] == "2K" and sent["watermark"] is True and "stream" not in sent


# -- sizes --

SIZES = [  # model, size asked, size sent upstream (None: left out), image made
    ("doubao-seedream-4-0", "1024x1024", "1024x1024", (1024, 1024)),
    ("doubao-seedream-4-0", "1024*1024", "1024x1024", (1024, 1024)),
    ("doubao-seedream-4-0", "16:9", "2560x1440", (2560, 1440)),
    ("doubao-seedream-4-0", "16x9", "2560x1440", (2560, 1440)),
    ("doubao-seedream-4-0", "ASPECT_2_1", "2896x1448", (2896, 1448)),
    ("doubao-seedream-4-0", "1K", "1K", (1024, 1024)),
    ("doubao-seedream-4-0", "640x480", "1109x832", (1109, 832)),  # too few pixels: scaled up
    ("doubao-seedream-4-0", "auto", None, (2048, 2048)),
    ("doubao-seedream-4-5", "16:9", "2848x1600", (2848, 1600)),
    ("doubao-seedream-4-5", "1024x1024", "1920x1920", (1920, 1920)),
    ("doubao-seedream-4-5", "4K", "4K", (4096, 4096)),
    ("doubao-seedream-5.0-lite", "1K", "2K", (2048, 2048)),
    ("doubao-seedream-5.0-lite", "4K", "3K", (3072, 3072)),
    ("doubao-seedream-5.0-lite", "4096x4096", "3072x3072", (3072, 3072)),
    ("doubao-seedream-3-0-t2i-250415", "16:9", "1280x720", (1280, 720)),
    ("doubao-seedream-3-0-t2i-250415", "4K", "2048x2048", (2048, 2048)),
]


def test_sizes_are_translated_to_the_vendor_vocabulary(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        for model, asked, sent, made in SIZES:
            (image,) = b64_images(_gen(client, model, size=asked))
            assert upstream.requests[-1].body.get("size") == sent, (model, asked)
            assert image.size == made, (model, asked)


@pytest.mark.parametrize("model,size", [("doubao-seedream-4-5", "1K"), ("doubao-seedream-4-0", "4096x128"),
                                        ("doubao-seedream-3-0-t2i-250415", "4096x512"),
                                        ("doubao-seedream-4-0", "huge")])
def test_impossible_sizes_are_refused_before_any_upstream_call(gw, model, size):
    gateway, upstream = gw
    with gateway.http() as client:
        err = openai_error(_gen(client, model, size=size), 400, param="size")
    assert upstream.requests == []
    if model.endswith("4-5"):
        assert "2K, 4K" in err["message"]


# -- n and group generation --

def test_n_fans_out_one_image_per_call(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        images = b64_images(_gen(client, n=3, seed=5, size="1K"))
    assert len(images) == 3 and len({img.tobytes() for img in images}) == 3
    assert sorted(r.body["seed"] for r in upstream.requests) == [5, 6, 7]
    assert all("sequential_image_generation_options" not in r.body for r in upstream.requests)


def test_sequential_group_comes_from_one_call_and_may_be_short(gw):
    gateway, upstream = gw
    group = {"sequential_image_generation": "auto", "sequential_image_generation_options": {"max_images": 4}}
    with gateway.http() as client:
        assert len(b64_images(_gen(client, size="1K", **group))) == 4
        upstream.group_size = 2  # the model decides to make fewer than max_images
        assert len(b64_images(_gen(client, size="1K", **group))) == 2
    assert len(upstream.requests) == 2
    assert upstream.requests[0].body["sequential_image_generation_options"] == {"max_images": 4}


def test_reference_plus_generated_images_at_most_15(gw):
    gateway, upstream = gw
    refs = [(png(), "png"), (png(), "png")]
    with gateway.http() as client:
        openai_error(_edit(client, refs, size="1K", sequential_image_generation="auto",
                           sequential_image_generation_options='{"max_images": 14}'),
                     400, param="sequential_image_generation_options.max_images")
        assert upstream.requests == []
        upstream.group_size = 3
        assert len(b64_images(_edit(client, refs, size="1K", sequential_image_generation="auto"))) == 3
    assert upstream.requests[0].body["sequential_image_generation_options"] == {"max_images": 13}


# -- vendor options --

@pytest.mark.parametrize("fields,param", [
    ({"safety_tolerance": 2}, "safety_tolerance"),
    ({"sequential_image_generation": "on"}, "sequential_image_generation"),
    ({"sequential_image_generation_options": {"max_images": 16}}, "sequential_image_generation_options.max_images"),
    ({"sequential_image_generation_options": {"max_images": 0}}, "sequential_image_generation_options.max_images"),
    ({"seed": 2147483648}, "seed"),
    ({"seed": -2}, "seed"),
    ({"guidance": 11}, "guidance"),
    ({"watermark": "sometimes"}, "watermark"),
    ({"image": "ftp://example.com/a.png"}, "image"),
    ({"quality": "ultra"}, "quality"),
    ({"optimize_prompt_options": {"mode": "fast"}}, "optimize_prompt_options"),
    ({"tools": [{"type": "web_search"}]}, "tools"),
    ({"model": "doubao-seedream-3-0-t2i-250415", "sequential_image_generation": "auto"},
     "sequential_image_generation"),
    ({"stream": True, "n": 2}, "n"),
])
def test_options_are_validated_before_any_upstream_call(quiet_gw, fields, param):
    gateway, upstream = quiet_gw
    with gateway.http() as client:
        openai_error(_gen(client, **fields), 400, param=param)
    assert upstream.requests == []


def test_options_pass_through_with_documented_defaults(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        b64_images(_gen(client, size="1K", quality="high"))
        b64_images(_gen(client, size="1K", watermark=False, seed=-1, guidance=7.5))
        b64_images(_gen(client, "doubao-seedream-3-0-t2i-250415", size="1024x1024", guidance=7.5, seed=42))
        b64_images(_gen(client, "doubao-seedream-5.0-lite", size="2K", tools=[{"type": "web_search"}]))
    first, second, t2i, lite = (r.body for r in upstream.requests)
    assert first["watermark"] is True and "quality" not in first and "seed" not in first
    assert second["watermark"] is False and second["seed"] == -1 and "guidance_scale" not in second
    assert t2i["guidance_scale"] == 7.5 and t2i["seed"] == 42
    assert lite["tools"] == [{"type": "web_search"}]


def test_output_format_native_on_5_and_converted_on_4(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        (lite,) = b64_images(_gen(client, "doubao-seedream-5.0-lite", size="2K", output_format="png"))
        (four,) = b64_images(_gen(client, size="1K", output_format="png"))
    assert lite.format == "PNG" and upstream.requests[0].body["output_format"] == "png"
    assert four.format == "PNG" and "output_format" not in upstream.requests[1].body


# -- edits and reference images --

def test_edit_sends_reference_images_as_data_urls(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        b64_images(_edit(client, [(png(40, 30), "png")], size="1K"))
        b64_images(_edit(client, [(png(), "png"), (_jpeg(), "jpeg")], size="2K", watermark="false"))
    one, two = (r.body for r in upstream.requests)
    assert isinstance(one["image"], str) and one["image"].startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(one["image"].split(",", 1)[1]))).size == (40, 30)
    assert [ref.split(";")[0] for ref in two["image"]] == ["data:image/png", "data:image/jpeg"]
    assert two["watermark"] is False


def test_edit_limits(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        openai_error(client.post(EDIT, data={"model": "doubao-seedream-4-0", "prompt": "blue"},
                                 files={"image": ("a.png", png(), "image/png"),
                                        "mask": ("m.png", mask_png(), "image/png")}),
                     400, param="mask")
        openai_error(_edit(client, [(png(), "png")] * 15), 400, param="image")
        openai_error(_gen(client, "doubao-seededit-3-0-i2i-250628"), 400, param="model")
    assert upstream.requests == []


def test_seededit_follows_its_input(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        (image,) = b64_images(_edit(client, [(png(320, 200), "png")], "doubao-seededit-3-0-i2i-250628", guidance=5.5))
        openai_error(_edit(client, [(png(), "png")], "doubao-seededit-3-0-i2i-250628", size="1024x1024"),
                     400, param="size")
    assert image.size == (320, 200)
    (sent,) = [r.body for r in upstream.requests]
    assert sent["size"] == "adaptive" and sent["guidance_scale"] == 5.5 and isinstance(sent["image"], str)


def test_json_reference_images_pass_through(gw):
    gateway, upstream = gw
    data_url = "data:image/PNG;base64," + base64.b64encode(png()).decode()
    with gateway.http() as client:
        b64_images(_gen(client, size="1K", image=["https://example.com/girl.png", data_url]))
    assert upstream.requests[0].body["image"] == ["https://example.com/girl.png", data_url.replace("PNG", "png", 1)]


# -- errors --

def test_moderation_is_a_content_policy_violation(gw):
    gateway, _ = gw
    with gateway.http() as client:
        openai_error(_gen(client, prompt="something forbidden"), 400, code="content_policy_violation")


def test_upstream_errors_map_to_gateway_classes(gw):
    gateway, upstream = gw
    with gateway.http() as client:
        upstream.fail_next(500)
        openai_error(_gen(client), 502, code="upstream_unavailable")
        upstream.fail_next(429)
        openai_error(_gen(client), 429, code="upstream_rate_limited")
        upstream.fail_next(404)  # model not activated on this account: the channel's fault
        openai_error(_gen(client), 502, code="upstream_unavailable")
        upstream.fail_next(400, {"error": {"code": "InvalidParameter", "message": "The parameter `image` is not valid.",
                                           "param": "image", "type": "BadRequest"}})
        openai_error(_gen(client), 400, code="upstream_rejected", param="image")
        upstream.api_key = "rotated"
        openai_error(_gen(client), 502, code="upstream_auth_failed")


def test_failover_to_the_next_channel_on_5xx(make_gateway, ark):
    first, base = ark
    second = ArkEmulatorState(today=LEGACY_DAY)
    with serve(create_app(second)) as other:
        gateway = make_gateway(channels=[ark_channel(base, "first", priority=10),
                                         ark_channel(other + "/api/v3", "second")])
        first.fail_next(503)
        with gateway.http() as client:
            resp = _gen(client, size="1K")
            assert len(b64_images(resp)) == 1
            row = gateway.log_row(resp.headers["x-request-id"])
    assert len(first.requests) == 1 and len(second.requests) == 1
    assert [a["channel"] for a in row["attempts"]] == ["first", "second"]


def test_errors_inside_successful_replies(gw):
    gateway, upstream = gw
    group = {"sequential_image_generation": "auto", "sequential_image_generation_options": {"max_images": 3}}
    with gateway.http() as client:
        upstream.withhold = {1}
        resp = _gen(client, size="1K", **group)
        assert len(b64_images(resp)) == 2 and "1 of 3" in resp.json()["partial"]
        upstream.withhold = {0}
        openai_error(_gen(client, size="1K"), 400, code="content_policy_violation")
        upstream.withhold = set()
        upstream.fail_next(200, {"error": {"code": "InternalServiceError", "message": "boom"}})
        openai_error(_gen(client, size="1K"), 502, code="upstream_unavailable")
        upstream.fail_next(200, {"model": "x", "created": 1, "data": "nothing"})
        openai_error(_gen(client, size="1K"), 502, code="upstream_bad_response")


# -- streaming --

def _events(client, body) -> list[dict]:
    with client.stream("POST", GEN, json=body) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode()
    return [orjson.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def test_stream_delivers_each_finished_image(gw):
    gateway, upstream = gw
    upstream.withhold = {1}
    with gateway.http() as client:
        events = _events(client, {"model": "doubao-seedream-4-5", "prompt": "a comic strip", "stream": True,
                                  "size": "2K", "sequential_image_generation": "auto",
                                  "sequential_image_generation_options": {"max_images": 3}})
    assert [e["type"] for e in events] == ["image_generation.completed"] * 2
    assert all(Image.open(io.BytesIO(base64.b64decode(e["b64_json"]))).size == (2048, 2048) for e in events)
    assert upstream.requests[0].body["stream"] is True


def test_stream_of_one_refused_image_ends_in_an_error_event(gw):
    gateway, upstream = gw
    upstream.withhold = {0}
    with gateway.http() as client:
        events = _events(client, {"model": "doubao-seedream-4-0", "prompt": "a fox", "stream": True, "size": "1K"})
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "content_policy_violation"


# -- the provider's parsers on their own --

def _reply(body, status=200) -> UpstreamReply:
    return UpstreamReply(status, {}, orjson.dumps(body))


def test_parse_takes_urls_and_drops_refused_items():
    req = ImageRequest(Operation.GENERATE, "doubao-seedream-4-0", prompt="x")
    done = Ark().parse(req, _reply({"data": [{"url": "https://tos.example/a.jpeg", "size": "2048x2048"},
                                            {"error": {"code": "OutputImageSensitiveContentDetected", "message": "m"}}]}))
    assert [img.url for img in done.images] == ["https://tos.example/a.jpeg"]
    with pytest.raises(UpstreamBadResponse):
        Ark().parse(req, _reply({"data": [{"size": "2048x2048"}]}))


def test_stream_events_of_a_group():
    ark, req = Ark(), ImageRequest(Operation.GENERATE, "doubao-seedream-4-0", prompt="x",
                                   extras={"sequential_image_generation": "auto"})
    ok = ark.parse_stream_event(req, "image_generation.partial_succeeded",
                                {"type": "image_generation.partial_succeeded", "image_index": 0, "url": "https://u"})
    assert ok.images[0].url == "https://u"
    failed = {"type": "image_generation.partial_failed", "error": {"code": "OutputImageSensitiveContentDetected"}}
    assert ark.parse_stream_event(req, failed["type"], failed) is None
    with pytest.raises(UpstreamContentFiltered):
        ark.parse_stream_event(ImageRequest(Operation.GENERATE, "doubao-seedream-4-0"), failed["type"], failed)
    with pytest.raises(UpstreamError) as exc:
        ark.parse_stream_event(req, "image_generation.completed",
                               {"type": "image_generation.completed", "usage": {"generated_images": 0}})
    assert exc.value.code == "upstream_no_images"


# -- Seedream 5.0 Pro --

def test_seedream_5_pro_makes_one_image_a_call_and_refuses_groups_before_the_vendor(make_gateway, ark):
    state, base = ark
    gateway = make_gateway(channels=[ark_channel(base, models=["doubao-seedream-5-0-pro-260628"])])
    model = "doubao-seedream-5-0-pro-260628"
    with gateway.http() as client:
        made = _gen(client, model=model, size="4K", n=2, output_format="png")
        sent = [r.body for r in state.requests if r.path.endswith("/images/generations")]
        group = _gen(client, model=model, sequential_image_generation="disabled")
        streamed = client.post(GEN, json={"model": model, "prompt": "x", "stream": True})
    assert made.status_code == 200, made.text
    assert len(made.json()["data"]) == 2 and len(sent) == 2  # one image per call, fanned out
    assert all(b["size"] == "2K" and b["output_format"] == "png" and "stream" not in b
               and "sequential_image_generation" not in b for b in sent)
    assert openai_error(group, 400, param="sequential_image_generation")
    assert streamed.status_code == 400
    assert len([r for r in state.requests if r.path.endswith("/images/generations")]) == 2


# -- Seedream 5.0 Flash --

FLASH = "doubao-seedream-5-0-flash-260915"


def _direct(state: ArkEmulatorState | None = None):
    """The emulator in-process, for what the gateway would never send."""
    from starlette.testclient import TestClient
    return TestClient(create_app(state or ArkEmulatorState(today=LEGACY_DAY)), base_url="http://ark.test")


def _post(client, body: dict):
    return client.post("/api/v3/images/generations", json={"prompt": "a red fox", **body},
                       headers={"Authorization": "Bearer ark-emulator-key"})


def test_seedream_5_flash_has_pro_rules_before_the_vendor(make_gateway, ark):
    state, base = ark
    gateway = make_gateway(channels=[ark_channel(base, models=[FLASH])])
    refs = [f"data:image/png;base64,{base64.b64encode(png(32, 32)).decode()}"] * 11
    with gateway.http() as client:
        made = _gen(client, model=FLASH, size="1K", n=2, output_format="png")
        sent = [r.body for r in state.requests if r.path.endswith("/images/generations")]
        group = _gen(client, model=FLASH, sequential_image_generation="auto")
        too_many = _gen(client, model=FLASH, image=refs)
        too_big = _gen(client, model=FLASH, size="2560x1920")
    images = b64_images(made)
    assert len(images) == 2 and images[0].size == (1024, 1024) and images[0].format == "PNG"
    assert [b["model"] for b in sent] == [FLASH] * 2 and all(b["size"] == "1K" for b in sent)
    assert openai_error(group, 400, param="sequential_image_generation")
    assert openai_error(too_many, 400, param="image")
    assert too_big.status_code == 200  # scaled into 2048x2048 pixels
    assert state.requests[-1].body["size"] == "2364x1773"


@pytest.mark.parametrize("body,ok", [
    ({"size": "1.5K"}, True),
    ({"size": "1K", "output_format": "png"}, True),
    ({"size": "4K"}, False),
    ({"size": "2560x1920"}, False),
    ({"stream": True}, False),
    ({"sequential_image_generation": "disabled"}, False),
    ({"tools": [{"type": "web_search"}]}, False),
    ({"optimize_prompt_options": {"mode": "fast"}}, False),
])
def test_emulator_takes_seedream_5_flash_as_reported(body, ok):
    with _direct() as client:
        resp = _post(client, {"model": FLASH, **body})
    assert (resp.status_code == 200) is ok, resp.text
    if not ok:
        assert resp.json()["error"]["code"] == "InvalidParameter"


# -- shut-down models --

@pytest.mark.parametrize("model,last_day", [
    ("doubao-seedream-3-0-t2i-250415", date(2026, 5, 12)),
    ("doubao-seededit-3-0-i2i-250628", date(2026, 8, 4)),
    ("doubao-seedream-5-0-260128", date(2026, 11, 23)),
    ("doubao-seedream-5-0-lite-260128", date(2026, 11, 23)),
])
def test_emulator_refuses_a_shut_down_model_from_its_date(model, last_day):
    body = {"model": model, "size": "adaptive" if "seededit" in model else "2048x2048"}
    if "seededit" in model:
        body["image"] = f"data:image/png;base64,{base64.b64encode(png(32, 32)).decode()}"
    with _direct(ArkEmulatorState(today=last_day)) as client:
        served = _post(client, body)
    with _direct(ArkEmulatorState(today=last_day + timedelta(days=1))) as client:
        gone = _post(client, body)
    assert served.status_code == 200, served.text
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "InvalidEndpointOrModel.NotFound"


def test_a_retired_id_sent_as_it_is_fails_upstream_and_its_successor_serves(make_gateway):
    with serve(create_app(ArkEmulatorState())) as root:  # today's calendar
        base = root + "/api/v3"
        upstream = make_gateway(channels=[ark_channel(base)])  # retired_models "*": "upstream"
        successor = make_gateway(channels=[ark_channel(base, models=["doubao-seedream-5-0-pro-260628", *VENDOR])],
                                 retired_models={"*": "successor"})
        with upstream.http() as client:
            refused = _gen(client, "doubao-seedream-5-0-260128")
        with successor.http() as client:
            served = _gen(client, "doubao-seedream-5-0-260128")
    assert refused.status_code >= 500 and "does not exist" in refused.text, refused.text
    assert served.status_code == 200, served.text
