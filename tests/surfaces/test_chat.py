"""POST /v1/chat/completions with image models, through the official openai SDK and raw HTTP:
OpenRouter's `message.images`, edits from image parts, the multi-turn rule, streaming, billing,
allowlists and idempotency."""

from __future__ import annotations

import base64
import io
import json
from decimal import Decimal

import openai
import pytest
from PIL import Image

from pixelgate.surfaces import _conversation
from tests.conftest import openai_error, png

CHAT = "/v1/chat/completions"


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _decode(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,"), url[:40]
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def _images(message) -> list[str]:
    """The image URLs of an SDK message (OpenRouter's field, which the SDK keeps in model_extra)."""
    return [item["image_url"]["url"] for item in message.model_extra["images"]]


def _operation(gateway, request_id: str) -> str:
    return gateway.log_row(request_id)["operation"]


def test_the_sdk_gets_the_image_as_a_data_url_in_message_images_and_in_markdown(gateway):
    raw = gateway.sdk().chat.completions.with_raw_response.create(
        model="sandbox-image", messages=[{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "a red fox"}], extra_body={"size": "96x64"})
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == "sandbox-image"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    [url] = _images(choice.message)
    assert _decode(url).size == (96, 64)
    assert choice.message.content == f"![image]({url})"  # chat_markdown_images, on by default
    assert completion.usage.total_tokens == 0
    request_id = raw.headers["x-request-id"]
    assert completion.id == "chatcmpl-" + request_id.removeprefix("req_")
    row = gateway.log_row(request_id)
    assert row["surface"] == "chat" and row["operation"] == "generate" and row["status"] == 200


def test_image_parts_make_an_edit_and_links_come_when_asked(make_gateway):
    gateway = make_gateway(chat_markdown_images=False)
    red = png(48, 40, colour=(220, 10, 10))
    with gateway.http() as client:
        resp = client.post(CHAT, json={"model": "sandbox-image", "image_response": "url", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "keep it red"},
                                         {"type": "image_url", "image_url": {"url": _data_url(red)}}]}]})
    assert resp.status_code == 200, resp.text
    message = resp.json()["choices"][0]["message"]
    assert message["content"] == ""  # no revised prompt, no markdown
    link = message["images"][0]["image_url"]["url"]
    assert link.startswith(gateway.base_url + "/files/")
    with gateway.http(None) as anyone:
        image = Image.open(io.BytesIO(anyone.get(link).content))
    assert image.size == (48, 40) and image.convert("RGB").getpixel((5, 5)) == (220, 10, 10)  # the sandbox kept it
    assert _operation(gateway, resp.headers["x-request-id"]) == "edit"


def test_an_earlier_assistant_image_is_edited_by_a_follow_up_even_by_its_signed_link(make_gateway):
    """The rule: no image in the last user message, an image in an earlier assistant message, a
    model that can edit: that image is edited. The gateway's own link is read from its storage
    (its address, 127.0.0.1, is one the URL guard refuses)."""
    gateway = make_gateway()
    client = gateway.sdk()
    first = client.chat.completions.create(model="sandbox-image", messages=[{"role": "user", "content": "a fox"}],
                                           extra_body={"image_response": "url", "size": "80x56"})
    link = _images(first.choices[0].message)[0]
    follow = client.chat.completions.with_raw_response.create(model="sandbox-image", messages=[
        {"role": "user", "content": "a fox"},
        {"role": "assistant", "content": first.choices[0].message.content, "images": first.choices[0].message.model_extra["images"]},
        {"role": "user", "content": "now at night"}])
    assert _operation(gateway, follow.headers["x-request-id"]) == "edit"
    assert _decode(_images(follow.parse().choices[0].message)[0]).size == (80, 56)  # the input's size
    # a client that keeps only `content` sends the markdown back: the same rule applies
    blue = png(40, 40, colour=(0, 0, 250))
    markdown = client.chat.completions.create(model="sandbox-image", messages=[
        {"role": "assistant", "content": f"here: ![image]({_data_url(blue)})"},
        {"role": "user", "content": [{"type": "text", "text": "again"}]}])
    edited = _decode(_images(markdown.choices[0].message)[0])
    assert edited.size == (40, 40) and edited.convert("RGB").getpixel((1, 1)) == (0, 0, 250)


