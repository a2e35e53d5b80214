"""POST /v1/responses with the image_generation tool, through the official openai SDK: the
image_generation_call items, input images, the follow-up rule, streaming events, billing and
allowlists."""

from __future__ import annotations

import base64
import io
from decimal import Decimal

import openai
import pytest
from PIL import Image

from tests.conftest import openai_error, png

RESPONSES = "/v1/responses"


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_a_text_model_with_the_tool_gets_an_image_generation_call(make_gateway):
    gateway = make_gateway(image_tool_model="sandbox-image")
    raw = gateway.sdk().responses.with_raw_response.create(
        model="gpt-4.1-mini", input="a red fox", tools=[{"type": "image_generation", "size": "96x64"}])
    response = raw.parse()
    assert response.object == "response" and response.status == "completed" and response.model == "gpt-4.1-mini"
    [call] = response.output
    assert call.type == "image_generation_call" and call.status == "completed" and call.id.startswith("ig_")
    assert _image(call.result).size == (96, 64)
    assert response.usage.total_tokens == 0
    row = gateway.log_row(raw.headers["x-request-id"])
    assert row["surface"] == "responses" and row["model"] == "sandbox-image"  # the image model made and bills it


def test_the_tool_model_or_an_image_model_as_model_makes_the_image(gateway):
    client = gateway.sdk()
    by_tool = client.responses.with_raw_response.create(
        model="gpt-5", input="a fox", tools=[{"type": "image_generation", "model": "sandbox-image", "size": "32x32"}])
    assert gateway.log_row(by_tool.headers["x-request-id"])["model"] == "sandbox-image"
    own = client.responses.create(model="sandbox-image", input="a fox", extra_body={"size": "48x32"})
    assert _image(own.output[0].result).size == (48, 32)
    # gpt-image-2 is the default, and this gateway serves only the sandbox
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-5", input="a fox", tools=[{"type": "image_generation"}])


def test_input_image_parts_make_an_edit_and_an_earlier_call_is_edited_by_a_follow_up(gateway):
    client = gateway.sdk()
    red = "data:image/png;base64," + base64.b64encode(png(40, 30, colour=(230, 0, 0))).decode()
    edited = client.responses.create(model="sandbox-image", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "keep it"}, {"type": "input_image", "image_url": red}]}])
    image = _image(edited.output[0].result)
    assert image.size == (40, 30) and image.convert("RGB").getpixel((2, 2)) == (230, 0, 0)
    follow = client.responses.with_raw_response.create(model="sandbox-image", input=[
        {"role": "user", "content": "keep it"}, {"type": "image_generation_call", "id": edited.output[0].id,
                                                 "result": edited.output[0].result},
        {"role": "user", "content": [{"type": "input_text", "text": "now darker"}]}])
    assert gateway.log_row(follow.headers["x-request-id"])["operation"] == "edit"
    assert _image(follow.parse().output[0].result).size == (40, 30)


def test_stream_events_through_the_sdk(gateway):
    events = list(gateway.sdk().responses.create(
        model="sandbox-image", input="a fox", stream=True,
        tools=[{"type": "image_generation", "partial_images": 2, "size": "64x64"}]))
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.image_generation_call.in_progress", "response.image_generation_call.generating"]
    partials = [e for e in events if e.type == "response.image_generation_call.partial_image"]
    assert [p.partial_image_index for p in partials] == [0, 1] and _image(partials[0].partial_image_b64)
    done = next(e for e in events if e.type == "response.output_item.done")
    assert _image(done.item.result).size == (64, 64)
    assert kinds[-1] == "response.completed" and events[-1].response.output[0].result == done.item.result
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_a_failing_stream_ends_with_error_and_response_failed(gateway):
    events = list(gateway.sdk().responses.create(
        model="sandbox-image", input="a fox", stream=True, extra_body={"sandbox_fail": "bad_response"}))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"


def test_billing_allowlist_and_refusals(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "0.25")
    account_id, key = gateway.paying_key("1.00", )
    raw = gateway.sdk(key).responses.with_raw_response.create(model="sandbox-image", input="a fox")
    assert raw.headers["x-pixelgate-cost"] == "0.25"
    with gateway.http() as admin:
        assert Decimal(admin.get(f"/admin/accounts/{account_id}").json()["spent"]) == Decimal("0.25")
    limited = gateway.create_key(allowed_models=["sandbox-image"])
    with pytest.raises(openai.PermissionDeniedError) as refused:  # the named model must be the key's too
        gateway.sdk(limited).responses.create(model="gpt-5", input="x",
                                              tools=[{"type": "image_generation", "model": "sandbox-image"}])
    assert refused.value.body["param"] == "model"
    with gateway.http() as client:
        for body, param in (({"tools": [{"type": "web_search"}]}, "tools[0].type"),
                            ({"background": True, "stream": True}, "background"),
                            ({"background": "yes"}, "background"),
                            ({"previous_response_id": "resp_1"}, "previous_response_id"),
                            ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
                             "input[0].content[0].image_url"),
                            ({"input": [{"role": "assistant", "content": "x"}]}, "input"),
                            ({"tools": [{"type": "image_generation", "quality": "ultra"}]}, "quality")):
            sent = {"model": "sandbox-image", "input": "a fox", **body}
            openai_error(client.post(RESPONSES, json=sent), 400, param=param)


def test_background_responses_are_tasks_retrieved_as_openai_retrieves_them(make_gateway):
    """`background: true` (or Prefer: respond-async): the answer says queued at once, and
    responses.retrieve follows it to completed with its image_generation_call."""
    import time

    gateway = make_gateway(image_tool_model="sandbox-image", poll_interval_seconds=0.05)
    sdk = gateway.sdk()
    queued = sdk.responses.create(model="gpt-4.1-mini", input="a red fox", background=True,
                                  tools=[{"type": "image_generation", "size": "48x32"}],
                                  extra_body={"sandbox_delay_ms": 300})
    assert queued.status in ("queued", "in_progress") and queued.output == [] and queued.model == "gpt-4.1-mini"
    deadline = time.monotonic() + 15
    while (done := sdk.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert done.status == "completed" and done.id == queued.id
    [call] = done.output
    assert call.type == "image_generation_call" and _image(call.result).size == (48, 32)
    with gateway.http() as client:
        missing = client.get("/v1/responses/resp_task_000000000000000000000000")
    openai_error(missing, 404)
