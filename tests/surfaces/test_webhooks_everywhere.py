"""A `webhook` in the body runs the request as a task and is sent its answer, on every API that
answers images: OpenAI's Responses, Gemini's generateContent and Ideogram's (OpenAI images, chat
and predictions have their own tests). Each body is the one that API's polling URL shows."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
from PIL import Image

from pixelgate.simulators.ideogram import IdeogramEmulatorState, create_app
from tests.conftest import ADMIN_KEY
from tests.emulators.server import emulated, serve
from tests.surfaces.test_ideogram_native import KEY, MODELS, V3, curl_form
from tests.surfaces.test_predictions import Receiver, _verify


def _delivered(receiver: Receiver, seconds: float = 15) -> dict:
    deadline = time.monotonic() + seconds
    while not receiver.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    (headers, sent), = receiver.calls
    return {"headers": headers, "body": json.loads(sent), "raw": sent}


def _size(b64: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


@pytest.fixture
def hooked(make_gateway):
    receiver = Receiver(failures=0)
    with serve(receiver.app()) as base:
        yield receiver, base + "/hook", make_gateway


def test_responses_webhook_queues_the_response_and_sends_it_completed(hooked):
    receiver, hook, make_gateway = hooked
    gateway = make_gateway(fetch_allow_hosts=["127.0.0.1"], poll_interval_seconds=0.05)
    with gateway.http() as client:
        queued = client.post("/v1/responses", json={
            "model": "sandbox-image", "input": "a lighthouse", "webhook": hook,
            "tools": [{"type": "image_generation", "size": "48x32"}], "sandbox_delay_ms": 200})
        assert queued.status_code == 200, queued.text
        assert queued.json()["status"] == "queued" and queued.json()["background"] is True
        sent = _delivered(receiver)
        polled = client.get(f"/v1/responses/{queued.json()['id']}").json()
        with_stream = client.post("/v1/responses", json={"model": "sandbox-image", "input": "x", "stream": True,
                                                          "webhook": hook})
        secret = client.get("/v1/webhooks/default/secret").json()["key"]
    body = sent["body"]
    assert body["id"] == queued.json()["id"] and body["object"] == "response" and body["status"] == "completed"
    (item,) = body["output"]
    assert item["type"] == "image_generation_call" and _size(item["result"]) == (48, 32)
    assert body == polled  # the webhook carries what the polling URL shows
    assert _verify(secret, sent["headers"], sent["raw"])  # signed as every webhook is
    assert with_stream.status_code == 400 and with_stream.json()["error"]["param"] == "webhook"


def test_gemini_webhook_is_sent_the_operation_with_the_answer(hooked):
    receiver, hook, make_gateway = hooked
    gateway = make_gateway(fetch_allow_hosts=["127.0.0.1"], poll_interval_seconds=0.05)
    body = {"contents": [{"role": "user", "parts": [{"text": "a kite"}]}], "webhook": hook,
            "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "1:1"}}}
    with gateway.http(key=None, headers={"x-goog-api-key": ADMIN_KEY}) as client:
        waited = client.post("/v1beta/models/sandbox-image:generateContent", json=body)
        sent = _delivered(receiver)
        refused = client.post("/v1beta/models/sandbox-image:generateContent", json={**body, "webhook": 7})
        operation = client.get(f"/v1beta/{sent['body']['name']}").json()
    assert waited.status_code == 200, waited.text  # without Prefer: respond-async the client still waits
    op = sent["body"]
    assert op["done"] is True and op["metadata"]["status"] == "succeeded" and op == operation
    (candidate,) = op["response"]["candidates"]
    image = candidate["content"]["parts"][-1]["inlineData"]
    assert image["data"] == waited.json()["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"]
    assert refused.status_code == 400 and "webhook" in refused.text


def test_ideogram_webhook_form_field_is_sent_the_ideogram_answer(hooked):
    receiver, hook, make_gateway = hooked
    with emulated(create_app, IdeogramEmulatorState()) as (state, base):
        gateway = make_gateway(fetch_allow_hosts=["127.0.0.1"], poll_interval_seconds=0.05,
                               channels=[{"name": "ideogram", "provider": "ideogram", "base_url": base,
                                          "api_key": KEY, "models": MODELS}])
        with gateway.http(key=None, headers={"Api-Key": ADMIN_KEY}) as client:
            answer = client.post(f"{V3}/generate", files=curl_form(prompt="a bird", webhook=hook))
            sent = _delivered(receiver)
            bad = client.post(f"{V3}/generate", files=curl_form(prompt="a bird", webhook="ftp://x/y"))
    assert answer.status_code == 200, answer.text
    body = sent["body"]
    assert body["id"].startswith("task_") and body["status"] == "succeeded" and body["error"] is None
    assert body["polling_url"].endswith(f"/ideogram/tasks/{body['id']}")
    result = body["result"]
    unsigned = lambda data: [d["url"].split("?")[0] for d in data]  # noqa: E731 (links signed a second apart differ)
    assert unsigned(result["data"]) == unsigned(answer.json()["data"])
    assert bad.status_code == 400 and "webhook" in bad.text
    assert [r.path for r in state.requests if r.method == "POST"] == ["/v1/ideogram-v3/generate"]  # the refused one: none