def test_a_model_that_cannot_edit_generates_on_a_follow_up(openai_gateway):
    gateway, upstream = openai_gateway
    with gateway.http() as client:
        resp = client.post(CHAT, json={"model": "dall-e-3", "messages": [
            {"role": "user", "content": "a fox"},
            {"role": "assistant", "content": "", "images": [{"type": "image_url", "image_url": {"url": _data_url(png())}}]},
            {"role": "user", "content": "now at night"}]})
    assert resp.status_code == 200, resp.text
    assert upstream.requests[-1].path.endswith("/images/generations")
    assert upstream.requests[-1].fields["prompt"] == "now at night"
    message = resp.json()["choices"][0]["message"]
    revised = message["content"].split("\n\n")[0]
    assert revised and not revised.startswith("![")  # dall-e-3's revised prompt leads the content
    # an image part for a model that cannot edit is refused, naming the model
    with gateway.http() as client:
        refused = client.post(CHAT, json={"model": "dall-e-3", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": _data_url(png())}}]}]})
    openai_error(refused, 400, param="model")


def test_image_config_sets_ratio_and_tier(gateway):
    with gateway.http() as client:
        resp = client.post(CHAT, json={"model": "sandbox-image", "messages": [{"role": "user", "content": "x"}],
                                       "image_config": {"aspect_ratio": "16:9", "image_size": "1K"},
                                       "modalities": ["image", "text"]})
        [item] = resp.json()["choices"][0]["message"]["images"]
        width, height = _decode(item["image_url"]["url"]).size
        assert abs(width / height - 16 / 9) < 0.02 and 0.9e6 < width * height < 1.2e6
        for body, param in (({"image_config": {"aspect_ratio": "wide"}}, "image_config.aspect_ratio"),
                            ({"image_config": {"image_size": "8K"}}, "image_config.image_size"),
                            ({"modalities": ["text"]}, "modalities"),
                            ({"image_response": "b64"}, "image_response"),
                            ({"response_format": {"type": "json_object"}}, "response_format"),
                            ({"messages": []}, "messages"),
                            ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
                            ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
                             "messages[0].content[0].type"),
                            ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
                                "url": "http://127.0.0.1:1/x.png"}}, {"type": "text", "text": "x"}]}]},
                             "messages[0].content[0].image_url.url"),
                            ({"quality": "ultra"}, "quality"),
                            ({"unheard_of": 1}, "unheard_of")):
            sent = {"model": "sandbox-image", "messages": [{"role": "user", "content": "x"}], **body}
            openai_error(client.post(CHAT, json=sent), 400, param=param)


def test_stream_through_the_sdk_partial_images_then_the_image_then_done(gateway):
    chunks = list(gateway.sdk().chat.completions.create(
        model="sandbox-image", messages=[{"role": "user", "content": "a fox"}], stream=True,
        extra_body={"partial_images": 2, "size": "64x64"}))
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant"
    partials = [d.model_extra["partial_image"] for d in deltas if d.model_extra.get("partial_image")]
    assert [p["index"] for p in partials] == [0, 1]
    [final] = [d.model_extra["images"] for d in deltas if d.model_extra.get("images")]
    assert _decode(final[0]["image_url"]["url"]).size == (64, 64)
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is not None
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_a_silent_model_streams_keep_alives_then_its_image(openai_gateway, monkeypatch):
    gateway, upstream = openai_gateway
    monkeypatch.setattr(_conversation, "KEEP_ALIVE_SECONDS", 0.2)
    upstream.delay = 1.0  # dall-e-3 streams nothing: the gateway waits for the whole image
    with gateway.http() as client, client.stream("POST", CHAT, json={
            "model": "dall-e-3", "stream": True, "messages": [{"role": "user", "content": "a fox"}]}) as resp:
        assert resp.status_code == 200
        lines = [line for line in resp.iter_lines() if line]
    assert lines.count(": keep-alive") >= 2
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert any(d["choices"][0]["delta"].get("images") for d in data)
    assert data[-1]["choices"][0]["finish_reason"] == "stop" and lines[-1] == "data: [DONE]"


def test_a_failure_on_a_stream_is_an_openai_error_the_sdk_raises(gateway):
    stream = gateway.sdk().chat.completions.create(
        model="sandbox-image", messages=[{"role": "user", "content": "a fox"}], stream=True,
        extra_body={"sandbox_fail": "bad_response"})
    with pytest.raises(openai.APIError):
        list(stream)


def test_a_paying_key_is_charged_once_and_sees_the_cost(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "0.25")
    account_id, key = gateway.paying_key("1.00")
    raw = gateway.sdk(key).chat.completions.with_raw_response.create(
        model="sandbox-image", messages=[{"role": "user", "content": "a fox"}], n=2)
    assert len(_images(raw.parse().choices[0].message)) == 2
    assert raw.headers["x-pixelgate-cost"] == "0.5"
    with gateway.http(key) as client, client.stream("POST", CHAT, json={
            "model": "sandbox-image", "stream": True, "messages": [{"role": "user", "content": "a fox"}]}) as resp:
        lines = list(resp.iter_lines())
    assert ": pixelgate-cost 0.25 USD" in lines
    with gateway.http() as admin:
        account = admin.get(f"/admin/accounts/{account_id}").json()
    assert Decimal(account["spent"]) == Decimal("0.75") and Decimal(account["balance"]) == Decimal("0.25")


