"""DashScope (Qwen-Image): end to end through /v1/images/* against the strict emulator, plus a
few pure build/parse checks."""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image

from pixelgate.domain.images import read_image
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.errors import (InvalidRequest, UpstreamBadResponse, UpstreamContentFiltered, UpstreamError,
                              UpstreamRateLimited, UpstreamRejected, UpstreamUnavailable)
from pixelgate.providers.base import Channel, UpstreamReply
from pixelgate.providers.dashscope import DashScope
from tests.conftest import b64_images, mask_png, openai_error, png
from pixelgate.simulators.dashscope import DashScopeEmulatorState, create_app
from tests.emulators.server import emulated, serve

GEN, EDIT = "/v1/images/generations", "/v1/images/edits"
SYNC_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
ASYNC_PATH = "/api/v1/services/aigc/text2image/image-synthesis"
GENERATORS = ["qwen-image", "qwen-image-plus", "qwen-image-max", "qwen-image-async", "qwen-image-plus-async"]
EDITORS = ["qwen-image-edit", "qwen-image-edit-plus", "qwen-image-edit-max"]
ALL = GENERATORS + EDITORS


def channel(base: str, name: str = "dashscope", **fields) -> dict:
    return {"name": name, "provider": "dashscope", "base_url": base, "api_key": "sk-dashscope-emulator",
            "models": ALL, **fields}


@pytest.fixture
def upstream():
    with emulated(create_app, DashScopeEmulatorState(), "/api/v1") as up:
        yield up


@pytest.fixture
def qwen(make_gateway, upstream):
    state, base = upstream
    return make_gateway(channels=[channel(base)]), state


def _gen(client, **fields):
    return client.post(GEN, json={"model": "qwen-image", "prompt": "a lighthouse", "response_format": "b64_json",
                                  **fields})


def _edit(client, images: list[bytes], mask: bytes | None = None, **fields):
    files = [("image[]", (f"i{i}.png", data, "image/png")) for i, data in enumerate(images)]
    if mask is not None:
        files.append(("mask", ("m.png", mask, "image/png")))
    data = {"model": "qwen-image-edit", "prompt": "make it blue", "response_format": "b64_json",
            **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}}
    return client.post(EDIT, data=data, files=files)


# -- the catalog --

