"""Every model of the first source document's catalog through POST /models/<vendor>/<model>/predictions,
end to end against the strict vendor emulators: the document's own curl examples exactly as written
(only the host and the key replaced), each catalog model once, the asynchronous ones as tasks, the
common fields (n, size, quality) and bad inputs refused before any upstream call."""

from __future__ import annotations

import base64
import io
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from pixelgate.providers.ark import Ark
from pixelgate.providers.bfl import BlackForestLabs
from pixelgate.providers.dashscope import DashScope
from pixelgate.providers.google import Google
from pixelgate.providers.ideogram import Ideogram
from pixelgate.providers.openai import OpenAI
from pixelgate.providers.qianfan import Qianfan
from tests import conftest
from tests.conftest import Gateway, png
from pixelgate.simulators import ark, bfl, dashscope, google, ideogram, midjourney, openai_images, qianfan
from tests.emulators.server import serve

# provider -> (emulator module, its state, the path under the emulator's root that clients use)
EMULATORS = {
    "openai": (openai_images, openai_images.OpenAIEmulatorState, "/v1"),
    "bfl": (bfl, bfl.BFLEmulatorState, "/v1"),
    "ideogram": (ideogram, ideogram.IdeogramEmulatorState, ""),
    "ark": (ark, ark.ArkEmulatorState, "/api/v3"),
    "dashscope": (dashscope, dashscope.DashScopeEmulatorState, "/api/v1"),
    "qianfan": (qianfan, qianfan.QianfanEmulatorState, "/v2"),
    "google": (google, google.GoogleEmulatorState, "/v1beta"),
    "midjourney": (midjourney, midjourney.MidjourneyEmulatorState, ""),
}

# The first source document's catalog: provider -> the catalog models it serves (exact ids of
# each provider's `models`). The document names no Midjourney model; config requires at least
# one model per channel, so its channel serves the provider's own "midjourney" only.
CATALOG: dict[str, list[str]] = {
    "openai": ["gpt-image-1.5", "gpt-image-1", "gpt-image-1-mini", "dall-e-3"],
    "google": ["imagen-4.0-fast-generate-001"],
    "qianfan": ["qwen-image", "irag-1.0", "ernie-irag-edit"],
    "dashscope": ["qwen-image", "qwen-image-edit"],
    "ark": ["doubao-seedream-5.0-lite", "doubao-seedream-4-5", "doubao-seedream-4-0"],
    "bfl": ["flux-2-flex", "flux-2-pro", "FLUX.1-Kontext-pro", "flux-kontext-max", "flux-kontext-pro"],
    "ideogram": ["V3"],
}
PROVIDER_CLASSES = {"openai": OpenAI, "google": Google, "qianfan": Qianfan, "dashscope": DashScope,
                    "ark": Ark, "bfl": BlackForestLabs, "ideogram": Ideogram}
# The vendor segment of the model path: the document's own (doubao/ for Ark), else the provider's.
SEGMENT = {"ark": "doubao"}
EDIT_ONLY = {("dashscope", "qwen-image-edit"), ("qianfan", "ernie-irag-edit")}
ASYNC = {"bfl"}  # every FLUX model of the catalog (flux-2-*, Kontext) is a task

DEER = ("A deer drinking in the lake, Sakura petals falling, green and clean water, japanese temple, "
        "dappled sunlight, cinematic lighting, expansive view, peace")
BLACK_HOLE = ("星际穿越,黑洞,黑洞里冲出一辆快支离破碎的复古列车,抢视觉冲击力,电影大片,末日既视感,动感,对比色,oc渲染,光线追踪,"
              "动态模糊,景深,超现实主义,深蓝,画面通过细腻的丰富的色彩层次塑造主体与场景,质感真实,暗黑风背景的光影效果营造出氛围,"
              "整体兼具艺术幻想感,夸张的广角透视效果,耀光,反 射,极致的光影,强引力,吞噬")