def test_a_key_not_allowed_the_model_is_refused_in_openai_shape(gateway):
    key = gateway.create_key(allowed_models=["other-model"])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        gateway.sdk(key).chat.completions.create(model="sandbox-image", messages=[{"role": "user", "content": "x"}])
    assert refused.value.body["param"] == "model"
    with gateway.http(key) as client:  # on a stream too: refused before it begins
        openai_error(client.post(CHAT, json={"model": "sandbox-image", "stream": True,
                                             "messages": [{"role": "user", "content": "x"}]}), 403, param="model")


def test_an_idempotency_key_repeat_answers_the_same_images_and_charges_once(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "0.25")
    account_id, key = gateway.paying_key("1.00")
    body = {"model": "sandbox-image", "messages": [{"role": "user", "content": "a fox"}]}
    with gateway.http(key, headers={"Idempotency-Key": "chat-1"}) as client:
        first, again = client.post(CHAT, json=body), client.post(CHAT, json=body)
    assert first.status_code == again.status_code == 200, first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json()["choices"][0]["message"]["images"] == again.json()["choices"][0]["message"]["images"]
    with gateway.http() as admin:
        assert Decimal(admin.get(f"/admin/accounts/{account_id}").json()["spent"]) == Decimal("0.25")


def test_an_asynchronous_model_is_waited_for(gateway):
    completion = gateway.sdk().chat.completions.create(
        model="sandbox-async", messages=[{"role": "user", "content": "a fox"}],
        extra_body={"sandbox_job_seconds": 0.2, "size": "32x32"})
    assert _decode(_images(completion.choices[0].message)[0]).size == (32, 32)


def test_simulated_vendor_model_through_the_sdk(make_gateway):
    gateway = make_gateway(simulate_vendors=True, sandbox=False)
    completion = gateway.sdk().chat.completions.create(
        model="gpt-image-2", messages=[{"role": "user", "content": "a lighthouse"}],
        extra_body={"size": "1024x1536", "quality": "low"})
    image = _decode(_images(completion.choices[0].message)[0])
    assert image.size == (1024, 1536) and completion.usage.completion_tokens > 0


def test_openapi_names_the_chat_route(gateway):
    with gateway.http() as client:
        doc = client.get("/openapi.json").json()
    operation = doc["paths"]["/v1/chat/completions"]["post"]
    assert operation["tags"] == ["Chat"] and "text/event-stream" in operation["responses"]["200"]["content"]



def test_respond_async_answers_a_task_whose_polling_url_and_webhook_carry_the_completion(make_gateway):
    """A chat completion that must outlive its connection: 202 with the task at once, its polling
    URL 202 while it runs and then the completion the synchronous call would have answered; a
    `webhook` in the body gets the task, signed, with that completion in `result`."""
    import time

    from tests.emulators.server import serve
    from tests.surfaces.test_predictions import Receiver

    receiver = Receiver(failures=0)
    gateway = make_gateway(fetch_allow_hosts=["127.0.0.1"], poll_interval_seconds=0.05)
    body = {"model": "sandbox-image", "size": "32x32", "sandbox_delay_ms": 300,
            "messages": [{"role": "user", "content": "a heron at dawn"}]}
    with serve(receiver.app()) as base, gateway.http() as client:
        accepted = client.post("/v1/chat/completions", json=body, headers={"Prefer": "respond-async"})
        assert accepted.status_code == 202, accepted.text
        task = accepted.json()
        assert task["polling_url"] == f"{gateway.base_url}/v1/chat/completions/{task['id']}"
        deadline = time.monotonic() + 15
        while (done := client.get(task["polling_url"])).status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.05)
        hooked = client.post("/v1/chat/completions", json={**body, "webhook": base + "/hook"})
        assert hooked.status_code == 202, hooked.text
        while not receiver.calls and time.monotonic() < deadline:
            time.sleep(0.05)
    assert done.status_code == 200, done.text
    completion = done.json()
    assert completion["object"] == "chat.completion" and completion["model"] == "sandbox-image"
    assert _decode(completion["choices"][0]["message"]["images"][0]["image_url"]["url"]).size == (32, 32)
    (headers, sent), = receiver.calls
    payload = json.loads(sent)
    assert payload["id"] == hooked.json()["id"] and payload["status"] == "succeeded"
    assert payload["result"]["object"] == "chat.completion"
    assert _decode(payload["result"]["choices"][0]["message"]["images"][0]["image_url"]["url"]).size == (32, 32)
