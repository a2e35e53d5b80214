"""A first hour offline: with simulate_vendors, every vendor's API is simulated inside the
gateway, so the README's examples run without a single vendor key, through the real provider
code, on every surface."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import httpx
import pytest
import replicate
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def offline(make_gateway):
    # unpriced = refuse, as a fresh install has it: simulated models must still work
    return make_gateway(simulate_vendors=True, unpriced="refuse")


def test_every_vendor_has_a_simulated_channel(offline):
    channels = {c["name"]: c for c in offline.http().get("/admin/channels").json()["data"]}
    for vendor in ("openai", "bfl", "ideogram", "ark", "dashscope", "qianfan", "google", "midjourney"):
        assert channels[f"simulated-{vendor}"]["base_url"].startswith(f"http://{vendor}.simulated")


def test_the_openai_sdk_examples(offline):
    client = offline.sdk()
    img = client.images.generate(model="dall-e-3", prompt="a red panda on a mossy log", size="1792x1024",
                                 quality="hd")
    assert Image.open(io.BytesIO(httpx.get(img.data[0].url).content)).size == (1792, 1024)
    b64 = client.images.generate(model="gpt-image-1", prompt="a fox", response_format="b64_json",
                                 output_format="webp", output_compression=80)
    assert base64.b64decode(b64.data[0].b64_json)[8:12] == b"WEBP"
    edit = client.images.edit(model="dall-e-2", image=open(EXAMPLES / "src.png", "rb"),
                              mask=open(EXAMPLES / "mask.png", "rb"), prompt="add a butterfly")
    assert httpx.get(edit.data[0].url).status_code == 200
    var = client.images.create_variation(image=open(EXAMPLES / "src.png", "rb"), n=2, size="512x512")
    assert len(var.data) == 2
    events = [e.type for e in client.images.generate(model="gpt-image-1.5", prompt="a fox", stream=True,
                                                     partial_images=2)]
    assert events[-1] == "image_generation.completed"


def test_predictions_replicate_ideogram_and_midjourney(offline):
    key = offline.create_key()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=offline.base_url, headers=headers, timeout=60) as client:
        task = client.post("/models/bfl/flux-kontext-max/predictions",
                           json={"input": {"prompt": "A deer", "aspect_ratio": "2:3"}}).json()
        deadline = time.monotonic() + 30
        while (seen := client.get(f"/tasks/{task['id']}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert seen["status"] == "succeeded", seen
        ideogram = client.post("/ideogram/v1/ideogram-v3/generate", headers={"Api-Key": key},
                               files={"prompt": (None, "a poster of a lighthouse"), "aspect_ratio": (None, "16x9")})
        assert ideogram.status_code == 200, ideogram.text
        assert httpx.get(ideogram.json()["data"][0]["url"]).status_code == 200
        submitted = client.post("/mj/submit/imagine", json={"prompt": "a castle in the clouds --ar 16:9"}).json()
        assert submitted["code"] == 1, submitted
        deadline = time.monotonic() + 60
        while (job := client.get(f"/mj/task/{submitted['result']}/fetch").json())["status"] != "SUCCESS":
            assert job["status"] not in ("FAILURE", "CANCEL") and time.monotonic() < deadline, job
            time.sleep(0.3)
        upscale = next(b for b in job["buttons"] if b["label"] == "U1")
        follow = client.post("/mj/submit/action", json={"taskId": job["id"], "customId": upscale["customId"]}).json()
        assert follow["code"] == 1, follow
    output = replicate.Client(api_token=key, base_url=offline.base_url).run(
        "bfl/flux-2-pro", input={"prompt": "a fox", "size": "1024x1024"}, use_file_output=False)
    assert output[0].startswith("http")
