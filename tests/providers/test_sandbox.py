"""The offline sandbox provider: real, deterministic images; slow, failing and async on demand."""

from __future__ import annotations

import base64
import io
import time

from PIL import Image

from tests.conftest import mask_png, png

GEN = "/v1/images/generations"


def _gen(client, **fields):
    resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "a fox", "response_format": "b64_json",
                                  **fields})
    assert resp.status_code == 200, resp.text
    return [base64.b64decode(item["b64_json"]) for item in resp.json()["data"]]


def test_deterministic_for_prompt_and_seed(gateway):
    with gateway.http() as client:
        first = _gen(client, size="96x64", seed=7)
        again = _gen(client, size="96x64", seed=7)
        other_seed = _gen(client, size="96x64", seed=8)
        other_prompt = _gen(client, size="96x64", seed=7, prompt="a wolf")
    assert first == again
    assert first != other_seed and first != other_prompt


def test_honours_size_n_and_format(gateway):
    with gateway.http() as client:
        images = _gen(client, size="120x80", n=3, output_format="jpeg", output_compression=60)
    assert len(images) == 3
    for data in images:
        img = Image.open(io.BytesIO(data))
        assert img.format == "JPEG" and img.size == (120, 80)
    assert len({*images}) == 3  # one seed per image


def test_edit_keeps_unmasked_pixels(gateway):
    source = png(64, 64, colour=(10, 200, 10))
    with gateway.http() as client:
        resp = client.post("/v1/images/edits", data={"model": "sandbox-image", "prompt": "paint",
                                                     "response_format": "b64_json"},
                           files={"image": ("a.png", source, "image/png"), "mask": ("m.png", mask_png(), "image/png")})
    assert resp.status_code == 200, resp.text
    out = Image.open(io.BytesIO(base64.b64decode(resp.json()["data"][0]["b64_json"]))).convert("RGB")
    assert out.getpixel((60, 32)) == (10, 200, 10)  # right half was opaque in the mask: kept


def test_slow_model_takes_its_time(gateway):
    with gateway.http() as client:
        start = time.monotonic()
        _gen(client, model="sandbox-image", size="32x32", sandbox_delay_ms=400)
        assert time.monotonic() - start >= 0.4


def test_async_model_is_awaited_by_the_sync_api(gateway):
    with gateway.http() as client:
        start = time.monotonic()
        images = _gen(client, model="sandbox-async", size="48x48")
    assert time.monotonic() - start >= 0.9  # the job is due after a second
    assert Image.open(io.BytesIO(images[0])).size == (48, 48)


def test_async_job_failure_is_a_clear_error(gateway):
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "sandbox-async", "prompt": "x", "sandbox_fail": "job_failed"})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_job_failed"


def test_async_deadline(make_gateway):
    gateway = make_gateway(async_wait_seconds=0.3)
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "sandbox-async", "prompt": "x"})
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "job_deadline_exceeded"


def test_unknown_sandbox_option_is_refused(gateway):
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "sandbox_fail": "explode"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "sandbox_fail"
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "sandbox_delay_ms": -1})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "sandbox_delay_ms"
