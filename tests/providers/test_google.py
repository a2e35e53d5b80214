"""google: Imagen 4 (:predict) and the Gemini image models (:generateContent) end to end through
the gateway's OpenAI surface, against the strict emulator in pixelgate/simulators/google.py."""

from __future__ import annotations

import io
import socket

import pytest
from PIL import Image

from pixelgate.domain.images import read_image
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.errors import (InvalidRequest, UpstreamContentFiltered, UpstreamRateLimited,
                              UpstreamRejected, UpstreamUnavailable)
from pixelgate.providers.base import Channel, UpstreamReply
from pixelgate.providers.google import Google
from tests.conftest import LEGACY_DAY, b64_images, mask_png, openai_error, png
from pixelgate.simulators.google import GoogleEmulatorState, create_app, error_body
from tests.emulators.server import emulated, serve

GEN, EDIT = "/v1/images/generations", "/v1/images/edits"
KEY = "AIza-emulator-key"
IMAGEN = ["imagen-4.0-fast-generate-001", "imagen-4.0-generate-001", "imagen-4.0-ultra-generate-001",
          "imagen-3.0-generate-002"]
GEMINI = ["gemini-2.5-flash-image", "gemini-2.5-flash-image-preview", "gemini-3-pro-image-preview",
          "gemini-3.1-flash-image-preview", "gemini-3-pro-image", "gemini-3.1-flash-image",
          "gemini-3.1-flash-lite-image", "gemini-nano-banana-2.1"]
ALIASES = {"nano-banana": "gemini-2.5-flash-image", "nano-banana-pro": "gemini-3-pro-image",
           "nano-banana-2": "gemini-3.1-flash-image"}
# The first source document's Imagen example, its `input` sent as top-level fields.
SOURCE_EXAMPLE = {"model": "imagen-4.0-fast-generate-001", "numberOfImages": 1,
                  "prompt": "A deer drinking in the lake, Sakura petals falling, green and clean water, japanese "
                            "temple, dappled sunlight, cinematic lighting, expansive view, peace"}


def google_channel(base_url: str, name: str = "google", **fields) -> dict:
    return {"name": name, "provider": "google", "base_url": base_url, "api_key": KEY,
            "models": IMAGEN + GEMINI + list(ALIASES), **fields}


@pytest.fixture
def upstream():
    with emulated(create_app, GoogleEmulatorState(today=LEGACY_DAY), "/v1beta") as up:
        yield up


@pytest.fixture
def google(make_gateway, upstream):
    state, base = upstream
    return make_gateway(channels=[google_channel(base)]), state


@pytest.fixture(scope="module")
def shared_gw(make_module_gateway):
    """One gateway and emulator for a module's many cases that each make one call or none."""
    with emulated(create_app, GoogleEmulatorState(today=LEGACY_DAY), "/v1beta") as (state, base):
        yield make_module_gateway(channels=[google_channel(base)]), state


@pytest.fixture
def quiet_gw(shared_gw):
    """shared_gw with the emulator's log emptied: what it holds, this test sent."""
    shared_gw[1].requests.clear()
    return shared_gw


def _gen(client, **body):
    return client.post(GEN, json={"prompt": "a lighthouse at dawn", "response_format": "b64_json", **body})


def test_every_catalog_model_generates(google):
    gateway, state = google
    with gateway.http() as client:
        for model in IMAGEN + GEMINI + list(ALIASES):
            images = b64_images(_gen(client, model=model))
            assert len(images) == 1 and images[0].size == (1024, 1024), model
            sent = state.requests[-1]
            assert sent.headers["x-goog-api-key"] == KEY
            assert sent.model == ALIASES.get(model, model)
            if model in IMAGEN:
                assert sent.action == "predict"
                # sampleCount defaults to 4 upstream: one image means sending 1
                assert sent.body == {"instances": [{"prompt": "a lighthouse at dawn"}],
                                     "parameters": {"sampleCount": 1, "includeRaiReason": True}}
            else:
                assert sent.action == "generateContent"
                assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "a lighthouse at dawn"}]}]
                assert "IMAGE" in sent.body["generationConfig"]["responseModalities"]


def test_source_document_example_succeeds(google):
    gateway, state = google
    with gateway.http() as client:
        images = b64_images(client.post(GEN, json={**SOURCE_EXAMPLE, "response_format": "b64_json"}))
    assert len(images) == 1
    params = state.requests[-1].body["parameters"]
    assert params["sampleCount"] == 1 and "numberOfImages" not in params and "sampleImageSize" not in params


