"""The official openai SDK, pointed at the gateway by base_url, against the strict emulator."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from pixelgate import wirejson
from tests.conftest import mask_png, png
from pixelgate.simulators.openai_images import render


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_dalle3_url_is_served_by_the_gateway(openai_gateway):
    gateway, upstream = openai_gateway
    result = gateway.sdk().images.generate(model="dall-e-3", prompt="a red fox", size="1792x1024",
                                           quality="hd", style="natural")
    url = result.data[0].url
    assert url.startswith(gateway.base_url + "/files/")
    assert result.data[0].revised_prompt
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert _image(fetched.content).size == (1792, 1024)
    sent = upstream.requests[-1].fields
    assert sent["model"] == "dall-e-3" and sent["quality"] == "hd" and sent["style"] == "natural"


def test_b64_json_returns_the_bytes(openai_gateway):
    gateway, _ = openai_gateway
    result = gateway.sdk().images.generate(model="dall-e-2", prompt="a fox", size="256x256", n=2,
                                           response_format="b64_json")
    assert len(result.data) == 2
    for item in result.data:
        assert item.url is None
        assert _image(base64.b64decode(item.b64_json)).size == (256, 256)


def test_base64_from_the_upstream_is_forwarded_byte_for_byte_uncopied(openai_gateway, monkeypatch):
    """The upstream's base64 is lifted out of its JSON and spliced into the answer (wirejson)."""
    gateway, _ = openai_gateway
    monkeypatch.setattr(wirejson, "LIFT_MIN_BYTES", 64)  # the emulator's images are small
    spliced = []
    real_dumps_parts = wirejson.dumps_parts

    def dumps_parts(*args, **kwargs):
        parts = real_dumps_parts(*args, **kwargs)
        spliced.append(sum(isinstance(part, memoryview) for part in parts))
        return parts

    monkeypatch.setattr(wirejson, "dumps_parts", dumps_parts)
    result = gateway.sdk().images.generate(model="gpt-image-1", prompt="a fox", size="1024x1536", n=2,
                                           output_format="webp", output_compression=80)
    assert 2 in spliced  # both images went out as views of the upstream's body
    for i, item in enumerate(result.data):
        assert base64.b64decode(item.b64_json) == render("a fox", i, "1024x1536", "webp", 80, False)
    assert result.output_format == "webp" and result.usage.output_tokens > 0


def test_gpt_image_options_pass_through_and_are_echoed(openai_gateway):
    gateway, upstream = openai_gateway
    result = gateway.sdk().images.generate(
        model="gpt-image-1", prompt="a fox", size="1536x1024", quality="low", n=2,
        output_format="webp", output_compression=70, background="opaque", moderation="low",
        response_format="b64_json")
    assert len(result.data) == 2 and result.output_format == "webp" and result.size == "1536x1024"
    assert _image(base64.b64decode(result.data[0].b64_json)).format == "WEBP"
    assert result.usage.total_tokens > 0
    sent = upstream.requests[-1].fields
    assert "response_format" not in sent  # GPT image models refuse it; the gateway delivers
    assert sent["output_compression"] == 70 and sent["moderation"] == "low"


def test_gpt_image_answers_base64_by_default_as_openai_does_and_a_url_on_request(openai_gateway):
    gateway, _ = openai_gateway
    default = gateway.sdk().images.generate(model="gpt-image-1-mini", prompt="a fox")
    assert default.data[0].url is None and _image(base64.b64decode(default.data[0].b64_json)).size == (1024, 1024)
    linked = gateway.sdk().images.generate(model="gpt-image-1-mini", prompt="a fox", response_format="url")
    assert linked.data[0].b64_json is None
    assert _image(httpx.get(linked.data[0].url).content).size == (1024, 1024)


