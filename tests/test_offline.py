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
    return make_gateway(simulate_vendors=True, unpriced="refuse", retired_models={})  # the shipped defaults


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


@pytest.mark.long
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


def _ideogram_mask() -> bytes:
    """Ideogram's convention: black marks what to edit, white what to keep."""
    img = Image.new("RGB", (512, 512), (255, 255, 255))
    img.paste((0, 0, 0), (128, 128, 384, 384))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def test_every_ideogram_operation_offline(offline):
    """Ideogram 3.0 and the legacy API, every operation, through the real ideogram provider."""
    key = offline.create_key()
    src = (EXAMPLES / "src.png").read_bytes()
    image = ("src.png", src, "image/png")
    calls = [
        ("/ideogram/v1/ideogram-v3/generate", {"prompt": "a lighthouse", "rendering_speed": "TURBO"}, {}),
        ("/ideogram/v1/ideogram-v3/remix", {"prompt": "at night", "image_weight": "50"}, {"image": image}),
        ("/ideogram/v1/ideogram-v3/edit", {"prompt": "a boat"},
         {"image": image, "mask": ("mask.png", _ideogram_mask(), "image/png")}),
        ("/ideogram/v1/ideogram-v3/reframe", {"resolution": "1312x736"}, {"image": image}),
        ("/ideogram/v1/ideogram-v3/replace-background", {"prompt": "a beach"}, {"image": image}),
        ("/ideogram/remix", {"image_request": '{"prompt": "at dawn", "model": "V_2", "image_weight": 50}'},
         {"image_file": image}),
        ("/ideogram/edit", {"prompt": "a boat", "model": "V_2"},
         {"image_file": image, "mask": ("mask.png", _ideogram_mask(), "image/png")}),
        ("/ideogram/upscale", {"image_request": "{}"}, {"image_file": image}),
    ]
    with httpx.Client(base_url=offline.base_url, headers={"Api-Key": key}, timeout=60) as client:
        for path, form, files in calls:
            # multipart, as Ideogram's clients send it (form fields as parts without a file name)
            resp = client.post(path, files=[(k, (None, v)) for k, v in form.items()] + list(files.items()))
            assert resp.status_code == 200, (path, resp.text)
            assert httpx.get(resp.json()["data"][0]["url"]).status_code == 200, path
        legacy = client.post("/ideogram/generate", json={"image_request": {"prompt": "a fox", "model": "V_2A",
                                                                           "aspect_ratio": "ASPECT_16_9"}})
        assert legacy.status_code == 200 and legacy.json()["data"][0]["resolution"] == "1280x720", legacy.text
        described = client.post("/ideogram/describe", files={"image_file": image})
        assert described.status_code == 200 and described.json()["descriptions"][0]["text"], described.text


@pytest.mark.long
def test_midjourney_offline_progress_buttons_and_follow_ups(offline):
    """imagine -> progress with previews -> a 2x2 grid with U1..U4, V1..V4 and reroll ->
    image-seed and follow-ups, as a midjourney-proxy client sees it."""
    key = offline.create_key()
    with httpx.Client(base_url=offline.base_url, headers={"mj-api-secret": key}, timeout=60) as client:
        submitted = client.post("/mj/submit/imagine", json={"prompt": "a castle in the clouds --ar 16:9"}).json()
        assert submitted["code"] == 1, submitted
        seen = set()
        deadline = time.monotonic() + 60
        while (job := client.get(f"/mj/task/{submitted['result']}/fetch").json())["status"] != "SUCCESS":
            assert job["status"] not in ("FAILURE", "CANCEL") and time.monotonic() < deadline, job
            if job["status"] == "IN_PROGRESS" and job["imageUrl"]:
                seen.add(job["progress"])
                assert httpx.get(job["imageUrl"]).status_code == 200  # the preview, served by the gateway
            time.sleep(0.2)
        assert seen and all(p.endswith("%") and p != "100%" for p in seen), seen  # progress while running
        labels = [b["label"] or b["emoji"] for b in job["buttons"]]
        assert labels == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"], labels
        assert httpx.get(job["imageUrl"]).status_code == 200
        seed = client.get(f"/mj/task/{job['id']}/image-seed").json()
        assert seed["code"] == 1 and seed["result"], seed
        upscale = next(b for b in job["buttons"] if b["label"] == "U1")
        follow = client.post("/mj/submit/action", json={"taskId": job["id"], "customId": upscale["customId"]}).json()
        assert follow["code"] == 1, follow
        changed = client.post("/mj/submit/change", json={"taskId": job["id"], "action": "VARIATION", "index": 2}).json()
        assert changed["code"] == 1, changed
        simple = client.post("/mj/submit/simple-change", json={"content": f"{job['id']} U3"}).json()
        assert simple["code"] == 1, simple
        while (done := client.get(f"/mj/task/{follow['result']}/fetch").json())["status"] != "SUCCESS":
            assert done["status"] not in ("FAILURE", "CANCEL") and time.monotonic() < deadline + 30, done
            time.sleep(0.3)
        assert done["action"] == "UPSCALE" and httpx.get(done["imageUrl"]).status_code == 200


def test_a_sandbox_channel_naming_vendor_models_is_told_where_they_work(offline):
    with offline.http() as admin:
        resp = admin.post("/admin/channels", json={"name": "sb", "provider": "sandbox", "models": ["V3", "mj"]})
    assert resp.status_code == 201
    assert [w.split(":")[0] for w in resp.json()["warnings"]] == ["V3 belongs to ideogram", "mj belongs to midjourney"]


def test_without_vendor_channels_failed_requests_still_name_their_model(gateway):
    """The first hour without the switch: refusals say what is missing, and usage by model shows
    what was asked for, not a row without a model."""
    with gateway.http() as client:
        assert client.post("/v1/images/generations", json={"model": "dall-e-3", "prompt": "x"}).status_code == 404
        assert client.post("/ideogram/v1/ideogram-v3/generate", files={"prompt": (None, "x")}).status_code == 404
        assert client.post("/mj/submit/imagine", json={"prompt": "x"}).json()["code"] == 4
        time.sleep(0.5)  # the request log is written in the background
        rows = {r["model"]: r for r in client.get("/admin/usage", params={"group_by": "model"}).json()["data"]}
    assert rows["dall-e-3"]["failed"] == rows["V3"]["failed"] == rows["midjourney"]["failed"] == 1, rows
    assert "None" not in rows and None not in rows