def test_number_of_images_sets_n_and_must_agree_with_it(google):
    gateway, state = google
    with gateway.http() as client:
        assert len(b64_images(_gen(client, model="imagen-4.0-generate-001", numberOfImages=3))) == 3
        assert state.requests[-1].body["parameters"]["sampleCount"] == 3
        assert len(b64_images(_gen(client, model="imagen-4.0-generate-001", numberOfImages=2, n=2))) == 2
        state.requests.clear()
        openai_error(_gen(client, model="imagen-4.0-generate-001", numberOfImages=3, n=2), 400, param="numberOfImages")
        openai_error(_gen(client, model="imagen-4.0-generate-001", numberOfImages=5), 400, param="numberOfImages")
        openai_error(_gen(client, model="imagen-4.0-generate-001", numberOfImages=0), 400, param="numberOfImages")
        # Imagen's field only: Gemini makes one image per call and has no such option
        openai_error(_gen(client, model="gemini-2.5-flash-image", numberOfImages=2),
                     400, param="numberOfImages", code="unknown_parameter")
    assert state.requests == []


def test_n_fans_out_above_what_one_call_makes(google):
    gateway, state = google
    with gateway.http() as client:
        assert len(b64_images(_gen(client, model="imagen-4.0-ultra-generate-001", n=6))) == 6
        assert sorted(r.body["parameters"]["sampleCount"] for r in state.requests) == [2, 4]
        state.requests.clear()
        images = b64_images(_gen(client, model="gemini-3-pro-image-preview", n=3))
    assert len(images) == 3 and len(state.requests) == 3  # one image per Gemini response


@pytest.mark.parametrize("model,size,sent,pixels", [
    ("imagen-4.0-generate-001", "1024x1024", {"aspectRatio": "1:1", "sampleImageSize": "1K"}, (1024, 1024)),
    ("imagen-4.0-generate-001", "16:9", {"aspectRatio": "16:9", "sampleImageSize": "1K"}, (1408, 768)),
    ("imagen-4.0-generate-001", "2K", {"aspectRatio": "1:1", "sampleImageSize": "2K"}, (2048, 2048)),
    ("imagen-4.0-ultra-generate-001", "ASPECT_9_16", {"aspectRatio": "9:16", "sampleImageSize": "1K"}, (768, 1408)),
    ("imagen-4.0-generate-001", "1792x1024", {"aspectRatio": "16:9", "sampleImageSize": "1K"}, (1408, 768)),
    ("imagen-4.0-generate-001", "1536x1024", {"aspectRatio": "4:3", "sampleImageSize": "1K"}, (1280, 896)),
    ("imagen-4.0-fast-generate-001", "16x9", {"aspectRatio": "16:9"}, (1408, 768)),
    ("imagen-4.0-fast-generate-001", "2K", {"aspectRatio": "1:1"}, (1024, 1024)),  # fast has no 2K
    ("imagen-4.0-fast-generate-001", "1024*768", {"aspectRatio": "4:3"}, (1280, 896)),
    ("imagen-4.0-fast-generate-001", "auto", {}, (1024, 1024)),
    ("gemini-3-pro-image-preview", "2048x1152", {"aspectRatio": "16:9", "imageSize": "2K"}, (2736, 1536)),
    ("gemini-3-pro-image-preview", "1:4", {"aspectRatio": "1:4", "imageSize": "1K"}, (512, 2048)),
    ("gemini-3.1-flash-image-preview", "4K", {"aspectRatio": "1:1", "imageSize": "4K"}, (4096, 4096)),
    ("gemini-2.5-flash-image", "2K", {"aspectRatio": "1:1"}, (1024, 1024)),  # ~1 MP whatever is asked
    ("gemini-2.5-flash-image", "21:9", {"aspectRatio": "21:9"}, (1568, 672)),
])
def test_sizes_translate_to_the_nearest_google_option(quiet_gw, model, size, sent, pixels):
    gateway, state = quiet_gw
    with gateway.http() as client:
        (image,) = b64_images(_gen(client, model=model, size=size))
    body = state.requests[-1].body
    got = body["parameters"] if model in IMAGEN else body["generationConfig"].get("imageConfig", {})
    assert {k: v for k, v in got.items() if k in ("aspectRatio", "sampleImageSize", "imageSize")} == sent
    assert image.size == pixels