def test_every_generation_model_on_its_endpoint(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        for model in GENERATORS:
            state.requests.clear()
            [img] = b64_images(_gen(client, model=model))
            assert img.size == (1328, 1328)  # the source document's default 1024*1024, nearest
            api = state.api_requests
            upstream_model = model.removesuffix("-async")
            if model.endswith("-async"):
                assert api[0].path == ASYNC_PATH and api[0].headers["x-dashscope-async"] == "enable"
                assert api[0].body["input"] == {"prompt": "a lighthouse"}
                assert len(api) >= 2 and all(r.path.startswith("/api/v1/tasks/") for r in api[1:])
            else:
                assert [r.path for r in api] == [SYNC_PATH] and "x-dashscope-async" not in api[0].headers
                assert api[0].body["input"]["messages"] == [{"role": "user", "content": [{"text": "a lighthouse"}]}]
            assert api[0].body["model"] == upstream_model
            assert api[0].headers["authorization"] == "Bearer sk-dashscope-emulator"
            # watermark: the source document's default (true); prompt_extend: off unless asked
            assert api[0].body["parameters"] == {"n": 1, "watermark": True, "size": "1328*1328",
                                                 "prompt_extend": False}


def test_every_edit_model(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        for model in EDITORS:
            state.requests.clear()
            [img] = b64_images(_edit(client, [png(96, 64)], model=model))
            assert img.size == (1248, 832)  # no size: the input's 3:2 at about 1024*1024
            sent = state.api_requests[0].body
            assert sent["model"] == model
            assert "size" not in sent["parameters"]
            assert ("prompt_extend" in sent["parameters"]) == (model != "qwen-image-edit")


def test_models_are_listed(qwen):
    gateway, _ = qwen
    with gateway.http() as client:
        listed = {m["id"]: m["owned_by"] for m in client.get("/v1/models").json()["data"]}
    assert all(listed[m] == "dashscope" for m in ALL)


# -- the source document's example --

def test_source_document_example_succeeds(qwen):
    gateway, state = qwen
    body = {"model": "qwen-image", "prompt": "A beautiful sunset over a calm ocean", "refer_image": "", "n": 1,
            "size": "1024x1024", "watermark": False}
    with gateway.http() as client:
        resp = client.post(GEN, json=body)
        assert resp.status_code == 200, resp.text
        url = resp.json()["data"][0]["url"]
        assert url.startswith(gateway.base_url + "/files/")
        assert Image.open(io.BytesIO(client.get(url).content)).size == (1328, 1328)
    sent = state.api_requests[0].body
    assert sent["parameters"] == {"n": 1, "watermark": False, "size": "1328*1328", "prompt_extend": False}
    assert "refer_image" not in str(sent)


def test_source_document_example_through_predictions(qwen):
    gateway, state = qwen
    body = {"input": {"prompt": "A beautiful sunset over a calm ocean", "refer_image": "", "n": 1,
                      "size": "1024x1024", "watermark": False}}
    with gateway.http() as client:
        resp = client.post("/models/qianfan/qwen-image/predictions", json=body)  # the document's own path
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["status"] == "succeeded" and len(out["output"]) == 1
        assert Image.open(io.BytesIO(client.get(out["output"][0]["url"]).content)).size == (1328, 1328)
    assert state.api_requests[0].body["parameters"]["watermark"] is False


def test_async_model_is_a_task_on_predictions(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        resp = client.post("/models/qwen/qwen-image-async/predictions", json={"input": {"prompt": "a kite"}})
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["id"]
        deadline = time.monotonic() + 10
        while (task := client.get(f"/tasks/{task_id}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, task
            time.sleep(0.05)
    assert task["status"] == "succeeded" and len(task["output"]) == 1
    assert state.api_requests[0].path == ASYNC_PATH


# -- sizes --

FIXED_CASES = [
    ("1024x1024", "1328*1328"), ("1024*1024", "1328*1328"), ("512*1024", "928*1664"), ("768*512", "1472*1104"),
    ("768*1024", "1104*1472"), ("1024*576", "1664*928"), ("576*1024", "928*1664"), ("auto", "1328*1328"),
    ("1664*928", "1664*928"), ("16:9", "1664*928"), ("16x9", "1664*928"), ("ASPECT_9_16", "928*1664"),
    ("4:3", "1472*1104"), ("2K", "1328*1328"), ("1K", "1328*1328")]


def test_fixed_size_models_take_the_nearest_size(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        for asked, sent in FIXED_CASES:
            state.requests.clear()
            [img] = b64_images(_gen(client, size=asked))
            assert state.api_requests[0].body["parameters"]["size"] == sent, asked
            assert img.size == tuple(int(v) for v in sent.split("*")), asked


def test_ranged_edit_sizes(qwen):
    gateway, state = qwen
    cases = [("1024x1536", "1024*1536"), ("4096x2048", "2048*1024"), ("300x300", "512*512"),
             ("2K", "2048*2048"), ("4K", "2048*2048"), ("16:9", "1360*768"), ("auto", None)]
    with gateway.http() as client:
        for asked, sent in cases:
            state.requests.clear()
            [img] = b64_images(_edit(client, [png(64, 64)], model="qwen-image-edit-plus", size=asked))
            assert state.api_requests[0].body["parameters"].get("size") == sent, asked
            assert img.size == (tuple(int(v) for v in sent.split("*")) if sent else (1024, 1024))


def test_size_is_dropped_for_qwen_image_edit(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        [img] = b64_images(_edit(client, [png(64, 128)], size="1024*1024"))
    assert "size" not in state.api_requests[0].body["parameters"]
    assert img.size == (720, 1456)  # the input's 1:2 at about 1 MP


@pytest.mark.parametrize("model, size", [("qwen-image", "4:1"), ("qwen-image", "100x1000"),
                                         ("qwen-image-async", "1:3"), ("qwen-image", "huge")])
def test_impossible_size_is_refused_before_any_call(qwen, model, size):
    gateway, state = qwen
    with gateway.http() as client:
        err = openai_error(_gen(client, model=model, size=size), 400, param="size")
    assert "1664*928" in err["message"] or "WIDTHxHEIGHT" in err["message"]
    assert state.requests == []


def test_impossible_edit_size_is_refused(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        err = openai_error(_edit(client, [png()], model="qwen-image-edit-plus", size="5000x500"), 400, param="size")
    assert "512 and 2048" in err["message"] and state.requests == []


# -- n --

def test_n_fans_out_one_image_per_call(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        images = b64_images(_gen(client, n=3, seed=41))
    assert len(images) == 3
    params = [r.body["parameters"] for r in state.api_requests]
    assert [p["n"] for p in params] == [1, 1, 1]
    assert sorted(p["seed"] for p in params) == [41, 42, 43]
    assert len({img.getpixel((0, 0)) for img in images}) == 3  # three different pictures


def test_n_fans_out_by_six_on_edit_plus(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        images = b64_images(_edit(client, [png()], model="qwen-image-edit-plus", n=8))
    assert len(images) == 8
    assert sorted(r.body["parameters"]["n"] for r in state.api_requests) == [2, 6]


def test_n_above_ten_is_refused(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        openai_error(_gen(client, n=11), 400, param="n")
    assert state.requests == []


def test_async_alias_fans_out_too(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        assert len(b64_images(_gen(client, model="qwen-image-plus-async", n=2))) == 2
    assert [r.body["parameters"]["n"] for r in state.api_requests if r.path == ASYNC_PATH] == [1, 1]


# -- options --

def test_options_pass_through(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        resp = _gen(client, model="qwen-image-plus", seed=7, watermark=False, prompt_extend=True,
                    negative_prompt="blurry", size="4:3")
        assert resp.status_code == 200, resp.text
    assert state.api_requests[0].body["parameters"] == {
        "n": 1, "watermark": False, "size": "1472*1104", "prompt_extend": True, "seed": 7, "negative_prompt": "blurry"}


BAD_OPTIONS = [
    ({"guidance": 7.5}, "guidance"), ({"safety_tolerance": 2}, "safety_tolerance"),
    ({"watermark": "perhaps"}, "watermark"), ({"seed": -1}, "seed"), ({"seed": 2147483648}, "seed"),
    ({"negative_prompt": "x" * 501}, "negative_prompt"), ({"refer_image": "https://example.com/a.png"}, "refer_image"),
    ({"prompt": "p" * 801}, "prompt"), ({"quality": "ultra"}, "quality"), ({"style": "vivid"}, "style")]


def test_bad_options_are_refused_before_any_call(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        for model in ("qwen-image", "qwen-image-async"):
            for fields, param in BAD_OPTIONS:
                openai_error(_gen(client, model=model, **fields), 400, param=param)
    assert state.requests == []


def test_quality_is_accepted_and_not_sent(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        b64_images(_gen(client, quality="high"))
    assert "quality" not in str(state.api_requests[0].body)


def test_seed_in_range_boundaries_pass(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        b64_images(_gen(client, seed=0))
        b64_images(_gen(client, seed=2147483647))
    assert [r.body["parameters"]["seed"] for r in state.api_requests] == [0, 2147483647]


# -- edits --

def test_edit_sends_images_first_as_data_urls(qwen):
    gateway, state = qwen
    jpeg = io.BytesIO()
    Image.new("RGB", (80, 40), (1, 2, 3)).save(jpeg, "JPEG")
    with gateway.http() as client:
        [img] = b64_images(_edit(client, [png(64, 64), jpeg.getvalue()], model="qwen-image-edit-max",
                              prompt="put image 2 on image 1", negative_prompt="text"))
    assert img.size == (1456, 720)  # the last input's 2:1 at about 1 MP
    sent = state.api_requests[0].body
    content = sent["input"]["messages"][0]["content"]
    assert content[0]["image"]["mime"] == "image/png" and content[0]["image"]["width"] == 64
    assert content[1]["image"]["mime"] == "image/jpeg" and content[1]["image"]["width"] == 80
    assert content[2] == {"text": "put image 2 on image 1"}
    assert sent["parameters"]["negative_prompt"] == "text"


def test_mask_is_refused_naming_mask(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        for model in EDITORS:
            err = openai_error(_edit(client, [png()], mask=mask_png(), model=model), 400, param="mask")
            assert "instruction" in err["message"]
    assert state.requests == []


def test_edit_limits(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        openai_error(_edit(client, [png()] * 4), 400, param="image")
        openai_error(_edit(client, [png()], prompt_extend=True), 400, param="prompt_extend")  # not on qwen-image-edit
        openai_error(client.post(GEN, json={"model": "qwen-image-edit", "prompt": "x"}), 400, param="model")
        openai_error(_edit(client, [png()], model="qwen-image"), 400, param="model")
    assert state.requests == []


# -- asynchronous tasks --

def test_async_task_is_polled_until_it_succeeds(qwen):
    gateway, state = qwen
    state.pending_seconds = 1.0  # polled several times however loaded the machine is
    with gateway.http() as client:
        resp = _gen(client, model="qwen-image-async", prompt_extend=True)
        [img] = b64_images(resp)
    assert img.size == (1328, 1328)
    polls = [r for r in state.api_requests if r.path.startswith("/api/v1/tasks/")]
    assert len(polls) >= 3  # PENDING, RUNNING, ..., SUCCEEDED
    assert polls[0].headers["authorization"] == "Bearer sk-dashscope-emulator"
    assert resp.json()["data"][0]["revised_prompt"] == "a lighthouse, richly detailed"  # actual_prompt


@pytest.mark.parametrize("status, code", [("FAILED", "InternalError.Algo"), ("CANCELED", ""), ("UNKNOWN", "")])
def test_async_task_failures(qwen, status, code):
    gateway, state = qwen
    state.fail_task_next(status=status, code=code)
    with gateway.http() as client:
        err = openai_error(_gen(client, model="qwen-image-async"), 502, code="upstream_job_failed")
    assert status in err["message"] and (code in err["message"] or status != "FAILED")
    if status == "UNKNOWN":
        assert "unknown or expired" in err["message"]


def test_async_task_failure_is_not_retried_elsewhere(make_gateway):
    a, b = DashScopeEmulatorState(), DashScopeEmulatorState()
    with serve(create_app(a)) as base_a, serve(create_app(b)) as base_b:
        gateway = make_gateway(channels=[channel(base_a + "/api/v1", "first", priority=10),
                                         channel(base_b + "/api/v1", "second")])
        a.fail_task_next()
        with gateway.http() as client:
            resp = _gen(client, model="qwen-image-async")
        openai_error(resp, 502, code="upstream_job_failed")
        assert b.requests == []  # the job was accepted: resubmitting would be paid twice


def test_async_moderation_arrives_in_a_200_task(qwen):
    gateway, state = qwen
    with gateway.http() as client:
        openai_error(_gen(client, model="qwen-image-async", prompt="something forbidden"),
                     400, code="content_policy_violation")
    assert state.api_requests[0].path == ASYNC_PATH  # accepted, then FAILED on a poll


def test_poll_hiccup_keeps_polling(qwen):
    gateway, state = qwen
    state.fail_next(503, path="/tasks/", count=2)
    with gateway.http() as client:
        b64_images(_gen(client, model="qwen-image-async"))
    assert not state.failures


# -- errors --

def test_moderation_is_a_content_policy_violation(qwen):
    gateway, _ = qwen
    with gateway.http() as client:
        err = openai_error(_gen(client, prompt="a forbidden thing"), 400, code="content_policy_violation")
    assert "DataInspectionFailed" in err["message"]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_failover_when_nothing_was_accepted(make_gateway, status):
    a, b = DashScopeEmulatorState(), DashScopeEmulatorState()
    with serve(create_app(a)) as base_a, serve(create_app(b)) as base_b:
        gateway = make_gateway(channels=[channel(base_a + "/api/v1", "first", priority=10),
                                         channel(base_b + "/api/v1", "second")])
        a.fail_next(status)
        with gateway.http() as client:
            resp = _gen(client)
            b64_images(resp)
        row = gateway.log_row(resp.headers["x-request-id"])
    assert row["channel"] == "second" and [x["channel"] for x in row["attempts"]] == ["first", "second"]


def test_upstream_5xx_alone_is_a_502(qwen):
    gateway, state = qwen
    state.fail_next(500)
    with gateway.http() as client:
        err = openai_error(_gen(client), 502, code="upstream_unavailable")
    assert "InternalError" in err["message"]


def test_rate_limit_alone_is_a_429(qwen):
    gateway, state = qwen
    state.fail_next(429)
    with gateway.http() as client:
        openai_error(_gen(client), 429, code="upstream_rate_limited")


def test_bad_channel_key(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[channel(base, api_key="sk-wrong")])
    with gateway.http() as client:
        openai_error(_gen(client), 502, code="upstream_auth_failed")
    assert len(state.api_requests) == 1


def test_vendor_rejection_is_a_400(qwen):
    gateway, state = qwen
    state.fail_next(400, {"code": "InvalidParameter", "message": "size must be one of 1664*928"})
    with gateway.http() as client:
        err = openai_error(_gen(client), 400, code="upstream_rejected")
    assert "InvalidParameter" in err["message"]


@pytest.mark.parametrize("body, status, code", [
    ({"code": "DataInspectionFailed", "message": "Input data may contain inappropriate content."}, 400,
     "content_policy_violation"),
    ({"code": "InternalError.Algo", "message": "boom"}, 502, "upstream_unavailable"),
    ({"output": {"choices": [{"message": {"content": [{"text": "no picture"}]}}]}}, 502, "upstream_bad_response"),
    ({"output": {"choices": []}}, 502, "upstream_bad_response")])
def test_errors_inside_200_bodies(qwen, body, status, code):
    gateway, state = qwen
    state.fail_next(200, body)
    with gateway.http() as client:
        openai_error(_gen(client), status, code=code)


# -- pure build / parse --

def _req(**fields) -> ImageRequest:
    return ImageRequest(**{"operation": Operation.GENERATE, "model": "qwen-image", "prompt": "p", **fields})


CH = Channel("c", "dashscope", "http://up/api/v1/", "k", ("qwen-image",), {})


def test_build_async_and_snapshot_names():
    call = DashScope().build(_req(model="qwen-image-plus-async", size="1:1"), "qwen-image-plus-async", CH)
    assert call.url == "http://up/api/v1/services/aigc/text2image/image-synthesis"
    assert call.headers == {"Authorization": "Bearer k", "X-DashScope-Async": "enable"}
    assert call.json["model"] == "qwen-image-plus" and call.json["parameters"]["size"] == "1328*1328"
    # a channel's model_map to a dated snapshot: sent under that name, behaving as the public model
    call = DashScope().build(_req(), "qwen-image-2025-08-01", CH)
    assert call.json["model"] == "qwen-image-2025-08-01" and call.url.endswith("/multimodal-generation/generation")
    with pytest.raises(UpstreamUnavailable):
        DashScope().build(_req(model="dall-e-3"), "dall-e-3", CH)


def test_build_refuses_mask_and_bad_seed():
    image = read_image(png(), "image")
    with pytest.raises(InvalidRequest) as exc:
        DashScope().build(_req(operation=Operation.EDIT, model="qwen-image-edit", images=[image],
                               mask=read_image(mask_png(), "mask")), "qwen-image-edit", CH)
    assert exc.value.field == "mask"
    with pytest.raises(InvalidRequest) as exc:
        DashScope().build(_req(seed=-5), "qwen-image", CH)
    assert exc.value.field == "seed"


def _reply(body, status: int = 200) -> UpstreamReply:
    return UpstreamReply(status, {}, payload=body)


@pytest.mark.parametrize("status, body, cls, field", [
    (400, {"code": "DataInspectionFailed", "message": "m"}, UpstreamContentFiltered, None),
    (400, {"code": "data_inspection_failed", "message": "m"}, UpstreamContentFiltered, None),
    (400, {"code": "InvalidParameter", "message": "m"}, UpstreamRejected, None),
    (400, {"code": "InvalidURL", "message": "m"}, UpstreamRejected, "image"),
    (413, {"code": "BadRequest.TooLarge", "message": "m"}, UpstreamRejected, "image"),
    (400, {"code": "Arrearage", "message": "m"}, UpstreamUnavailable, None),
    (401, {"code": "InvalidApiKey", "message": "m"}, UpstreamUnavailable, None),
    (403, {"code": "AccessDenied.Unpurchased", "message": "m"}, UpstreamUnavailable, None),
    (404, {"code": "ModelNotFound", "message": "m"}, UpstreamUnavailable, None),
    (429, {"code": "Throttling.AllocationQuota", "message": "m"}, UpstreamRateLimited, None),
    (500, {"code": "InternalError", "message": "m"}, UpstreamUnavailable, None),
    (502, {}, UpstreamUnavailable, None)])
def test_parse_error_classes(status, body, cls, field):
    err = DashScope().parse_error(_reply(body, status))
    assert type(err) is cls and err.field == field
    assert err.retry_elsewhere == (cls in (UpstreamUnavailable, UpstreamRateLimited))


def test_parse_poll_statuses():
    p = DashScope()
    assert p.parse_poll(_req(), _reply({"output": {"task_id": "t", "task_status": "RUNNING"}})).progress == 0.5
    done = p.parse_poll(_req(), _reply({"output": {"task_status": "SUCCEEDED", "results": [
        {"url": "http://x/a.png"}, {"code": "DataInspectionFailed", "message": "m"}]}}))
    assert [i.url for i in done.images] == ["http://x/a.png"] and "1 of 2" in done.meta["partial"]
    with pytest.raises(UpstreamContentFiltered):
        p.parse_poll(_req(), _reply({"output": {"task_status": "SUCCEEDED", "results": [
            {"code": "DataInspectionFailed", "message": "m"}]}}))
    with pytest.raises(UpstreamError) as exc:
        p.parse_poll(_req(), _reply({"output": {"task_status": "FAILED", "code": "InternalError.Algo",
                                                "message": "boom"}}))
    assert exc.value.code == "upstream_job_failed" and "boom" in exc.value.message
    with pytest.raises(UpstreamBadResponse):
        p.parse_poll(_req(), _reply({"output": {"task_status": "SUCCEEDED"}}))


def test_parse_sync_reply_keeps_text_as_revised_prompt():
    body = {"output": {"choices": [{"message": {"content": [{"image": "http://x/1.png"}, {"image": "http://x/2.png"},
                                                            {"text": "rewritten"}]}}]}}
    done = DashScope().parse(_req(), _reply(body))
    assert [i.url for i in done.images] == ["http://x/1.png", "http://x/2.png"]
    assert {i.revised_prompt for i in done.images} == {"rewritten"}


# -- Qwen-Image 2.0 --

def test_qwen_image_2_generates_any_size_in_range_and_edits(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[channel(base, models=["qwen-image-2.0", "qwen-image-2.0-pro"])])
    with gateway.http() as client:
        wide = b64_images(_gen(client, model="qwen-image-2.0", size="2048x1152", n=8))
        sent = [r.body["parameters"] for r in state.api_requests]
        too_big = _gen(client, model="qwen-image-2.0-pro", size="2560x2048")
        state.requests.clear()
        files = [("image[]", (f"i{i}.png", png(64 + i, 64), "image/png")) for i in range(2)]
        edited = client.post(EDIT, files=files, data={"model": "qwen-image-2.0-pro", "prompt": "make it blue",
                                                      "response_format": "b64_json"})
    assert len(wide) == 8 and {i.size for i in wide} == {(2048, 1152)}
    assert sorted(p["n"] for p in sent) == [2, 6] and {p["size"] for p in sent} == {"2048*1152"}  # 6 a call
    assert openai_error(too_big, 400, param="size")
    assert edited.status_code == 200, edited.text
    [content] = [r.body["input"]["messages"][0]["content"] for r in state.api_requests]
    assert [list(part) for part in content] == [["image"], ["image"], ["text"]]


# -- Wan 2.7 Image and Qwen-Image 3.0 --

WAN = ["wan2.7-image", "wan2.7-image-pro"]


def _direct(state: DashScopeEmulatorState | None = None):
    """The emulator in-process, for what the gateway would never send."""
    from starlette.testclient import TestClient
    return TestClient(create_app(state or DashScopeEmulatorState()), base_url="http://dashscope.test")


def _sync_body(model: str, parameters: dict, images: int = 0, text_first: bool = False) -> dict:
    pictures = [{"image": f"data:image/png;base64,{base64.b64encode(png(64, 48)).decode()}"}] * images
    text = [{"text": "a lighthouse"}]
    content = text + pictures if text_first else pictures + text
    return {"model": model, "input": {"messages": [{"role": "user", "content": content}]}, "parameters": parameters}


def _post_sync(client, body: dict):
    return client.post(SYNC_PATH, json=body, headers={"Authorization": "Bearer sk-dashscope-emulator"})


def test_wan_2_7_generates_and_edits_with_its_tiers(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[channel(base, models=WAN)])
    with gateway.http() as client:
        tier = b64_images(_gen(client, model="wan2.7-image", size="2K", n=6, thinking_mode=False))
        sent = [r.body["parameters"] for r in state.api_requests]
        state.requests.clear()
        four_k = _gen(client, model="wan2.7-image", size="4K")  # its largest is 2K
        files = [("image[]", (f"i{i}.png", png(96, 64), "image/png")) for i in range(5)]
        edited = client.post(EDIT, files=files, data={"model": "wan2.7-image-pro", "prompt": "make it blue",
                                                      "size": "4K", "response_format": "b64_json"})
        sent_after = [r.body for r in state.api_requests]
        too_big_edit = client.post(EDIT, files=files[:1], data={"model": "wan2.7-image-pro", "prompt": "x",
                                                                "size": "3000x3000"})
        negative = _gen(client, model="wan2.7-image", negative_prompt="blur")
        long_prompt = _gen(client, model="wan2.7-image", prompt="x" * 5001)
    assert len(tier) == 6 and {i.size for i in tier} == {(2048, 2048)}
    assert sorted(p["n"] for p in sent) == [2, 4]  # four a call
    assert all(p["size"] == "2K" and p["thinking_mode"] is False and "prompt_extend" not in p for p in sent)
    assert four_k.status_code == 200 and sent_after[0]["parameters"]["size"] == "2K"
    [edit_images] = b64_images(edited)
    assert edit_images.size == (2512, 1680)  # 2K pixels at the last input's 3:2
    content = sent_after[1]["input"]["messages"][0]["content"]
    assert [list(part) for part in content] == [["image"]] * 5 + [["text"]]
    assert sent_after[1]["parameters"]["size"] == "2K"  # 4K is for text to image only
    assert openai_error(too_big_edit, 400, param="size")
    assert negative.status_code == 400 and "negative_prompt" in negative.text
    assert openai_error(long_prompt, 400, param="prompt")
    assert len(state.api_requests) == 2  # nothing refused reached DashScope


def test_wan_2_7_pro_makes_4k_from_text(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[channel(base, models=WAN)])
    with gateway.http() as client:
        [image] = b64_images(_gen(client, model="wan2.7-image-pro", size="4K"))
        [wide] = b64_images(_gen(client, model="wan2.7-image-pro", size="16:9"))
    assert image.size == (4096, 4096)
    assert wide.size == (2720, 1520)  # a ratio gets about 2K pixels
    assert [r.body["parameters"]["size"] for r in state.api_requests] == ["4K", "2720*1520"]


def test_qwen_image_3_takes_up_to_2560_squared_at_1_8(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[channel(base, models=["qwen-image-3.0", "qwen-image-3.0-pro"])])
    with gateway.http() as client:
        big = b64_images(_gen(client, model="qwen-image-3.0-pro", size="2560x2560", n=6))
        tall = _gen(client, model="qwen-image-3.0", size="320x2560")
        over = _gen(client, model="qwen-image-3.0", size="2576x2576")
        thin = _gen(client, model="qwen-image-3.0", size="256x2560")
        files = [("image[]", (f"i{i}.png", png(64, 64), "image/png")) for i in range(4)]
        four = client.post(EDIT, files=files, data={"model": "qwen-image-3.0", "prompt": "make it blue"})
    assert len(big) == 6 and big[0].size == (2560, 2560)
    assert [r.body["parameters"]["n"] for r in state.api_requests] == [6, 1]  # six a call
    assert tall.status_code == 200, tall.text
    assert openai_error(over, 400, param="size") and openai_error(thin, 400, param="size")
    assert four.status_code == 400  # at most 3 input images
    assert len(state.api_requests) == 2


@pytest.mark.parametrize("model,parameters,images,ok", [
    ("wan2.7-image", {"size": "2K", "n": 4}, 0, True),
    ("wan2.7-image", {"size": "4K"}, 0, False),  # 4K: -pro only
    ("wan2.7-image-pro", {"size": "4K"}, 0, True),
    ("wan2.7-image-pro", {"size": "4K"}, 1, False),  # ... and text to image only
    ("wan2.7-image-pro", {"size": "4096*4096"}, 0, True),
    ("wan2.7-image-pro", {"size": "2048*2064"}, 1, False),
    ("wan2.7-image-pro", {"size": "4K", "enable_sequential": True}, 0, False),
    ("wan2.7-image", {"size": "700*700"}, 0, False),  # under 768*768
    ("wan2.7-image", {"size": "2400*300"}, 0, True),  # 8:1
    ("wan2.7-image", {"size": "2400*290"}, 0, False),
    ("wan2.7-image", {"size": "2048x2048"}, 0, False),  # DashScope writes W*H
    ("wan2.7-image", {"n": 5}, 0, False),
    ("wan2.7-image", {"n": 12, "enable_sequential": True}, 0, True),
    ("wan2.7-image", {"negative_prompt": "blur"}, 0, False),
    ("wan2.7-image", {"thinking_mode": "yes"}, 0, False),
    ("wan2.7-image", {}, 9, True),
    ("wan2.7-image", {}, 10, False),
    ("qwen-image-3.0", {"size": "2560*2560", "n": 6}, 3, True),
    ("qwen-image-3.0", {"size": "2576*2560"}, 0, False),
    ("qwen-image-3.0", {"size": "2560*300"}, 0, False),
    ("qwen-image-3.0", {"prompt_extend_mode": "agent"}, 0, True),
    ("qwen-image-3.0", {"prompt_extend_mode": "agent"}, 1, False),
    ("qwen-image-3.0-pro", {"n": 7}, 0, False),
])
def test_emulator_takes_the_new_models_as_documented(model, parameters, images, ok):
    with _direct() as client:
        resp = _post_sync(client, _sync_body(model, parameters, images))
    assert (resp.status_code == 200) is ok, resp.text
    if not ok:
        assert resp.json()["code"] == "InvalidParameter"


def test_emulator_takes_wan_text_anywhere_and_qwen_text_last():
    with _direct() as client:
        wan = _post_sync(client, _sync_body("wan2.7-image", {}, 2, text_first=True))
        qwen = _post_sync(client, _sync_body("qwen-image-3.0", {}, 2, text_first=True))
    assert wan.status_code == 200, wan.text
    assert qwen.status_code == 400 and "before the text" in qwen.json()["message"]


def test_emulator_refuses_a_shut_down_model_from_its_date(monkeypatch):
    from datetime import date

    from pixelgate.simulators import dashscope as emulator
    monkeypatch.setitem(emulator.SHUTDOWN, "qwen-image", date(2026, 3, 1))
    before, after = DashScopeEmulatorState(today=date(2026, 2, 28)), DashScopeEmulatorState(today=date(2026, 3, 1))
    with _direct(before) as client:
        served = _post_sync(client, _sync_body("qwen-image", {}))
    with _direct(after) as client:
        gone = _post_sync(client, _sync_body("qwen-image", {}))
        task = client.post(ASYNC_PATH, json={"model": "qwen-image", "input": {"prompt": "x"}},
                           headers={"Authorization": "Bearer sk-dashscope-emulator", "X-DashScope-Async": "enable"})
    assert served.status_code == 200, served.text
    assert gone.status_code == 404 and gone.json()["code"] == "ModelNotFound"
    assert task.status_code == 404 and task.json()["code"] == "ModelNotFound"