# The document's curl examples for POST /models/<vendor>/<model>/predictions, path and -d body
# exactly as written: (id, path, body, provider whose emulator must receive it, the image's
# (width, height), or its width:height ratio as a float).
EXAMPLES = [
    ("openai", "/models/openai/gpt-image-1.5/predictions",
     {"input": {"prompt": DEER, "size": "1024x1024", "n": 1, "quality": "high", "moderation": "low",
                "background": "auto"}}, "openai", (1024, 1024)),
    ("google-imagen", "/models/google/imagen-4.0-fast-generate-001/predictions",
     {"input": {"prompt": DEER, "numberOfImages": 1}}, "google", (1024, 1024)),
    ("qwen", "/models/qianfan/qwen-image/predictions",
     {"input": {"prompt": "A beautiful sunset over a calm ocean", "refer_image": "", "n": 1, "size": "1024x1024",
                "watermark": False}}, "qianfan", (1024, 1024)),
    ("doubao", "/models/doubao/doubao-seedream-4-0/predictions",
     {"input": {"prompt": BLACK_HOLE, "size": "2K", "sequential_image_generation": "disabled", "stream": False,
                "response_format": "url", "watermark": True}}, "ark", (2048, 2048)),
    ("flux-async", "/models/bfl/flux-kontext-max/predictions",
     {"input": {"prompt": DEER + ". reference style as the given image:", "aspect_ratio": "2:3",
                "safety_tolerance": 6}}, "bfl", 2 / 3),
    ("ideogram-v3", "/models/ideogram/V3/predictions",
     {"input": {"prompt": DEER + ", in the style of Pixar 3D", "rendering_speed": "QUALITY",
                "aspect_ratio": "2x1"}}, "ideogram", 2.0),
    ("irag", "/models/qianfan/irag-1.0/predictions",
     {"input": {"prompt": "A beautiful sunset over a calm ocean", "refer_image": "", "n": 1, "size": "1024x1024",
                "guidance": 7.5, "watermark": False}}, "qianfan", (1024, 1024)),
]


@dataclass
class Catalog:
    gateway: Gateway
    states: dict[str, Any]
    client: httpx.Client

    def submits(self) -> dict[str, int]:
        """POSTs each emulator has received (every vendor submits work with a POST; polls and
        result downloads are GETs)."""
        return {name: sum(1 for r in state.requests if r.method == "POST") for name, state in self.states.items()}

    def recorded(self) -> dict[str, int]:
        """Every request each emulator has recorded, of any kind."""
        return {name: len(state.requests) for name, state in self.states.items()}

    def last_submit(self, provider: str):
        return [r for r in self.states[provider].requests if r.method == "POST"][-1]


# conftest's make_gateway (its settings and clean-up), usable from a module-scoped fixture
_make_gateway = contextmanager(conftest.make_gateway.__wrapped__)


@pytest.fixture(scope="module")
def catalog(backend, tmp_path_factory):
    """Every emulator, and one gateway with a channel per vendor serving its catalog models."""
    with ExitStack() as stack:
        states, channels = {}, []
        for provider, (module, state_class, suffix) in EMULATORS.items():
            state = state_class()
            if hasattr(state, "today"):  # the document's models, as the vendor had them then
                state.today = conftest.LEGACY_DAY
            if provider in ("bfl", "dashscope"):
                state.pending_seconds = 0.1
            states[provider] = state
            base = stack.enter_context(serve(module.create_app(state)))
            key = state.api_secret if provider == "midjourney" else state.api_key
            channels.append({"name": provider, "provider": provider, "base_url": base + suffix, "api_key": key,
                             "models": CATALOG.get(provider, ["midjourney"])})
        make_gateway = stack.enter_context(_make_gateway(backend, tmp_path_factory))
        gateway = make_gateway(channels=channels, poll_interval_seconds=0.05, fetch_allow_hosts=["127.0.0.1"])
        client = stack.enter_context(gateway.http())
        yield Catalog(gateway, states, client)


# -- helpers --