def test_impossible_or_unreadable_sizes_are_refused_before_any_call(google):
    gateway, state = google
    with gateway.http() as client:
        err = openai_error(_gen(client, model="imagen-4.0-generate-001", size="1:4"), 400, param="size")
        assert "1:1, 3:4, 4:3, 9:16, 16:9" in err["message"]
        openai_error(_gen(client, model="gemini-2.5-flash-image", size="8:1"), 400, param="size")
        openai_error(_gen(client, model="imagen-4.0-fast-generate-001", size="huge"), 400, param="size")
    assert state.requests == []


def test_vendor_options_are_validated_and_passed_through(google):
    gateway, state = google
    with gateway.http() as client:
        for body, param in [({"watermark": True}, "watermark"), ({"personGeneration": "allow_all"}, "personGeneration"),
                            ({"quality": "high"}, "quality"), ({"seed": 7}, "seed"), ({"stream": True}, "stream")]:
            openai_error(_gen(client, model="imagen-4.0-generate-001", **body), 400, param=param)
        assert state.requests == []
        b64_images(_gen(client, model="imagen-4.0-generate-001", personGeneration="ALLOW_ADULT"))
        assert state.requests[-1].body["parameters"]["personGeneration"] == "allow_adult"
        b64_images(_gen(client, model="gemini-3-pro-image-preview", seed=42))
        assert state.requests[-1].body["generationConfig"]["seed"] == 42


def test_output_format_and_compression(google):
    gateway, state = google
    with gateway.http() as client:
        (jpeg,) = b64_images(_gen(client, model="imagen-4.0-generate-001", output_format="jpeg", output_compression=60))
        assert jpeg.format == "JPEG"
        assert state.requests[-1].body["parameters"]["outputOptions"] == {"mimeType": "image/jpeg",
                                                                          "compressionQuality": 60}
        (webp,) = b64_images(_gen(client, model="gemini-2.5-flash-image", output_format="webp"))
    assert webp.format == "WEBP"  # Google has no webp: the gateway converts


def test_gemini_edits_send_the_images_as_inline_data(google):
    gateway, state = google
    with gateway.http() as client:
        resp = client.post(EDIT, data={"model": "gemini-2.5-flash-image", "prompt": "make the sky stormy",
                                       "response_format": "b64_json"},
                           files={"image": ("in.png", png(128, 64), "image/png")})
        (image,) = b64_images(resp)
        parts = state.requests[-1].body["contents"][0]["parts"]
        assert parts[0] == {"text": "make the sky stormy"}
        assert parts[1]["inlineData"]["mimeType"] == "image/png"
        assert parts[1]["inlineData"]["data"]["width"] == 128 and parts[1]["inlineData"]["data"]["height"] == 64
        assert "imageConfig" not in state.requests[-1].body["generationConfig"]  # keeps the input's ratio
        assert image.width > image.height
        resp = client.post(EDIT, data={"model": "nano-banana-pro", "prompt": "put the cat on the sofa",
                                       "size": "1024x1024", "response_format": "b64_json"},
                           files=[("image[]", ("a.png", png(64, 64), "image/png")),
                                  ("image[]", ("b.jpg", _jpeg(48, 48), "image/jpeg"))])
        assert len(b64_images(resp)) == 1
        sent = state.requests[-1].body
        assert [p["inlineData"]["mimeType"] for p in sent["contents"][0]["parts"][1:]] == ["image/png", "image/jpeg"]
        assert sent["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"}


def test_gemini_edits_refuse_masks_and_imagen_does_not_edit(google):
    gateway, state = google
    with gateway.http() as client:
        resp = client.post(EDIT, data={"model": "gemini-3-pro-image-preview", "prompt": "a hat"},
                           files={"image": ("in.png", png(), "image/png"), "mask": ("m.png", mask_png(), "image/png")})
        openai_error(resp, 400, param="mask")
        resp = client.post(EDIT, data={"model": "gemini-2.5-flash-image", "prompt": "merge"},
                           files=[("image[]", (f"{i}.png", png(), "image/png")) for i in range(4)])
        openai_error(resp, 400, param="image")
        resp = client.post(EDIT, data={"model": "imagen-4.0-generate-001", "prompt": "a hat"},
                           files={"image": ("in.png", png(), "image/png")})
        openai_error(resp, 400, param="model")
    assert state.requests == []


