"""Baidu Qianfan V2 (irag-1.0, ernie-irag-edit, qwen-image, flux.1-schnell, qwen-image-edit) end to
end: the OpenAI surface -> the gateway -> the strict emulator; plus pure build/parse checks."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from pixelgate.config import Settings
from pixelgate.domain import sizes
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.errors import (InvalidRequest, UpstreamContentFiltered, UpstreamRateLimited,
                              UpstreamRejected, UpstreamUnavailable)
from pixelgate.providers.base import UpstreamReply
from pixelgate.providers.qianfan import Qianfan, _fit, error_from_body
from tests.conftest import ADMIN_KEY, database, mask_png, png, run_gateway
from pixelgate.simulators.qianfan import QianfanEmulatorState, create_app
from tests.emulators.server import serve

GEN, EDITS, VARIATIONS = "/v1/images/generations", "/v1/images/edits", "/v1/images/variations"
MODELS = ["irag-1.0", "ernie-irag-edit", "qwen-image", "flux.1-schnell", "qwen-image-edit"]
KEY = QianfanEmulatorState().api_key


def channel(name: str, base: str, priority: int = 0, key: str = KEY, models=MODELS) -> dict:
    return {"name": name, "provider": "qianfan", "base_url": base, "api_key": key, "models": models,
            "priority": priority}


@pytest.fixture(scope="module")
def upstreams():
    a, b = QianfanEmulatorState(), QianfanEmulatorState()
    with serve(create_app(a)) as base_a, serve(create_app(b)) as base_b:
        yield (a, base_a + "/v2"), (b, base_b + "/v2")


@pytest.fixture(scope="module")
def module_gateway(backend, upstreams, tmp_path_factory):
    """One gateway for the module: channel qf-a (preferred) and qf-b (failover), each on its emulator."""
    (a, url_a), (b, url_b) = upstreams
    tmp = tmp_path_factory.mktemp("qianfan")
    with database(backend, tmp) as url:
        settings = Settings(data_dir=tmp, database_url=url, admin_key=ADMIN_KEY, cache_seconds=0, unpriced="free",
                            channels=[channel("qf-a", url_a, 10), channel("qf-b", url_b, 0)])
        with run_gateway(settings) as gw:
            yield gw, a, b


@pytest.fixture
def env(module_gateway):
    gw, a, b = module_gateway
    a.reset()
    b.reset()
    a.refuse_prompts_containing = b.refuse_prompts_containing = "forbidden"
    with gw.http() as client:
        yield gw, client, a, b


def _ok(resp: httpx.Response) -> list[Image.Image]:
    assert resp.status_code == 200, resp.text
    return [Image.open(io.BytesIO(httpx.get(item["url"]).content)) for item in resp.json()["data"]]


def _sent(state: QianfanEmulatorState) -> list[dict]:
    return [r.fields for r in state.image_requests]


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()["error"]


def _decoded(state: QianfanEmulatorState, name: str, index: int = -1) -> Image.Image:
    return Image.open(io.BytesIO(state.image_requests[index].images[name]))


def _files(image: bytes, mask: bytes | None = None) -> dict:
    files = {"image": ("room.png", image, "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return files


# -- the source document's examples --

def test_irag_example_succeeds_without_guidance_or_empty_refer_image(env):
    gw, client, a, _ = env
    body = {"model": "irag-1.0", "prompt": "A beautiful sunset over a calm ocean", "refer_image": "", "n": 1,
            "size": "1024x1024", "guidance": 7.5, "watermark": False}
    [image] = _ok(client.post(GEN, json=body))
    assert image.size == (1024, 1024)
    [sent] = _sent(a)
    assert sent == {"model": "irag-1.0", "prompt": body["prompt"], "n": 1, "size": "1024x1024",
                    "watermark": False}
    assert a.image_requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert a.image_requests[0].path == "/v2/images/generations"


def test_qwen_example_through_qianfan(env):
    _, client, a, _ = env
    body = {"model": "qwen-image", "prompt": "A beautiful sunset over a calm ocean", "refer_image": "", "n": 1,
            "size": "1024x1024", "watermark": False}
    [image] = _ok(client.post(GEN, json=body))
    assert image.size == (1024, 1024)
    assert _sent(a) == [{"model": "qwen-image", "prompt": body["prompt"], "n": 1, "size": "1024x1024",
                         "watermark": False}]


def test_qwen_defaults_watermark_on_and_passes_its_options(env):
    _, client, a, _ = env
    _ok(client.post(GEN, json={"model": "qwen-image", "prompt": "a lake", "size": "1024*576", "seed": 42,
                               "prompt_extend": False, "negative_prompt": "blurry"}))
    assert _sent(a) == [{"model": "qwen-image", "prompt": "a lake", "n": 1, "size": "1024x576", "seed": 42,
                         "watermark": True, "prompt_extend": False, "negative_prompt": "blurry"}]


def test_flux_schnell_options(env):
    _, client, a, _ = env
    [image] = _ok(client.post(GEN, json={"model": "flux.1-schnell", "prompt": "a fox", "size": "768x1024",
                                         "steps": 4, "guidance": 3.5, "seed": 7, "user": "u-1"}))
    assert image.size == (768, 1024)
    assert _sent(a) == [{"model": "flux.1-schnell", "prompt": "a fox", "n": 1, "size": "768x1024", "seed": 7,
                         "steps": 4, "guidance": 3.5, "user": "u-1"}]


# -- sizes --

@pytest.mark.parametrize("size, expected", [
    ("1536x1024", "1536x1024"), ("1024*576", "1024x576"), ("auto", "1024x1024"), (None, "1024x1024"),
    ("16:9", "1360x768"), ("ASPECT_9_16", "768x1360"), ("16x9", "1360x768"), ("1K", "1024x1024"),
    ("2K", "2048x2048"), ("4K", "2048x2048"), ("256x256", "512x512"), ("4096x2048", "2048x1024"),
    ("3000x600", "2048x512"),
])
def test_sizes_are_translated_or_fitted(env, size, expected):
    _, client, a, _ = env
    body = {"model": "irag-1.0", "prompt": "a fox", **({"size": size} if size else {})}
    [image] = _ok(client.post(GEN, json=body))
    assert _sent(a)[0]["size"] == expected
    assert image.size == tuple(map(int, expected.split("x")))


@pytest.mark.parametrize("size", ["5000x500", "8:1", "1:9", "huge"])
def test_impossible_size_is_refused_before_any_upstream_call(env, size):
    _, client, a, b = env
    err = _error(client.post(GEN, json={"model": "qwen-image", "prompt": "a fox", "size": size}), 400)
    assert err["param"] == "size"
    assert a.requests == [] and b.requests == []


# -- n --

def test_irag_fans_out_by_four(env):
    _, client, a, _ = env
    images = _ok(client.post(GEN, json={"model": "irag-1.0", "prompt": "a fox", "n": 6, "size": "512x512"}))
    assert len(images) == 6 and all(img.size == (512, 512) for img in images)
    assert sorted(f["n"] for f in _sent(a)) == [2, 4]


def test_qwen_image_makes_one_per_call(env):
    _, client, a, _ = env
    images = _ok(client.post(GEN, json={"model": "qwen-image", "prompt": "a fox", "n": 3, "seed": 10}))
    assert len(images) == 3
    assert [f["n"] for f in _sent(a)] == [1, 1, 1]
    assert sorted(f["seed"] for f in _sent(a)) == [10, 11, 12]


def test_n_above_ten_is_refused(env):
    _, client, a, _ = env
    assert _error(client.post(GEN, json={"model": "irag-1.0", "prompt": "x", "n": 11}), 400)["param"] == "n"
    assert a.requests == []


# -- vendor options --

@pytest.mark.parametrize("body, param", [
    ({"model": "irag-1.0", "style_preset": "anime"}, "style_preset"),
    ({"model": "irag-1.0", "guidance": -1}, "guidance"),
    ({"model": "irag-1.0", "refer_image": "ftp://example.com/a.png"}, "refer_image"),
    ({"model": "irag-1.0", "seed": 3}, "seed"),
    ({"model": "irag-1.0", "prompt": "x" * 221}, "prompt"),
    ({"model": "qwen-image", "refer_image": "https://example.com/a.png"}, "refer_image"),
    ({"model": "qwen-image", "guidance": 7.5}, "guidance"),
    ({"model": "qwen-image", "seed": -5}, "seed"),
    ({"model": "qwen-image", "watermark": "often"}, "watermark"),
    ({"model": "flux.1-schnell", "steps": 0}, "steps"),
    ({"model": "irag-1.0", "quality": "high"}, "quality"),
])
def test_bad_options_are_refused_without_an_upstream_call(env, body, param):
    _, client, a, b = env
    err = _error(client.post(GEN, json={"prompt": "a fox", **body}), 400)
    assert err["param"] == param, err
    assert a.requests == [] and b.requests == []


def test_irag_refer_image_passes_through_and_image_upload_becomes_one(env):
    _, client, a, _ = env
    ref = "data:image/png;base64," + base64.b64encode(png(300, 200)).decode()
    _ok(client.post(GEN, json={"model": "irag-1.0", "prompt": "same style", "refer_image": ref}))
    assert _sent(a)[0]["refer_image"] == {"mime": "image/png", "width": 300, "height": 200, "bytes": len(png(300, 200))}
    source = png(400, 300, colour=(1, 2, 3))
    _ok(client.post(EDITS, data={"model": "irag-1.0", "prompt": "same style", "size": "1024x768"},
                    files=_files(source)))
    assert a.image_requests[-1].path == "/v2/images/generations"
    assert a.image_requests[-1].images["refer_image"] == source
    err = _error(client.post(EDITS, data={"model": "irag-1.0", "prompt": "x"}, files=_files(png(), mask_png())), 400)
    assert err["param"] == "mask"


# -- ernie-irag-edit --

def test_edit_with_mask_and_prompt_repaints_with_a_white_mask(env):
    _, client, a, _ = env
    [image] = _ok(client.post(EDITS, data={"model": "ernie-irag-edit", "prompt": "an orange cat"},
                              files=_files(png(640, 480), mask_png(640, 480))))
    sent = _sent(a)[0]
    assert sent["feature"] == "repaint" and sent["prompt"] == "an orange cat" and "n" not in sent
    assert a.image_requests[0].path == "/v2/images/edits"
    mask = _decoded(a, "mask").convert("L")
    assert mask.size == (640, 480)
    assert mask.getpixel((10, 240)) == 255 and mask.getpixel((630, 240)) == 0  # transparent half = white = edit
    assert _decoded(a, "image").size == (640, 480)
    assert image.size == (640, 480)  # repaint keeps the input's size


def test_edit_with_mask_and_no_prompt_erases(env):
    _, client, a, _ = env
    [image] = _ok(client.post(EDITS, data={"model": "ernie-irag-edit"},
                              files=_files(png(640, 480), mask_png(640, 480))))
    sent = _sent(a)[0]
    assert sent["feature"] == "erase" and "prompt" not in sent
    assert image.size == (683, 512)  # erase: input aspect, shorter side at least 512


def test_edit_without_mask_and_variations_endpoint_make_variations(env):
    _, client, a, _ = env
    _ok(client.post(EDITS, data={"model": "ernie-irag-edit", "prompt": "in winter"}, files=_files(png(640, 480))))
    [image] = _ok(client.post(VARIATIONS, data={"model": "ernie-irag-edit", "prompt": "in winter"},
                              files=_files(png(640, 480))))
    assert [f["feature"] for f in _sent(a)] == ["variation", "variation"]
    assert all("mask" not in f for f in _sent(a))
    assert image.size == (1184, 880)  # variation: about 1024x1024 in area, sides multiple of 16


def test_explicit_feature_option(env):
    _, client, a, _ = env
    _ok(client.post(EDITS, data={"model": "ernie-irag-edit", "prompt": "remove the lamp", "feature": "erase",
                                 "size": "1024x768"}, files=_files(png(640, 480), mask_png(640, 480))))
    assert _sent(a)[0]["feature"] == "erase" and _sent(a)[0]["size"] == "1024x768"


@pytest.mark.parametrize("data, with_mask, param", [
    ({"feature": "repaint", "prompt": "x"}, False, "mask"),
    ({"feature": "variation", "prompt": "x"}, True, "mask"),
    ({"feature": "blur", "prompt": "x"}, True, "feature"),
    ({}, False, "prompt"),  # no mask, so a variation, which needs a prompt
    ({"seed": "3", "prompt": "x"}, True, "seed"),
])
def test_edit_refusals_happen_before_any_upstream_call(env, data, with_mask, param):
    _, client, a, b = env
    files = _files(png(640, 480), mask_png(640, 480) if with_mask else None)
    err = _error(client.post(EDITS, data={"model": "ernie-irag-edit", **data}, files=files), 400)
    assert err["param"] == param, err
    assert a.requests == [] and b.requests == []


def test_variation_endpoint_needs_a_prompt(env):
    _, client, a, _ = env
    err = _error(client.post(VARIATIONS, data={"model": "ernie-irag-edit"}, files=_files(png(640, 480))), 400)
    assert err["param"] == "prompt" and a.requests == []


def test_edits_fan_out_one_per_call(env):
    _, client, a, _ = env
    images = _ok(client.post(EDITS, data={"model": "ernie-irag-edit", "prompt": "a cat", "n": "3"},
                             files=_files(png(640, 480), mask_png(640, 480))))
    assert len(images) == 3 and len(_sent(a)) == 3


def test_qwen_image_edit(env):
    _, client, a, _ = env
    [image] = _ok(client.post(EDITS, data={"model": "qwen-image-edit", "prompt": "make it night"},
                              files={"image": ("a.jpg", _jpeg(512, 512), "image/jpeg")}))
    assert _sent(a)[0]["image"]["mime"] == "image/jpeg" and _sent(a)[0]["prompt"] == "make it night"
    assert image.size == (512, 512)
    err = _error(client.post(EDITS, data={"model": "qwen-image-edit", "prompt": "x"},
                             files=_files(png(512, 512), mask_png(512, 512))), 400)
    assert err["param"] == "mask"


def _jpeg(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (9, 9, 9)).save(out, "JPEG")
    return out.getvalue()


# -- upstream errors --

def test_moderation_is_content_policy_violation(env):
    _, client, a, b = env
    err = _error(client.post(GEN, json={"model": "irag-1.0", "prompt": "something forbidden"}), 400)
    assert err["code"] == "content_policy_violation"
    assert len(a.requests) == 1 and b.requests == []  # not retried elsewhere


@pytest.mark.parametrize("status, code", [(500, None), (503, None), (429, None), (200, "internal_error")])
def test_failover_when_nothing_was_accepted(env, status, code):
    gw, client, a, b = env
    a.fail_next(status, {"error": {"code": code, "message": "busy", "type": "server_error"}} if code else None)
    resp = client.post(GEN, json={"model": "irag-1.0", "prompt": "a fox"})
    _ok(resp)
    assert len(a.image_requests) == 1 and len(b.image_requests) == 1
    row = gw.log_row(resp.headers["x-request-id"])
    assert [att["channel"] for att in row["attempts"]] == ["qf-a", "qf-b"]


def test_both_channels_down_is_502_and_both_rate_limited_is_429(env):
    _, client, a, b = env
    a.fail_next(500)
    b.fail_next(502)
    assert _error(client.post(GEN, json={"model": "irag-1.0", "prompt": "x"}), 502)["code"] == "upstream_unavailable"
    a.fail_next(429)
    b.fail_next(429)
    assert _error(client.post(GEN, json={"model": "irag-1.0", "prompt": "x"}), 429)["code"] == "upstream_rate_limited"


@pytest.mark.parametrize("body, status, code", [
    ({"error": {"code": "sensitive_content", "message": "sensitive", "type": "invalid_request_error"}}, 400,
     "content_policy_violation"),
    ({"error_code": 336003, "error_msg": "Invalid argument"}, 400, "336003"),
    ({"id": "as-1", "created": 1, "data": [{"b64": "x"}]}, 502, "upstream_bad_response"),
    ({"id": "as-1", "created": 1, "data": []}, 502, "upstream_bad_response"),
])
def test_errors_inside_http_200(env, body, status, code):
    _, client, a, b = env
    a.fail_next(200, body)
    err = _error(client.post(GEN, json={"model": "irag-1.0", "prompt": "x"}), status)
    assert err["code"] == code
    assert b.requests == []


def test_upstream_refusal_of_the_request_is_400_not_retried(env):
    _, client, a, b = env
    a.fail_next(400, {"error": {"code": "characters_too_long", "message": "prompt too long",
                                "type": "invalid_request_error"}})
    err = _error(client.post(GEN, json={"model": "irag-1.0", "prompt": "x"}), 400)
    assert err["code"] == "characters_too_long" and "prompt too long" in err["message"]
    assert b.requests == []


def test_bad_channel_key_fails_over(make_gateway, upstreams):
    (a, url_a), _ = upstreams
    a.reset()
    gw = make_gateway(channels=[channel("wrong-key", url_a, 10, key="bce-v3/ALTAK-nope/00"),
                                channel("right-key", url_a, 0)])
    with gw.http() as client:
        resp = client.post(GEN, json={"model": "irag-1.0", "prompt": "a fox"})
    _ok(resp)
    row = gw.log_row(resp.headers["x-request-id"])
    assert row["attempts"][0]["error"] == "upstream_auth_failed" and row["channel"] == "right-key"


# -- pure build / parse --

def test_fit_rule():
    assert _fit(sizes.parse("1000x700")) == (1000, 700)  # any size inside the range is kept
    assert _fit(sizes.parse("auto")) is None
    assert _fit(sizes.parse("21:9")) == (1568, 672)
    with pytest.raises(InvalidRequest):
        _fit(sizes.parse("10:1"))


def test_error_mapping():
    def err(status, code, message="m"):
        return error_from_body(status, {"error": {"code": code, "message": message, "type": "t"}, "id": "as-1"})
    assert isinstance(err(400, "sensitive_content"), UpstreamContentFiltered)
    assert isinstance(err(400, "x", "输入内容包含敏感信息"), UpstreamContentFiltered)
    assert isinstance(err(429, "tpm_rate_limit_exceeded"), UpstreamRateLimited)
    assert isinstance(err(400, "invalid_model"), UpstreamUnavailable)
    assert err(401, "invalid_iam_token").code == "upstream_auth_failed"
    assert isinstance(err(400, "malformed_json"), UpstreamRejected)
    assert isinstance(err(500, None), UpstreamUnavailable)
    empty = Qianfan().parse_error(UpstreamReply(401, {"X-Bce-Error-Code": "AccessDenied"}, b""))
    assert empty.code == "upstream_auth_failed" and "AccessDenied" in empty.message


def test_build_uses_the_upstream_model_name_and_bearer_key():
    from pixelgate.providers.base import Channel
    ch = Channel("c", "qianfan", None, "k", ("my-irag",), {"my-irag": "irag-1.0"})
    req = ImageRequest(Operation.GENERATE, "my-irag", prompt="p", extras={"guidance": 7.5})
    call = Qianfan().build(req, ch.upstream_model(req.model), ch)
    assert call.url == "https://qianfan.baidubce.com/v2/images/generations"
    assert call.headers == {"Authorization": "Bearer k"}
    assert call.json == {"model": "irag-1.0", "prompt": "p", "n": 1, "size": "1024x1024"}
