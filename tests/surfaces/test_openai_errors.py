"""Every bad request through the OpenAI surface: a 4xx in OpenAI's error shape naming the
parameter, refused before any upstream call."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import mask_png, png

GEN = "/v1/images/generations"

# (body, param, code) -- each must be refused with 400 before the upstream sees anything
BAD_GENERATIONS = [
    ({"model": "dall-e-3", "prompt": "x", "n": 2}, "n", "invalid_value"),
    ({"model": "dall-e-3", "prompt": "x", "size": "512x512"}, "size", "invalid_value"),
    ({"model": "dall-e-3", "prompt": "x", "size": "1536x1024"}, "size", "invalid_value"),
    ({"model": "dall-e-2", "prompt": "x", "size": "1792x1024"}, "size", "invalid_value"),
    ({"model": "gpt-image-1", "prompt": "x", "size": "256x256"}, "size", "invalid_value"),
    ({"model": "dall-e-3", "prompt": "x" * 4001}, "prompt", "string_above_max_length"),
    ({"model": "dall-e-2", "prompt": "x" * 1001}, "prompt", "string_above_max_length"),
    ({"model": "gpt-image-1", "prompt": "x" * 32001}, "prompt", "string_above_max_length"),
    ({"model": "dall-e-2", "prompt": "x", "n": 11}, "n", "invalid_value"),
    ({"model": "dall-e-2", "prompt": "x", "n": 0}, "n", "invalid_value"),
    ({"model": "dall-e-2", "prompt": ""}, "prompt", "missing_required_parameter"),
    ({"model": "dall-e-2"}, "prompt", "missing_required_parameter"),
    ({"model": "dall-e-3", "prompt": "x", "quality": "ultra"}, "quality", "invalid_value"),
    ({"model": "dall-e-2", "prompt": "x", "quality": "hd"}, "quality", "invalid_value"),
    ({"model": "gpt-image-1", "prompt": "x", "quality": "hd"}, "quality", "invalid_value"),
    ({"model": "dall-e-3", "prompt": "x", "style": "anime"}, "style", "invalid_value"),
    ({"model": "dall-e-2", "prompt": "x", "style": "vivid"}, "style", "unsupported_parameter"),
    ({"model": "gpt-image-1", "prompt": "x", "style": "vivid"}, "style", "unsupported_parameter"),
    ({"model": "dall-e-3", "prompt": "x", "background": "transparent"}, "background", "unsupported_parameter"),
    ({"model": "gpt-image-1", "prompt": "x", "background": "green"}, "background", "invalid_value"),
    ({"model": "gpt-image-1", "prompt": "x", "background": "transparent", "output_format": "jpeg"},
     "background", "invalid_value"),
    ({"model": "gpt-image-1", "prompt": "x", "output_format": "gif"}, "output_format", "invalid_value"),
    ({"model": "dall-e-3", "prompt": "x", "output_format": "png"}, "output_format", "unsupported_parameter"),
    ({"model": "gpt-image-1", "prompt": "x", "output_format": "jpeg", "output_compression": 101},
     "output_compression", "invalid_value"),
    ({"model": "gpt-image-1", "prompt": "x", "output_format": "webp", "output_compression": -1},
     "output_compression", "invalid_value"),
    ({"model": "gpt-image-1", "prompt": "x", "output_compression": 50}, "output_compression", "invalid_value"),
    ({"model": "dall-e-2", "prompt": "x", "output_compression": 50}, "output_compression", "unsupported_parameter"),
    ({"model": "gpt-image-1", "prompt": "x", "moderation": "none"}, "moderation", "invalid_value"),
    ({"model": "dall-e-3", "prompt": "x", "moderation": "low"}, "moderation", "unsupported_parameter"),
    ({"model": "gpt-image-1", "prompt": "x", "input_fidelity": "high"}, "input_fidelity", "unsupported_parameter"),
    ({"model": "dall-e-3", "prompt": "x", "stream": True}, "stream", "unsupported_parameter"),
    ({"model": "gpt-image-1", "prompt": "x", "stream": True, "partial_images": 4}, "partial_images", "invalid_value"),
    ({"model": "dall-e-3", "prompt": "x", "response_format": "png"}, "response_format", "invalid_value"),
    ({"model": "dall-e-3", "prompt": "x", "n": "two"}, "n", "invalid_type"),
    ({"model": "dall-e-3", "prompt": "x", "stream": "yes"}, "stream", "invalid_type"),
    ({"model": "dall-e-3", "prompt": "x", "made_up_field": 1}, "made_up_field", "unknown_parameter"),
    ({"model": "gpt-image-1", "prompt": "x", "watermark": True}, "watermark", "unknown_parameter"),
]


@pytest.mark.parametrize("body,param,code", BAD_GENERATIONS)
def test_bad_generation_is_refused_before_upstream(refusing_openai_gateway, body, param, code):
    gateway, upstream = refusing_openai_gateway
    with gateway.http() as client:
        resp = client.post(GEN, json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("raw,content_type", [(b"{not json", "application/json"), (b"[1, 2]", "application/json"),
                                              (b"", "application/json")])
def test_body_that_is_not_a_json_object(refusing_openai_gateway, raw, content_type):
    gateway, upstream = refusing_openai_gateway
    with gateway.http() as client:
        resp = client.post(GEN, content=raw, headers={"content-type": content_type})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    assert upstream.requests == []


def test_unknown_model_is_404(openai_gateway):
    gateway, _ = openai_gateway
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "dall-e-9", "prompt": "x"})
    assert resp.status_code == 404
    assert resp.json()["error"] == {"message": resp.json()["error"]["message"], "type": "invalid_request_error",
                                    "param": "model", "code": "model_not_found"}


def _edit(client, files, data):
    return client.post("/v1/images/edits", files=files, data=data)


BAD_EDITS = [
    # (model, files, extra data, param)
    ("dall-e-2", {"image": ("a.png", png(64, 32, alpha=True), "image/png")}, {}, "image"),  # not square
    ("dall-e-2", {"image": ("a.jpg", b"\xff\xd8not really", "image/jpeg")}, {}, "image"),  # undecodable
    ("dall-e-2", {"image": ("a.png", png(64, 64), "image/png")}, {}, "image"),  # no alpha and no mask
    ("dall-e-2", {"image": ("a.png", png(64, 64, alpha=True), "image/png"),
                  "mask": ("m.png", mask_png(32, 32), "image/png")}, {}, "mask"),  # mask size differs
    ("dall-e-3", {"image": ("a.png", png(64, 64, alpha=True), "image/png")}, {}, "model"),  # dall-e-3 can't edit
    ("dall-e-2", {}, {}, "image"),  # no image at all
    ("gpt-image-1", {"image": ("a.png", png(), "image/png")}, {"moderation": "low"}, "moderation"),
    ("gpt-image-1-mini", {"image": ("a.png", png(), "image/png")}, {"input_fidelity": "high"}, "input_fidelity"),
    ("dall-e-2", {"image": ("a.png", png(64, 64, alpha=True), "image/png")}, {"size": "1536x1024"}, "size"),
]


@pytest.mark.parametrize("model,files,extra,param", BAD_EDITS)
def test_bad_edit_is_refused_before_upstream(refusing_openai_gateway, model, files, extra, param):
    gateway, upstream = refusing_openai_gateway
    with gateway.http() as client:
        resp = _edit(client, files or None, {"model": model, "prompt": "edit it", **extra})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    assert upstream.requests == []


def test_edit_image_over_4mb_is_refused_for_dalle2(openai_gateway):
    gateway, upstream = openai_gateway
    import io
    import os

    from PIL import Image

    noise = Image.frombytes("RGBA", (1100, 1100), os.urandom(1100 * 1100 * 4))
    buf = io.BytesIO()
    noise.save(buf, "PNG", compress_level=0)
    assert len(buf.getvalue()) > 4 * 1024 * 1024
    with gateway.http() as client:
        resp = _edit(client, {"image": ("big.png", buf.getvalue(), "image/png")}, {"model": "dall-e-2", "prompt": "x"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "image_too_large"
    assert upstream.requests == []


def test_edit_needs_an_image_in_either_form(openai_gateway):
    gateway, upstream = openai_gateway
    with gateway.http() as client:
        resp = client.post("/v1/images/edits", json={"model": "gpt-image-1", "prompt": "x"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "images"
        resp = client.post("/v1/images/edits", content=b"model=dall-e-2", headers={"content-type": "text/plain"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "image"
    assert upstream.requests == []


def test_variation_refuses_gpt_image(openai_gateway):
    gateway, upstream = openai_gateway
    with gateway.http() as client:
        resp = client.post("/v1/images/variations", files={"image": ("a.png", png(), "image/png")},
                           data={"model": "gpt-image-1"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"
    assert upstream.requests == []


# ---- keys ----

def test_missing_key_is_401(gateway):
    with gateway.http(key=None) as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x"})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "missing_api_key"


@pytest.mark.parametrize("header", ["Authorization", "Api-Key"])
def test_unknown_key_is_401_in_either_header(gateway, header):
    value = "Bearer pg-nope" if header == "Authorization" else "pg-nope"
    with gateway.http(key=None, headers={header: value}) as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"


def test_api_key_header_is_accepted(gateway):
    key = gateway.create_key()
    with gateway.http(key=None, headers={"Api-Key": key}) as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "32x32"})
    assert resp.status_code == 200


def test_expired_key_is_401(gateway):
    key = gateway.create_key(expires_at=(datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat())
    with gateway.http(key=key) as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "expired_api_key"


def test_disabled_key_is_401(gateway):
    key = gateway.create_key()
    with gateway.http() as admin:
        key_id = [k for k in admin.get("/admin/keys").json()["data"] if k["prefix"] == key[:8]][0]["id"]
        assert admin.patch(f"/admin/keys/{key_id}", json={"enabled": False}).status_code == 200
    with gateway.http(key=key) as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x"})
    assert resp.status_code == 401


def test_model_outside_allowlist_is_403(gateway):
    key = gateway.create_key(allowed_models=["sandbox-slow"])
    with gateway.http(key=key) as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x"})
        assert resp.status_code == 403
        assert resp.json()["error"]["param"] == "model"
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["sandbox-slow"]


def test_non_admin_key_cannot_use_admin_api(gateway):
    key = gateway.create_key()
    with gateway.http(key=key) as client:
        assert client.get("/admin/keys").status_code == 403