def test_moderation_is_a_content_policy_violation(google):
    gateway, state = google
    with gateway.http() as client:
        for model in ("imagen-4.0-generate-001", "gemini-2.5-flash-image"):
            err = openai_error(_gen(client, model=model, prompt="something forbidden"),
                               400, code="content_policy_violation")
            assert err["type"] == "invalid_request_error"
        assert state.requests[0].body["parameters"]["includeRaiReason"] is True
        # Imagen without reasons: every image silently dropped, {} with HTTP 200
        state.fail_next(200, {})
        openai_error(_gen(client, model="imagen-4.0-fast-generate-001"), 400, code="content_policy_violation")
        state.fail_next(200, {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]})
        openai_error(_gen(client, model="gemini-3-pro-image-preview"), 400, code="content_policy_violation")
        # Vertex-style refusal of an Imagen prompt
        state.fail_next(400, error_body(400, "Image generation failed with the following error: The prompt could "
                                             "not be submitted. This prompt contains words that violate Vertex AI's "
                                             "usage guidelines."))
        openai_error(_gen(client, model="imagen-4.0-generate-001"), 400, code="content_policy_violation")


def test_partly_filtered_imagen_answer_delivers_the_rest(google):
    gateway, state = google
    state.filter_images = 1
    with gateway.http() as client:
        resp = _gen(client, model="imagen-4.0-generate-001", n=3)
        assert len(b64_images(resp)) == 2
    assert "1 image(s) removed" in resp.json()["partial"]


def test_errors_inside_http_200(google):
    gateway, state = google
    with gateway.http() as client:
        state.fail_next(200, {"candidates": [{"content": {"role": "model", "parts": [{"text": "Which lighthouse?"}]},
                                              "finishReason": "STOP"}]})
        err = openai_error(_gen(client, model="gemini-2.5-flash-image"), 400, code="upstream_no_image")
        assert "Which lighthouse?" in err["message"]
        state.fail_next(200, {"candidates": "nope"})
        openai_error(_gen(client, model="gemini-2.5-flash-image"), 502, code="upstream_bad_response")
        state.fail_next(200, {"predictions": [{"mimeType": "image/png"}]})
        openai_error(_gen(client, model="imagen-4.0-generate-001"), 502, code="upstream_bad_response")


def test_upstream_rejection_keeps_the_parameter(google):
    gateway, state = google
    state.fail_next(400, error_body(400, "* GenerateContentRequest.generation_config.image_config.aspect_ratio: "
                                         "aspect_ratio must be one of 1:1, 16:9."))
    with gateway.http() as client:
        openai_error(_gen(client, model="gemini-2.5-flash-image", size="16:9"),
                     400, param="size", code="invalid_argument")


def test_rate_limit_passes_the_retry_delay(google):
    gateway, state = google
    state.fail_next(429, error_body(429, "Resource has been exhausted (e.g. check quota).", details=[
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]))
    with gateway.http() as client:
        resp = _gen(client, model="imagen-4.0-generate-001")
    openai_error(resp, 429, code="resource_exhausted")
    assert resp.headers["retry-after"] == "30"


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_fail_over_to_the_next_channel(make_gateway, upstream, status):
    first, base_first = upstream
    second = GoogleEmulatorState(today=LEGACY_DAY)
    with serve(create_app(second)) as base_second:
        gateway = make_gateway(channels=[google_channel(base_first, "first", priority=10),
                                         google_channel(base_second + "/v1beta", "second")])
        first.fail_next(status)
        with gateway.http() as client:
            resp = _gen(client, model="gemini-3-pro-image-preview")
            assert len(b64_images(resp)) == 1
            row = gateway.log_row(resp.headers["x-request-id"])
            assert [a["channel"] for a in row["attempts"]] == ["first", "second"]
            assert row["attempts"][0]["error"] == "upstream_unavailable"
            first.fail_next(status, count=2)
            second.fail_next(status)
            openai_error(_gen(client, model="imagen-4.0-generate-001"), 502, code="upstream_unavailable")


@pytest.mark.parametrize("key", ["wrong-key", ""])
def test_a_bad_channel_key_is_not_the_clients_fault(make_gateway, upstream, key):
    state, base = upstream
    gateway = make_gateway(channels=[google_channel(base, "broken", priority=10, api_key=key or None),
                                     google_channel(base, "good")])
    with gateway.http() as client:
        resp = _gen(client, model="imagen-4.0-generate-001")
        assert len(b64_images(resp)) == 1
    row = gateway.log_row(resp.headers["x-request-id"])
    assert row["attempts"][0]["error"] == "upstream_auth_failed"
    assert state.requests[0].headers.get("x-goog-api-key", "") == key