def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _images(cat: Catalog, output: list[dict]) -> list[Image.Image]:
    """The output images, each fetched from the gateway (url) or decoded (b64_json), as real images."""
    assert output, output
    images = []
    for item in output:
        if "url" in item:
            assert item["url"].startswith(cat.gateway.base_url + "/files/"), item
            resp = httpx.get(item["url"], timeout=30)
            assert resp.status_code == 200, resp.text
            data = resp.content
        else:
            data = base64.b64decode(item["b64_json"])
        img = Image.open(io.BytesIO(data))
        img.load()
        images.append(img)
    return images


def _sync_ok(cat: Catalog, resp: httpx.Response, model_path: str) -> list[Image.Image]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "succeeded" and body["error"] is None, body
    assert body["model"] == model_path
    assert body["metrics"]["image_count"] == len(body["output"])
    return _images(cat, body["output"])


def _task(cat: Catalog, resp: httpx.Response) -> str:
    """A 201 with {"output": [{"taskId", "polling_url"}]}, the polling URL on the gateway."""
    assert resp.status_code == 201, resp.text
    body = resp.json()
    (out,) = body["output"]
    assert out["taskId"] == body["id"] and body["status"] in ("pending", "running"), body
    assert out["polling_url"] == f"{cat.gateway.base_url}/tasks/{out['taskId']}"
    return out["taskId"]


