"""ComfyUI through the gateway, end to end against the strict emulator on loopback: the
operator's workflow filled from each request, uploads before an edit, progress from the
websocket on a task, node errors and execution errors as 502s naming the node."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image
from pydantic import ValidationError

from pixelgate.config import ChannelConfig
from pixelgate.simulators import COMFYUI_WORKFLOW
from pixelgate.simulators.comfyui import ComfyUIEmulatorState, create_app
from tests.conftest import b64_images, mask_png, png
from tests.emulators.server import emulated

EXAMPLE = Path(__file__).parents[2] / "examples" / "comfyui" / "sdxl_txt2img_api.json"
INPAINT = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "2": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
    "3": {"class_type": "LoadImageMask", "inputs": {"image": "{{mask}}", "channel": "alpha"}},
    "4": {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["2", 0], "vae": ["1", 2], "mask": ["3", 0],
                                                          "grow_mask_by": 6}},
    "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "best quality, {{prompt}}", "clip": ["1", 1]}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{negative_prompt}}", "clip": ["1", 1]}},
    "7": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": "{{seed}}", "steps": "{{steps}}",
                                               "cfg": "{{cfg}}", "sampler_name": "euler", "scheduler": "normal",
                                               "positive": ["5", 0], "negative": ["6", 0], "latent_image": ["4", 0],
                                               "denoise": "{{denoise}}"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "inpaint"}},
}
MISSING_CHECKPOINT = {**INPAINT, "1": {"class_type": "CheckpointLoaderSimple",
                                       "inputs": {"ckpt_name": "flux1-dev.safetensors"}}}


def comfy_channel(base: str, **fields) -> dict:
    return {"name": "comfy", "provider": "comfyui", "base_url": base, "models": ["my-sdxl", "my-inpaint", "broken"],
            "options": {"workflows": {"my-sdxl": str(EXAMPLE), "my-inpaint": INPAINT, "broken": MISSING_CHECKPOINT}},
            **fields}


@pytest.fixture
def gw(make_gateway):
    with emulated(create_app, ComfyUIEmulatorState()) as (state, base):
        yield make_gateway(channels=[comfy_channel(base)]), state


def test_the_shipped_example_is_the_simulated_channels_workflow():
    assert Path(COMFYUI_WORKFLOW).read_bytes() == EXAMPLE.read_bytes()
    classes = {n["class_type"] for n in ChannelConfig(**comfy_channel("http://x")).options["workflows"]["my-sdxl"].values()}
    assert classes == {"KSampler", "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "VAEDecode", "SaveImage"}


def test_generation_fills_the_workflow_and_delivers_through_the_sdk(gw):
    gateway, state = gw
    result = gateway.sdk().images.generate(model="my-sdxl", prompt="a red fox", size="640x480", n=2,
                                           response_format="b64_json",
                                           extra_body={"seed": 7, "steps": 12, "cfg_scale": 5.5,
                                                       "negative_prompt": "blurry", "sampler_name": "dpmpp_2m"})
    sizes = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))).size for d in result.data]
    assert sizes == [(640, 480), (640, 480)]
    graphs = sorted((p["prompt"] for p in state.prompts), key=lambda g: g["3"]["inputs"]["seed"])
    assert [g["3"]["inputs"]["seed"] for g in graphs] == [7, 8]  # n=2: two prompts, two seeds
    graph = graphs[0]
    # typed substitution: numbers are numbers, text is text; what had no placeholder is untouched
    assert graph["5"]["inputs"] == {"width": 640, "height": 480, "batch_size": 1}
    assert graph["3"]["inputs"]["steps"] == 12 and graph["3"]["inputs"]["cfg"] == 5.5
    assert graph["3"]["inputs"]["sampler_name"] == "dpmpp_2m" and graph["3"]["inputs"]["scheduler"] == "karras"
    assert graph["6"]["inputs"]["text"] == "a red fox" and graph["7"]["inputs"]["text"] == "blurry"
    assert all(p["client_id"] == p["prompt_id"] for p in state.prompts)


def test_defaults_fill_what_the_request_leaves_out(gw):
    gateway, state = gw
    with gateway.http() as client:
        b64_images(client.post("/v1/images/generations", json={"model": "my-sdxl", "prompt": "a fox",
                                                               "response_format": "b64_json"}))
    inputs = state.prompts[-1]["prompt"]["3"]["inputs"]
    assert (inputs["steps"], inputs["cfg"], inputs["sampler_name"]) == (20, 7.0, "euler")
    assert isinstance(inputs["seed"], int) and state.prompts[-1]["prompt"]["7"]["inputs"]["text"] == ""
    assert state.prompts[-1]["prompt"]["5"]["inputs"]["width"] == 1024


def test_edit_uploads_the_image_and_mask_first(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post("/v1/images/edits", data={"model": "my-inpaint", "prompt": "a hat",
                                                     "response_format": "b64_json"},
                           files={"image": ("src.png", png(96, 64), "image/png"),
                                  "mask": ("mask.png", mask_png(96, 64), "image/png")})
    (img,) = b64_images(resp)
    assert img.size == (96, 64)  # the loaded image's size
    assert [u["overwrite"] for u in state.uploads] == ["true", "true"]
    graph = state.prompts[-1]["prompt"]
    image, mask = graph["2"]["inputs"]["image"], graph["3"]["inputs"]["image"]
    assert {image, mask} == {u["image"]["filename"] for u in state.uploads}
    assert graph["5"]["inputs"]["text"] == "best quality, a hat" and graph["7"]["inputs"]["denoise"] == 0.75
    alpha = Image.open(io.BytesIO(state.inputs[mask])).getchannel("A")
    assert alpha.getpixel((10, 10)) == 0 and alpha.getpixel((80, 10)) == 255  # transparent: repaint
    # the same image again is the same upload, overwritten in place
    with gateway.http() as client:
        client.post("/v1/images/edits", data={"model": "my-inpaint", "prompt": "a hat"},
                    files={"image": ("src.png", png(96, 64), "image/png"),
                           "mask": ("mask.png", mask_png(96, 64), "image/png")})
    assert len(state.inputs) == 2


def test_a_workflow_without_image_placeholders_refuses_edits_naming_the_field(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post("/v1/images/edits", data={"model": "my-sdxl", "prompt": "a hat"},
                           files={"image": ("src.png", png(64, 64), "image/png")})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "image", resp.text
        resp = client.post("/v1/images/generations", json={"model": "my-inpaint", "prompt": "a hat"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "image", resp.text
    assert state.prompts == [] and state.uploads == []


def test_node_errors_are_a_502_naming_the_node(gw):
    gateway, state = gw
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.sdk().images.edit(model="broken", prompt="a hat", image=("src.png", png(64, 64), "image/png"),
                                  mask=("mask.png", mask_png(64, 64), "image/png"))
    assert caught.value.status_code == 502
    message = caught.value.body["message"]
    assert "node 1 (CheckpointLoaderSimple)" in message and "flux1-dev.safetensors" in message, message


def test_an_execution_error_fails_the_task_naming_the_node(gw):
    gateway, state = gw
    state.fail_next("3")
    with gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "my-sdxl", "prompt": "a fox"})
    assert resp.status_code == 502, resp.text
    assert "node 3 (KSampler)" in resp.json()["error"]["message"]
    assert "out of memory" in resp.json()["error"]["message"]


@pytest.mark.long(8)
def test_progress_shows_on_the_task_while_it_runs(gw):
    gateway, state = gw
    state.step_seconds = 0.1  # 30 steps: 3 s
    with gateway.http() as client:
        resp = client.post("/models/comfyui/my-sdxl/predictions", json={"input": {"prompt": "a fox", "steps": 30}})
        assert resp.status_code == 201, resp.text
        seen, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline:
            task = client.get(f"/tasks/{resp.json()['id']}").json()
            seen.append(task["progress"])
            if task["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.2)
    assert task["status"] == "succeeded", task
    assert any(p is not None and 0 < p < 1 for p in seen), seen
    running = [p for p in seen if p]
    assert running == sorted(running)  # steps only move forward
    assert httpx.get(task["output"][0]["url"]).status_code == 200


def test_the_replicate_api_reaches_it(gw):
    gateway, state = gw
    with gateway.http() as client:
        resp = client.post("/v1/models/comfyui/my-sdxl/predictions", json={"input": {"prompt": "a fox"}},
                           headers={"Prefer": "wait=30"})
        assert resp.status_code in (200, 201), resp.text
        task = resp.json()
        deadline = time.monotonic() + 30
        while task["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
            task = client.get(f"/v1/predictions/{task['id']}").json()
    assert task["status"] == "succeeded", task
    assert state.prompts[-1]["prompt"]["6"]["inputs"]["text"] == "a fox"


@pytest.mark.parametrize("workflow, said", [
    ({"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}, "no {{prompt}}"),
    ({"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{promt}}"}}}, "unknown placeholder {{promt}}"),
    ({"1": {"class_type": "EmptyLatentImage", "inputs": {"width": "w{{width}}", "text": "{{prompt}}"}}},
     "{{width}} must be the whole value"),
    ({"nodes": [], "links": []}, "UI format"),
    ("/nonexistent/workflow.json", "cannot read /nonexistent/workflow.json"),
])
def test_workflows_are_checked_when_the_channel_is_configured(workflow, said):
    with pytest.raises(ValidationError) as caught:
        ChannelConfig(name="c", provider="comfyui", base_url="http://x", models=["m"],
                      options={"workflows": {"m": workflow}})
    assert said in str(caught.value) and "workflows.m" in str(caught.value)