def test_unreachable_channel_fails_over(make_gateway, upstream):
    state, base = upstream
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1beta"
    gateway = make_gateway(channels=[google_channel(dead, "dead", priority=10), google_channel(base, "alive")])
    with gateway.http() as client:
        assert len(b64_images(_gen(client, model="gemini-2.5-flash-image"))) == 1


# -- pure build/parse --

def _channel(**kw) -> Channel:
    return Channel(name="g", provider="google", base_url=None, api_key="k", models=(), model_map={}, **kw)


def test_build_uses_the_vendor_host_aliases_and_mapped_names():
    google = Google()
    call = google.build(ImageRequest(Operation.GENERATE, "nano-banana", prompt="x"), "nano-banana", _channel())
    assert call.url == ("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash-image"
                        ":generateContent")
    assert call.headers == {"x-goog-api-key": "k"}
    # a channel renaming a public id to an upstream id the provider does not know yet
    req = ImageRequest(Operation.GENERATE, "imagen-4.0-generate-001", prompt="x", size="2K")
    call = google.build(req, "imagen-4.0-generate-preview-09-2026", _channel())
    assert call.url.endswith("/models/imagen-4.0-generate-preview-09-2026:predict")
    assert call.json["parameters"]["sampleImageSize"] == "2K"
    call = google.build(ImageRequest(Operation.GENERATE, "house-banana", prompt="x"), "gemini-9-image", _channel())
    assert call.url.endswith("/models/gemini-9-image:generateContent") and "contents" in call.json


def test_build_refuses_what_google_cannot_do():
    google = Google()
    image = read_image(png(), "image")
    with pytest.raises(InvalidRequest) as exc:
        google.build(ImageRequest(Operation.EDIT, "gemini-2.5-flash-image", prompt="x", images=[image],
                                  mask=read_image(mask_png(), "mask")), "gemini-2.5-flash-image", _channel())
    assert exc.value.field == "mask"
    with pytest.raises(InvalidRequest) as exc:
        google.build(ImageRequest(Operation.GENERATE, "imagen-4.0-generate-001", prompt="x", n=2,
                                  extras={"numberOfImages": 3}), "imagen-4.0-generate-001", _channel())
    assert exc.value.field == "numberOfImages"


def test_parse_skips_thought_parts_and_maps_error_bodies():
    google = Google()
    req = ImageRequest(Operation.GENERATE, "gemini-3-pro-image-preview", prompt="x")
    body = {"candidates": [{"content": {"parts": [
        {"inlineData": {"mimeType": "image/png", "data": "ZHJhZnQ="}, "thought": True},
        {"inline_data": {"mime_type": "image/png", "data": "ZmluYWw="}, "thoughtSignature": "s"}]},
        "finishReason": "STOP"}]}
    finished = google.parse(req, UpstreamReply(200, {}, payload=body))
    assert [i.b64 for i in finished.images] == ["ZmluYWw="]
    with pytest.raises(UpstreamContentFiltered):
        google.parse(req, UpstreamReply(200, {}, payload={"promptFeedback": {"blockReason": "SAFETY"}}))

    def error(status: int, name: str, **kw):
        return google.parse_error(UpstreamReply(status, {}, payload=error_body(status, "m", name, **kw)))

    assert isinstance(error(404, "NOT_FOUND"), UpstreamUnavailable)  # model not offered on this channel
    assert isinstance(error(400, "FAILED_PRECONDITION"), UpstreamUnavailable)  # region / billing
    assert isinstance(error(429, "RESOURCE_EXHAUSTED"), UpstreamRateLimited)
    assert isinstance(error(400, "INVALID_ARGUMENT"), UpstreamRejected)
    key = error(400, "INVALID_ARGUMENT", details=[{"reason": "API_KEY_INVALID"}])
    assert isinstance(key, UpstreamUnavailable) and key.code == "upstream_auth_failed"
    assert isinstance(google.parse_error(UpstreamReply(502, {}, b"<html>")), UpstreamUnavailable)


def _jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


def test_source_document_curl_through_the_predictions_api(google):
    gateway, state = google
    with gateway.http() as client:
        resp = client.post("/models/google/imagen-4.0-fast-generate-001/predictions",
                           json={"input": {k: v for k, v in SOURCE_EXAMPLE.items() if k != "model"}})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["output"]) == 1
    assert state.requests[-1].model == "imagen-4.0-fast-generate-001"
    assert state.requests[-1].body["parameters"]["sampleCount"] == 1