def test_edit_dalle2_with_mask(openai_gateway):
    gateway, upstream = openai_gateway
    result = gateway.sdk().images.edit(model="dall-e-2", image=("src.png", png(256, 256), "image/png"),
                                       mask=("mask.png", mask_png(256, 256), "image/png"),
                                       prompt="add a butterfly", n=1, size="512x512")
    assert _image(httpx.get(result.data[0].url).content).size == (512, 512)
    sent = upstream.requests[-1]
    assert sent.path == "/v1/images/edits"
    assert sent.fields["image"]["width"] == 256 and sent.fields["mask"]["width"] == 256


def test_edit_gpt_image_with_several_images(openai_gateway):
    gateway, upstream = openai_gateway
    images = [("a.png", png(300, 200), "image/png"), ("b.png", png(300, 200, colour=(0, 0, 200)), "image/png")]
    result = gateway.sdk().images.edit(model="gpt-image-1", image=images, prompt="merge them",
                                       input_fidelity="high", size="1024x1536")
    assert _image(base64.b64decode(result.data[0].b64_json) if result.data[0].b64_json
                  else httpx.get(result.data[0].url).content).size == (1024, 1536)
    assert len(upstream.requests[-1].fields["image[]"]) == 2


def test_variation(openai_gateway):
    gateway, upstream = openai_gateway
    result = gateway.sdk().images.create_variation(image=("src.png", png(128, 128), "image/png"), n=2,
                                                   size="256x256", response_format="b64_json")
    assert len(result.data) == 2
    assert upstream.requests[-1].path == "/v1/images/variations"


def test_streaming_partial_images(openai_gateway):
    gateway, upstream = openai_gateway
    stream = gateway.sdk().images.generate(model="gpt-image-1.5", prompt="a fox", stream=True,
                                           partial_images=2, size="1024x1024")
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds.count("image_generation.partial_image") == 2
    assert kinds[-1] == "image_generation.completed"
    final = events[-1]
    assert _image(base64.b64decode(final.b64_json)).size == (1024, 1024)
    assert upstream.requests[-1].fields["stream"] is True


def test_a_stream_tells_its_hold_first_and_its_cost_last(openai_gateway):
    gateway, _ = openai_gateway
    gateway.set_price("gpt-image-1.5", "0.25")
    _, key = gateway.paying_key("10")
    body = {"model": "gpt-image-1.5", "prompt": "a fox", "stream": True, "partial_images": 1, "size": "1024x1024"}
    with gateway.http(key=key) as client, client.stream("POST", "/v1/images/generations", json=body) as resp:
        assert resp.headers["x-pixelgate-cost-limit"] == "0.25" and resp.headers["x-pixelgate-currency"] == "USD"
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == ": pixelgate-cost 0.25 USD"  # after the completed image, as an SSE comment
    assert any("image_generation.completed" in line for line in lines[:-1])


def test_streaming_edit(openai_gateway):
    gateway, _ = openai_gateway
    stream = gateway.sdk().images.edit(model="gpt-image-1", image=("a.png", png(), "image/png"),
                                       prompt="make it blue", stream=True, partial_images=1)
    kinds = [e.type for e in stream]
    assert kinds == ["image_edit.partial_image", "image_edit.completed"]


def test_sandbox_streams_too(gateway):
    stream = gateway.sdk().images.generate(model="sandbox-image", prompt="a fox", stream=True,
                                           partial_images=3, size="128x128")
    kinds = [e.type for e in stream]
    assert kinds == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]


def test_models_list_and_get(openai_gateway):
    gateway, _ = openai_gateway
    ids = {m.id for m in gateway.sdk().models.list()}
    assert {"dall-e-3", "gpt-image-1", "sandbox-image"} <= ids
    assert gateway.sdk().models.retrieve("dall-e-3").owned_by == "openai"
    with pytest.raises(openai.NotFoundError):
        gateway.sdk().models.retrieve("no-such-model")


def test_upstream_content_policy_is_a_400(openai_gateway):
    gateway, _ = openai_gateway
    with pytest.raises(openai.BadRequestError) as info:
        gateway.sdk().images.generate(model="dall-e-3", prompt="something forbidden")
    assert info.value.code == "content_policy_violation"