def _wait(cat: Catalog, task_id: str, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        resp = cat.client.get(f"/tasks/{task_id}")
        assert resp.status_code == 200, resp.text
        task = resp.json()
        if task["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            return task
        time.sleep(0.05)


def _task_ok(cat: Catalog, resp: httpx.Response, model_path: str) -> list[Image.Image]:
    task_id = _task(cat, resp)
    task = _wait(cat, task_id)
    assert task["status"] == "succeeded", task
    assert task["id"] == task_id and task["model"] == model_path and task["error"] is None
    assert task["progress"] == 1.0 and task["metrics"]["image_count"] == len(task["output"])
    return _images(cat, task["output"])


def _only_called(before: dict[str, int], after: dict[str, int], provider: str, calls: int | None = None) -> None:
    grown = {name: after[name] - before[name] for name in after if after[name] != before[name]}
    assert set(grown) == {provider}, grown
    if calls is not None:
        assert grown[provider] == calls, grown


def _error(resp: httpx.Response, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["message"], err
    if param is not None:
        assert err["param"] == param, err
    return err


def _catalog_cases() -> list:
    return [pytest.param(provider, model, id=f"{provider}/{model}") for provider, models in CATALOG.items()
            for model in models]


# -- the catalog itself --

def test_catalog_ids_are_the_providers_own():
    for provider, models in CATALOG.items():
        known = PROVIDER_CLASSES[provider].models
        for model in models:
            assert model in known, (provider, model)
            assert known[model].asynchronous == (provider in ASYNC), (provider, model)


# -- (1) the document's examples, exactly as written --

@pytest.mark.parametrize("path,body,provider,shape", [pytest.param(*e[1:], id=e[0]) for e in EXAMPLES])
def test_source_document_example(catalog, path, body, provider, shape):
    before = catalog.submits()
    resp = catalog.client.post(path, json=body)
    model_path = path.removeprefix("/models/").removesuffix("/predictions")
    if provider in ASYNC:
        images = _task_ok(catalog, resp, model_path)
    else:
        images = _sync_ok(catalog, resp, model_path)
    assert len(images) == body["input"].get("n", body["input"].get("numberOfImages", 1))
    for img in images:
        if isinstance(shape, tuple):
            assert img.size == shape
        else:
            assert img.width / img.height == pytest.approx(shape, rel=0.05), img.size
    _only_called(before, catalog.submits(), provider, calls=1)


def test_source_document_examples_reach_the_vendor_as_asked(catalog):
    """What each example's input became on the vendor's wire (the right emulator, the right fields)."""
    sent = {}
    for name, path, body, provider, _ in EXAMPLES:
        resp = catalog.client.post(path, json=body)
        assert resp.status_code in (200, 201), (name, resp.text)
        if resp.status_code == 201:
            assert _wait(catalog, resp.json()["id"])["status"] == "succeeded", name
        sent[name] = catalog.last_submit(provider)
    openai_sent = sent["openai"].fields
    assert sent["openai"].path == "/v1/images/generations"
    assert {k: openai_sent[k] for k in ("model", "prompt", "size", "n", "quality", "moderation", "background")} == {
        "model": "gpt-image-1.5", "prompt": DEER, "size": "1024x1024", "n": 1, "quality": "high",
        "moderation": "low", "background": "auto"}
    imagen = sent["google-imagen"]
    assert imagen.path.endswith("/models/imagen-4.0-fast-generate-001:predict")
    assert imagen.body["instances"] == [{"prompt": DEER}] and imagen.body["parameters"]["sampleCount"] == 1
    qwen = sent["qwen"].fields
    assert sent["qwen"].path == "/v2/images/generations"
    assert qwen["model"] == "qwen-image" and qwen["size"] == "1024x1024" and qwen["n"] == 1
    assert qwen["watermark"] is False and "refer_image" not in qwen
    doubao = sent["doubao"].body
    assert doubao["model"] == "doubao-seedream-4-0-250828" and doubao["size"] == "2K"
    assert doubao["sequential_image_generation"] == "disabled" and doubao["watermark"] is True
    assert doubao.get("stream") in (None, False)
    flux = sent["flux-async"]
    assert flux.path == "/v1/flux-kontext-max"
    assert flux.fields["aspect_ratio"] == "2:3" and flux.fields["safety_tolerance"] == 6
    v3 = sent["ideogram-v3"]
    assert v3.path == "/v1/ideogram-v3/generate"
    assert v3.fields["rendering_speed"] == "QUALITY" and v3.fields["aspect_ratio"] == "2x1"
    irag = sent["irag"].fields
    assert irag["model"] == "irag-1.0" and irag["size"] == "1024x1024" and irag["watermark"] is False
    assert "guidance" not in irag and "refer_image" not in irag


def test_source_document_flux_one_step_example(catalog):
    """`FLUX 一步绘图`: POST /images/generations, the answer piped as .data[0].b64_json into a PNG."""
    before = catalog.submits()
    resp = catalog.client.post("/images/generations", json={
        "model": "FLUX.1-Kontext-pro", "prompt": "a cat in the garden, cute cartoon", "safety_tolerance": 6})
    assert resp.status_code == 200, resp.text
    data = base64.b64decode(resp.json()["data"][0]["b64_json"])
    assert data.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(data)).format == "PNG"
    _only_called(before, catalog.submits(), "bfl", calls=1)
    assert catalog.last_submit("bfl").path == "/v1/flux-kontext-pro"


# -- (2) every catalog model once, (3) the asynchronous ones as tasks --

@pytest.mark.parametrize("provider,model", _catalog_cases())
def test_every_catalog_model(catalog, provider, model):
    segment = SEGMENT.get(provider, provider)
    inp: dict[str, Any] = {"prompt": "a red fox in the snow"}
    if (provider, model) in EDIT_ONLY:
        inp["image"] = _data_url(png(192, 128))
    before = catalog.submits()
    resp = catalog.client.post(f"/models/{segment}/{model}/predictions", json={"input": inp})
    if provider in ASYNC:
        (img,) = _task_ok(catalog, resp, f"{segment}/{model}")
    else:
        (img,) = _sync_ok(catalog, resp, f"{segment}/{model}")
    assert img.width >= 64 and img.height >= 64
    _only_called(before, catalog.submits(), provider, calls=1)
    if (provider, model) in EDIT_ONLY:
        sent = catalog.last_submit(provider)
        if provider == "qianfan":
            assert sent.path == "/v2/images/edits" and sent.fields["model"] == model
        else:
            content = sent.body["input"]["messages"][0]["content"]
            assert sent.body["model"] == model and content[0]["image"]["width"] == 192, content


@pytest.mark.parametrize("model", CATALOG["bfl"])
def test_async_models_answer_as_tasks(catalog, model):
    state = catalog.states["bfl"]
    state.pending_seconds = 0.6
    try:
        resp = catalog.client.post(f"/models/bfl/{model}/predictions",
                                   json={"input": {"prompt": "a lighthouse", "seed": 7}})
        task_id = _task(catalog, resp)
        assert set(resp.json()["output"][0]) == {"taskId", "polling_url"}  # no image yet
        first = catalog.client.get(f"/tasks/{task_id}").json()
        assert first["status"] in ("pending", "running") and first["output"] is None, first
    finally:
        state.pending_seconds = 0.1
    task = _wait(catalog, task_id)
    assert task["status"] == "succeeded", task
    assert len(_images(catalog, task["output"])) == 1
    assert state.submits()[-1].fields["seed"] == 7


def test_a_sync_model_answers_at_once_not_as_a_task(catalog):
    resp = catalog.client.post("/models/openai/gpt-image-1-mini/predictions", json={"input": {"prompt": "a fox"}})
    assert resp.status_code == 200 and "taskId" not in resp.json()["output"][0], resp.text


# -- (4) the document's n and common fields --

@pytest.mark.parametrize("segment,model,provider,n", [
    pytest.param("openai", "gpt-image-1", "openai", 3, id="openai/gpt-image-1-n3"),
    pytest.param("openai", "gpt-image-1-mini", "openai", 10, id="openai/gpt-image-1-mini-n10"),
    pytest.param("qianfan", "qwen-image", "qianfan", 2, id="qianfan/qwen-image-n2"),
    pytest.param("dashscope", "qwen-image", "dashscope", 3, id="dashscope/qwen-image-n3"),
    pytest.param("doubao", "doubao-seedream-4-0", "ark", 2, id="doubao/doubao-seedream-4-0-n2"),
    pytest.param("bfl", "flux-2-pro", "bfl", 2, id="bfl/flux-2-pro-n2"),
    pytest.param("google", "imagen-4.0-fast-generate-001", "google", 3, id="google/imagen-n3"),
    pytest.param("ideogram", "V3", "ideogram", 2, id="ideogram/V3-n2"),
])
def test_n(catalog, segment, model, provider, n):
    before = catalog.submits()
    resp = catalog.client.post(f"/models/{segment}/{model}/predictions",
                               json={"input": {"prompt": "a red fox", "n": n}})
    model_path = f"{segment}/{model}"
    images = _task_ok(catalog, resp, model_path) if provider in ASYNC else _sync_ok(catalog, resp, model_path)
    assert len(images) == n
    _only_called(before, catalog.submits(), provider)


QWEN_SIZES = ["512*1024", "768*512", "768*1024", "1024*576", "576*1024", "1024*1024"]  # the document's list


@pytest.mark.parametrize("segment,model,provider,size,expected", [
    # gpt-image: tiers and auto onto its own sizes
    pytest.param("openai", "gpt-image-1.5", "openai", "auto", None, id="gpt-image-1.5-auto"),
    pytest.param("openai", "gpt-image-1.5", "openai", "1K", (1024, 1024), id="gpt-image-1.5-1K"),
    pytest.param("openai", "gpt-image-1", "openai", "4K", None, id="gpt-image-1-4K"),
    pytest.param("doubao", "doubao-seedream-4-0", "ark", "1K", (1024, 1024), id="seedream-4-0-1K"),
    pytest.param("doubao", "doubao-seedream-4-0", "ark", "2K", (2048, 2048), id="seedream-4-0-2K"),
    pytest.param("doubao", "doubao-seedream-4-0", "ark", "auto", None, id="seedream-4-0-auto"),
    pytest.param("doubao", "doubao-seedream-4-5", "ark", "4K", (4096, 4096), id="seedream-4-5-4K"),
    pytest.param("doubao", "doubao-seedream-5.0-lite", "ark", "2K", (2048, 2048), id="seedream-5.0-lite-2K"),
    pytest.param("bfl", "flux-2-pro", "bfl", "1K", None, id="flux-2-pro-1K"),
    pytest.param("bfl", "flux-2-pro", "bfl", "2K", None, id="flux-2-pro-2K"),
    pytest.param("bfl", "flux-2-flex", "bfl", "auto", None, id="flux-2-flex-auto"),
    *(pytest.param("qianfan", "qwen-image", "qianfan", s, tuple(map(int, s.split("*"))), id=f"qianfan-qwen-{s}")
      for s in QWEN_SIZES),
    # DashScope's qwen-image makes five fixed sizes: the document's 3:4 becomes its 3:4 (1104*1472)
    pytest.param("dashscope", "qwen-image", "dashscope", "768*1024", (1104, 1472), id="dashscope-qwen-768*1024"),
])
def test_common_size(catalog, segment, model, provider, size, expected):
    before = catalog.submits()
    resp = catalog.client.post(f"/models/{segment}/{model}/predictions",
                               json={"input": {"prompt": "a red fox", "size": size}})
    model_path = f"{segment}/{model}"
    (img,) = _task_ok(catalog, resp, model_path) if provider in ASYNC else _sync_ok(catalog, resp, model_path)
    if expected is not None:
        assert img.size == expected
    if size in ("1K", "2K") and provider == "bfl":  # the document's 16:9 default at the tier's area
        side = {"1K": 1024, "2K": 2048}[size]
        assert img.width / img.height == pytest.approx(16 / 9, rel=0.05)
        assert img.width * img.height == pytest.approx(side * side, rel=0.1), img.size
    _only_called(before, catalog.submits(), provider, calls=1)


@pytest.mark.parametrize("quality", ["low", "medium", "high"])
def test_common_quality(catalog, quality):
    resp = catalog.client.post("/models/openai/gpt-image-1/predictions",
                               json={"input": {"prompt": "a red fox", "quality": quality, "size": "1024x1024"}})
    _sync_ok(catalog, resp, "openai/gpt-image-1")
    assert catalog.last_submit("openai").fields["quality"] == quality
    resp = catalog.client.post("/models/bfl/flux-2-pro/predictions",
                               json={"input": {"prompt": "a red fox", "quality": quality}})
    _task_ok(catalog, resp, "bfl/flux-2-pro")
    resp = catalog.client.post("/models/dashscope/qwen-image/predictions",
                               json={"input": {"prompt": "a red fox", "quality": quality}})
    _sync_ok(catalog, resp, "dashscope/qwen-image")


# -- (5) bad inputs, refused before any upstream call --

@pytest.mark.parametrize("path", [
    "/models/openai/gpt-image-9/predictions",
    "/models/bfl/flux-3-ultra/predictions",
    "/models/ideogram/V9/predictions",
    "/models/acme/nope/predictions",
])
def test_unknown_model_is_404(catalog, path):
    before = catalog.recorded()
    resp = catalog.client.post(path, json={"input": {"prompt": "a fox"}})
    _error(resp, 404)
    assert catalog.recorded() == before


BAD = [
    # unknown input fields, named input.<field>
    ("openai/gpt-image-1.5", {"prompt": "x", "wat": 1}, "input.wat"),
    ("google/imagen-4.0-fast-generate-001", {"prompt": "x", "sampleCountz": 1}, "input.sampleCountz"),
    ("qianfan/irag-1.0", {"prompt": "x", "wat": True}, "input.wat"),
    ("dashscope/qwen-image", {"prompt": "x", "wat": 1}, "input.wat"),
    ("doubao/doubao-seedream-4-0", {"prompt": "x", "wat": 1}, "input.wat"),
    ("bfl/flux-2-pro", {"prompt": "x", "wat": 1}, "input.wat"),
    ("bfl/flux-kontext-max", {"prompt": "x", "wat": 1}, "input.wat"),
    ("ideogram/V3", {"prompt": "x", "wat": 1}, "input.wat"),
    # out of the document's ranges
    ("bfl/flux-kontext-max", {"prompt": "x", "safety_tolerance": 9}, "input.safety_tolerance"),
    ("bfl/flux-2-flex", {"prompt": "x", "safety_tolerance": -1}, "input.safety_tolerance"),
    ("bfl/flux-2-pro", {"prompt": "x", "aspect_ratio": "wide"}, "input.aspect_ratio"),
    ("openai/gpt-image-1", {"prompt": "x", "n": 11}, "input.n"),
    ("openai/gpt-image-1", {"prompt": "x", "n": 0}, "input.n"),
    ("bfl/flux-2-pro", {"prompt": "x", "n": 11}, "input.n"),
    ("doubao/doubao-seedream-4-0", {"prompt": "x", "n": 11}, "input.n"),
    ("qianfan/qwen-image", {"prompt": "x", "seed": -5}, "input.seed"),
    ("dashscope/qwen-image", {"prompt": "x", "seed": -5}, "input.seed"),
    ("dashscope/qwen-image", {"prompt": "x", "seed": 2147483648}, "input.seed"),
    ("doubao/doubao-seedream-4-0", {"prompt": "x", "seed": -2}, "input.seed"),
    ("openai/gpt-image-1", {"prompt": "x", "quality": "ultra"}, "input.quality"),
    ("openai/gpt-image-1.5", {"prompt": "x", "moderation": "none"}, "input.moderation"),
    ("openai/gpt-image-1.5", {"prompt": "x", "output_format": "gif"}, "input.output_format"),
    ("doubao/doubao-seedream-4-5", {"prompt": "x", "size": "1K"}, "input.size"),  # "1K(Doubao-4-5系列不支持)"
    ("google/imagen-4.0-fast-generate-001", {"prompt": "x", "numberOfImages": 2, "n": 3}, "input.numberOfImages"),
    ("qianfan/irag-1.0", {"prompt": "x", "refer_image": "nope"}, "input.refer_image"),
    ("ideogram/V3", {"prompt": "x", "rendering_speed": "FAST"}, "input.rendering_speed"),
    ("ideogram/V3", {"prompt": "x", "seed": -5}, "input.seed"),
    ("doubao/doubao-seedream-4-0", {"prompt": "x", "response_format": "jpeg"}, "input.response_format"),
    ("doubao/doubao-seedream-4-0", {"prompt": "x", "sequential_image_generation": "auto",
                                    "sequential_image_generation_options": {"max_images": 16}},
     "input.sequential_image_generation_options.max_images"),
    ("openai/gpt-image-1", {"prompt": "x", "n": "2"}, "input.n"),
    ("openai/gpt-image-1", {"prompt": 5}, "input.prompt"),
]


@pytest.mark.parametrize("model_path,inp,param", [
    pytest.param(*b, id=f"{b[0]}-" + ",".join(f"{k}={v!r}" for k, v in b[1].items() if k != "prompt" or len(b[1]) == 1))
    for b in BAD])
def test_bad_input_is_400_before_any_upstream_call(catalog, model_path, inp, param):
    before = catalog.recorded()
    resp = catalog.client.post(f"/models/{model_path}/predictions", json={"input": inp})
    _error(resp, 400, param)
    time.sleep(0.05)  # nothing submitted in the background either
    assert catalog.recorded() == before


@pytest.mark.parametrize("model_path", ["dashscope/qwen-image-edit", "qianfan/ernie-irag-edit"])
def test_edit_only_model_without_image_names_input_image(catalog, model_path):
    """An edit-only model asked without `image`: the client's missing field is input.image (the
    predictions API has no operation for the client to get wrong)."""
    before = catalog.recorded()
    resp = catalog.client.post(f"/models/{model_path}/predictions", json={"input": {"prompt": "make it blue"}})
    assert resp.status_code == 400, resp.text
    assert catalog.recorded() == before
    assert resp.json()["error"]["param"] == "input.image", resp.json()
