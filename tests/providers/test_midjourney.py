"""Midjourney through a midjourney-proxy: imagine via the OpenAI surface (submit, poll, grid),
size -> --ar, errors in HTTP 200 bodies and task failures; plus the emulator's /mj contract
that the later /mj surface builds on."""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.domain.result import Finished, Pending, Submitted
from pixelgate.errors import (UpstreamBadResponse, UpstreamContentFiltered, UpstreamError,
                              UpstreamRateLimited, UpstreamRejected, UpstreamUnavailable)
from pixelgate.providers.base import Channel, UpstreamReply
from pixelgate.providers.midjourney import Midjourney
from tests.conftest import mask_png, png
from pixelgate.simulators.midjourney import MidjourneyEmulatorState, create_app
from tests.emulators.server import emulated, serve

GEN, EDITS = "/v1/images/generations", "/v1/images/edits"
SECRET = "mj-emulator-secret"
PROVIDER = Midjourney()


def mj_channel(base: str, name: str = "mj", key: str | None = SECRET, **fields) -> dict:
    return {"name": name, "provider": "midjourney", "base_url": base, "api_key": key,
            "models": ["midjourney", "mj"], **fields}


@pytest.fixture
def upstream():
    with emulated(create_app, MidjourneyEmulatorState(duration=0.15)) as up:
        yield up


@pytest.fixture
def mj(make_gateway, upstream):
    state, base = upstream
    return make_gateway(channels=[mj_channel(base)], async_wait_seconds=5), state


def _submits(state) -> list[dict]:
    return [r.json for r in state.requests if r.path.endswith("/submit/imagine")]


def _fetches(state) -> list:
    return [r for r in state.requests if r.path.endswith("/fetch")]


def _image(item: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))


def _gen(client, **fields):
    return client.post(GEN, json={"model": "midjourney", "prompt": "a fox", "response_format": "b64_json",
                                  **fields})


def _error(resp, status: int, code: str, param: str | None = "__any__") -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code, err
    if param != "__any__":
        assert err["param"] == param, err
    return err


# -- through the gateway --

@pytest.mark.parametrize("model", ["midjourney", "mj"])
def test_each_model_delivers_the_grid_as_one_image(mj, model):
    gateway, state = mj
    state.duration = 0.6  # long enough to be polled more than once however loaded the machine is
    with gateway.http() as client:
        resp = _gen(client, model=model)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert len(data) == 1 and data[0]["revised_prompt"] == "a fox"
    grid = _image(data[0]).convert("RGB")
    assert grid.size == (256, 256)  # 2x2 tiles of 128
    assert len({grid.getpixel((x, y)) for x in (100, 200) for y in (100, 200)}) == 4  # four candidates
    submit, *polls = state.requests
    assert (submit.method, submit.path, submit.json) == ("POST", "/mj/submit/imagine", {"prompt": "a fox"})
    assert submit.headers["mj-api-secret"] == SECRET
    assert len(polls) >= 2 and all(p.path == f"/mj/task/{polls[0].path.split('/')[3]}/fetch"
                                   and p.headers["mj-api-secret"] == SECRET for p in polls)


def test_url_delivery_is_rehosted_by_the_gateway(mj):
    gateway, state = mj
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "mj", "prompt": "a cute cat, anime style --ar 16:9 --v 6"})
        assert resp.status_code == 200, resp.text
        url = resp.json()["data"][0]["url"]
        assert url.startswith(gateway.base_url + "/files/")
        image = Image.open(io.BytesIO(client.get(url).content))
    assert image.size == (256, 144)  # the source document's example, its own --ar kept
    assert _submits(state) == [{"prompt": "a cute cat, anime style --ar 16:9 --v 6"}]


def test_size_becomes_an_aspect_flag(mj):
    gateway, state = mj
    cases = {"1024x1024": " --ar 1:1", "1792x1024": " --ar 7:4", "1536x1024": " --ar 3:2",
             "1024*576": " --ar 16:9", "16:9": " --ar 16:9", "16x9": " --ar 16:9",
             "ASPECT_9_16": " --ar 9:16", "32:18": " --ar 16:9", "2K": "", "auto": ""}
    with gateway.http() as client:
        for size, flag in cases.items():
            resp = _gen(client, size=size)
            assert resp.status_code == 200, (size, resp.text)
            assert _submits(state)[-1] == {"prompt": "a fox" + flag}, size
            if flag:
                w, h = map(int, flag.split()[-1].split(":"))
                grid = _image(resp.json()["data"][0])
                assert abs(grid.width / grid.height - w / h) < 0.02, size
        # the prompt's own ratio wins over size
        for prompt in ("a fox --ar 2:3", "a fox --aspect 2:3 --v 7"):
            assert _gen(client, prompt=prompt, size="1792x1024").status_code == 200
            assert _submits(state)[-1] == {"prompt": prompt}


def test_impossible_size_n_and_options_are_refused_before_any_upstream_call(mj):
    gateway, state = mj
    with gateway.http() as client:
        _error(_gen(client, size="huge"), 400, "invalid_value", "size")
        _error(_gen(client, n=2), 400, "invalid_value", "n")
        _error(_gen(client, notifyHook="http://example.com/hook"), 400, "unknown_parameter", "notifyHook")
        _error(_gen(client, botType="DALL_E"), 400, "invalid_value", "botType")
        _error(_gen(client, state="x" * 256), 400, "invalid_value", "state")
        _error(_gen(client, quality="hd"), 400, "unsupported_parameter", "quality")
        _error(_gen(client, seed=-1), 400, "invalid_value", "seed")
        _error(_gen(client, prompt="x" * 6001), 400, "string_above_max_length", "prompt")
    assert state.requests == []


def test_vendor_options_seed_and_output_format_pass_through(mj):
    gateway, state = mj
    with gateway.http() as client:
        resp = _gen(client, botType="NIJI_JOURNEY", state="req-123", seed=42, output_format="jpeg")
        assert resp.status_code == 200, resp.text
        assert _image(resp.json()["data"][0]).format == "JPEG"  # the engine converts the png grid
        assert _submits(state)[-1] == {"prompt": "a fox --seed 42", "botType": "NIJI_JOURNEY", "state": "req-123"}
        assert _gen(client, prompt="a fox --seed 7", seed=42, botType=None).status_code == 200
        assert _submits(state)[-1] == {"prompt": "a fox --seed 7"}


def test_edit_sends_image_prompts_as_data_urls(mj):
    gateway, state = mj
    first, second = png(40, 30, colour=(1, 2, 3)), io.BytesIO()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(second, "JPEG")
    with gateway.http() as client:
        resp = client.post(EDITS, data={"model": "midjourney", "prompt": "in this style", "size": "1536x1024",
                                        "response_format": "b64_json"},
                           files=[("image[]", ("a.png", first, "image/png")),
                                  ("image[]", ("b.jpg", second.getvalue(), "image/jpeg"))])
        assert resp.status_code == 200, resp.text
        sent = _submits(state)[-1]
        assert sent["prompt"] == "in this style --ar 3:2"
        assert sent["base64Array"] == ["data:image/png;base64," + base64.b64encode(first).decode(),
                                       "data:image/jpeg;base64," + base64.b64encode(second.getvalue()).decode()]
        count = len(state.requests)
        resp = client.post(EDITS, data={"model": "midjourney", "prompt": "x"},
                           files={"image": ("a.png", png(), "image/png"), "mask": ("m.png", mask_png(), "image/png")})
        _error(resp, 400, "unsupported_parameter", "mask")
        resp = client.post(EDITS, data={"model": "midjourney", "prompt": "x"},
                           files=[("image[]", (f"{i}.png", png(), "image/png")) for i in range(6)])
        _error(resp, 400, "invalid_value", "image")
    assert len(state.requests) == count


def test_business_codes_inside_http_200(mj):
    gateway, state = mj
    with gateway.http() as client:
        for code in (22, 21):  # queued, exists: both carry a task id and finish
            state.answer_next(code)
            assert _gen(client).status_code == 200
        state.answer_next(23)
        _error(_gen(client), 429, "upstream_rate_limited")
        state.answer_next(4)
        _error(_gen(client), 400, "upstream_rejected")
        state.answer_next(9)
        _error(_gen(client), 502, "upstream_unavailable")
        count = len(state.requests)
        err = _error(_gen(client, prompt="a forbidden fox"), 400, "content_policy_violation", "prompt")
        assert "forbidden" in err["message"]
    assert len(state.requests) == count + 1  # refused at submit: never polled


def test_task_failures(make_gateway, upstream):
    state, base = upstream
    other = MidjourneyEmulatorState()
    with serve(create_app(other)) as other_base:
        gateway = make_gateway(channels=[mj_channel(base, "first", priority=10), mj_channel(other_base, "second")],
                               async_wait_seconds=5)
        with gateway.http() as client:
            for reason, status, http, code in [
                    ("[Invalid parameter] Invalid value", "FAILURE", 400, "upstream_rejected"),
                    ("Banned prompt detected", "FAILURE", 400, "content_policy_violation"),
                    ("Job timed out after 600 s", "FAILURE", 502, "upstream_job_failed"),
                    ("取消任务", "CANCEL", 502, "upstream_job_failed")]:
                state.fail_next_task(reason, status=status)
                _error(_gen(client), http, code)
            submitted = len(state.requests)
            _error(_gen(client, prompt="a fox --ar wide"), 400, "invalid_value", "prompt")  # ours, first
            assert len(state.requests) == submitted
            for how in ("empty", "null", "204", "404"):  # the task vanishes while we poll
                state.vanish_next(how, after=0.05)
                err = _error(_gen(client), 502, "upstream_job_failed")
                assert "no longer knows the task" in err["message"]
    assert other.requests == []  # an accepted task is never resubmitted elsewhere


def test_failover_when_nothing_was_accepted(make_gateway, upstream):
    state, base = upstream
    other = MidjourneyEmulatorState(duration=0.1)
    with serve(create_app(other)) as other_base:
        gateway = make_gateway(channels=[mj_channel(base, "first", priority=10), mj_channel(other_base, "second")],
                               async_wait_seconds=5)
        with gateway.http() as client:
            for fail in (lambda: state.fail_next(503), lambda: state.answer_next(23)):
                fail()
                resp = _gen(client)
                assert resp.status_code == 200, resp.text
            rows = [r for r in gateway.requests_log() if r["status"] == 200]
    assert len(_submits(other)) == 2
    assert all([a["channel"] for a in r["attempts"]] == ["first", "second"] for r in rows)


def test_single_channel_errors(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[mj_channel(base, models=["midjourney"]),
                                     mj_channel(base, "wrong-key", key="nope", models=["mj"])], async_wait_seconds=5)
    with gateway.http() as client:
        state.fail_next(500)
        _error(_gen(client), 502, "upstream_unavailable")
        state.fail_next(502, path="/mj/task")  # a hiccup while polling: keep waiting
        assert _gen(client).status_code == 200
        _error(_gen(client, model="mj"), 502, "upstream_auth_failed")
        assert httpx.post(base + "/mj/submit/imagine", json={"prompt": "x"}).content == b""


def test_speed_mode_prefix_in_base_url(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[mj_channel(base + "/mj-relax/mj")], async_wait_seconds=5)
    with gateway.http() as client:
        assert _gen(client).status_code == 200
    assert state.requests[0].path == "/mj-relax/mj/submit/imagine"
    assert all(r.path.startswith("/mj-relax/mj/task/") for r in state.requests[1:])


def test_predictions_api_fans_n_out_to_one_task_per_grid(mj):
    gateway, state = mj
    with gateway.http() as client:
        resp = client.post("/models/midjourney/midjourney/predictions",
                           json={"input": {"prompt": "a fox", "n": 2, "size": "16:9", "seed": 5}})
        assert resp.status_code == 201, resp.text  # an asynchronous model: a task at once
        deadline = time.monotonic() + 10
        while (task := client.get(resp.json()["output"][0]["polling_url"]).json())["status"] not in (
                "succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert task["status"] == "succeeded", task
        grids = [Image.open(io.BytesIO(client.get(o["url"]).content)) for o in task["output"]]
    assert [g.size for g in grids] == [(256, 144), (256, 144)]
    assert sorted(s["prompt"] for s in _submits(state)) == ["a fox --ar 16:9 --seed 5", "a fox --ar 16:9 --seed 6"]


def test_predictions_api_takes_a_speed_mode_and_cancels_upstream(mj):
    gateway, state = mj
    state.duration = 30
    with gateway.http() as client:
        resp = client.post("/models/midjourney/midjourney/predictions", json={"input": {"prompt": "a fox", "mode": "RELAX"}})
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["id"]
        assert _error(client.post("/models/midjourney/midjourney/predictions",
                                  json={"input": {"prompt": "a fox", "mode": "SLOW"}}), 400, "invalid_value")
        canceled = client.post(f"/tasks/{task_id}/cancel").json()
        assert canceled["status"] == "canceled"
    job = next(iter(state.tasks))
    assert [(r.method, r.path) for r in state.requests if not r.path.endswith("/fetch")] == [
        ("POST", "/mj-relax/mj/submit/imagine"), ("POST", f"/mj/task/{job}/cancel")]
    assert state.tasks[job].task["status"] == "CANCEL" and _submits(state) == [{"prompt": "a fox"}]


# -- build and parse, without I/O --

def _reply(body, status: int = 200) -> UpstreamReply:
    raw = body if isinstance(body, bytes) else httpx.Response(200, json=body).content
    return UpstreamReply(status, {}, raw)


def test_build_urls_and_headers():
    req = ImageRequest(Operation.GENERATE, "mj", prompt="  a fox ", size="1792x1024")
    for base, url in (("http://h/", "http://h/mj/submit/imagine"), ("http://h/mj", "http://h/mj/submit/imagine"),
                      ("http://h/mj-fast/mj", "http://h/mj-fast/mj/submit/imagine")):
        channel = Channel("c", "midjourney", base, None, ("mj",), {})
        call = PROVIDER.build(req, "mj", channel)
        assert (call.url, call.headers, call.json) == (url, {}, {"prompt": "a fox --ar 7:4"})
    channel = Channel("c", "midjourney", "http://h", "k", ("mj",), {})
    poll = PROVIDER.build_poll(Submitted("17122054913721"), channel)
    assert (poll.method, poll.url, poll.headers) == ("GET", "http://h/mj/task/17122054913721/fetch", {"mj-api-secret": "k"})
    cancel, seed = PROVIDER.build_cancel(Submitted("17"), channel), PROVIDER.build_seed("17", channel)
    assert (cancel.method, cancel.url, cancel.json, cancel.headers) == ("POST", "http://h/mj/task/17/cancel", None,
                                                                        {"mj-api-secret": "k"})
    assert (seed.method, seed.url) == ("GET", "http://h/mj/task/17/image-seed")


def test_a_requests_speed_mode_is_the_proxys_path_prefix():
    # the mode replaces one the channel's base_url names; fast is the plain /mj, every proxy's default
    for base, mode, root in (("http://h", "RELAX", "http://h/mj-relax/mj"), ("http://h/mj", "TURBO", "http://h/mj-turbo/mj"),
                             ("http://h/mj-relax/mj", "FAST", "http://h/mj"), ("http://h/mj-fast", "RELAX", "http://h/mj-relax/mj"),
                             ("http://h/p/mj-turbo/mj", None, "http://h/p/mj-turbo/mj")):
        channel = Channel("c", "midjourney", base, None, ("mj",), {})
        for op, extras, path in ((Operation.GENERATE, {}, "imagine"), (Operation.MODAL, {"taskId": "17"}, "modal")):
            req = ImageRequest(op, "mj", prompt="a fox", extras={**extras, "mode": mode})
            call = PROVIDER.build(req, "mj", channel)
            assert call.url == f"{root}/submit/{path}" and "mode" not in call.json
        assert PROVIDER.build_poll(Submitted("17"), channel).url == PROVIDER.root(channel) + "/task/17/fetch"


def test_parse_image_seed():
    assert PROVIDER.parse_seed(_reply({"code": 1, "description": "成功", "result": "3456789012"})) == "3456789012"
    assert PROVIDER.parse_seed(_reply({"code": 1, "description": "成功", "result": 42})) == "42"
    for body, cls in [({"code": 4, "description": "关联任务状态错误", "result": None}, UpstreamRejected),
                      ({"code": 1, "description": "成功", "result": ""}, UpstreamBadResponse),
                      ({"result": "1"}, UpstreamBadResponse), (b"", UpstreamBadResponse), (b"<html>", UpstreamBadResponse)]:
        with pytest.raises(cls):
            PROVIDER.parse_seed(_reply(body))


def test_parse_submit_codes():
    req = ImageRequest(Operation.GENERATE, "mj", prompt="x")
    for code in (1, 21, 22):
        assert PROVIDER.parse(req, _reply({"code": code, "description": "", "result": "123"})).job_id == "123"
    for body, cls in [({"code": 23, "description": "队列已满", "result": None}, UpstreamRateLimited),
                      ({"code": 24, "description": "可能包含敏感词", "result": None}, UpstreamContentFiltered),
                      ({"code": 4, "description": "prompt不能为空", "result": None}, UpstreamRejected),
                      ({"code": 9, "description": "系统异常", "result": None}, UpstreamUnavailable),
                      ({"code": 77, "description": "?", "result": None}, UpstreamBadResponse),
                      ({"code": 1, "description": "提交成功", "result": None}, UpstreamBadResponse),
                      ({"result": "1"}, UpstreamBadResponse), ([], UpstreamBadResponse)]:
        with pytest.raises(cls):
            PROVIDER.parse(req, _reply(body))


def test_parse_poll_statuses():
    req = ImageRequest(Operation.GENERATE, "mj", prompt="x")
    for status, value, expected in [("NOT_START", "0%", 0.0), ("SUBMITTED", "", None),
                                    ("IN_PROGRESS", "45%", 0.45), ("IN_PROGRESS", None, None)]:
        outcome = PROVIDER.parse_poll(req, _reply({"status": status, "progress": value}))
        assert isinstance(outcome, Pending) and outcome.progress == expected
    done = PROVIDER.parse_poll(req, _reply({"status": "SUCCESS", "imageUrl": "https://cdn/x.png",
                                            "properties": {"finalPrompt": "x --v 7"}}))
    assert isinstance(done, Finished) and [(i.url, i.revised_prompt) for i in done.images] == [("https://cdn/x.png", "x --v 7")]
    for body, cls, code in [({"status": "FAILURE", "failReason": "Job action restricted"}, UpstreamContentFiltered, None),
                            ({"status": "FAILURE", "failReason": "Discord error"}, UpstreamError, "upstream_job_failed"),
                            ({"status": "MODAL"}, UpstreamError, "upstream_job_failed"),
                            ({"status": "SUCCESS"}, UpstreamBadResponse, None),
                            ({"status": "WEIRD"}, UpstreamBadResponse, None),
                            (b"", UpstreamError, "upstream_job_failed"), (b"null", UpstreamError, "upstream_job_failed")]:
        with pytest.raises(cls) as info:
            PROVIDER.parse_poll(req, _reply(body))
        assert code is None or info.value.code == code


def test_parse_error_statuses():
    spring404 = b'{"timestamp":"t","status":404,"error":"Not Found","path":"/x/mj/submit/imagine"}'
    for reply, cls, code in [(UpstreamReply(401, {}, b""), UpstreamUnavailable, "upstream_auth_failed"),
                             (UpstreamReply(404, {}, b""), UpstreamError, "upstream_job_failed"),
                             (UpstreamReply(404, {}, spring404), UpstreamUnavailable, "upstream_unavailable"),
                             (_reply({"code": 4, "description": "bad"}, 400), UpstreamRejected, "upstream_rejected"),
                             (UpstreamReply(503, {}, b"<html>"), UpstreamUnavailable, "upstream_unavailable"),
                             (UpstreamReply(429, {}, b""), UpstreamRateLimited, "upstream_rate_limited")]:
        error = PROVIDER.parse_error(reply)
        assert type(error) is cls and error.code == code, (reply, error)


# -- the emulator's /mj contract (the later /mj surface depends on it) --

@pytest.fixture
def emulator():
    state, hooks = MidjourneyEmulatorState(duration=0.15), []

    async def hook(request):
        hooks.append(await request.json())
        return Response(status_code=204)

    with serve(create_app(state)) as base, serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as hook_base:
        client = httpx.Client(base_url=base + "/mj", headers={"mj-api-secret": SECRET}, timeout=10)
        yield state, client, hooks, hook_base + "/hook"
        client.close()


def _done(client, task_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        task = client.get(f"/task/{task_id}/fetch").json()
        if task["status"] in ("SUCCESS", "FAILURE", "CANCEL", "MODAL"):
            return task
        time.sleep(0.03)
    raise AssertionError("task did not finish")


def _submit(client, path: str, body: dict, code: int = 1) -> str:
    answer = client.post(path, json=body).json()
    assert answer["code"] == code, answer
    return answer["result"]


def test_emulator_imagine_buttons_and_notify_hook(emulator):
    state, client, hooks, hook_url = emulator
    grid_id = _submit(client, "/submit/imagine", {"prompt": "a fox --ar 2:1", "notifyHook": hook_url, "state": "s1"})
    grid = _done(client, grid_id)
    assert grid["status"] == "SUCCESS" and grid["state"] == "s1" and grid["progress"] == "100%"
    deadline = time.monotonic() + 5
    while len(hooks) < 5 and time.monotonic() < deadline:  # the last POST may still be on its way
        time.sleep(0.02)
    assert [(h["status"], h["progress"]) for h in hooks] == [
        ("SUBMITTED", "0%"), ("IN_PROGRESS", "10%"), ("IN_PROGRESS", "45%"), ("IN_PROGRESS", "80%"), ("SUCCESS", "100%")]
    assert hooks[1]["imageUrl"] and hooks[1]["imageUrl"] != grid["imageUrl"]  # a preview while running
    labels = [b["label"] or b["emoji"] for b in grid["buttons"]]
    assert labels == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
    picture = Image.open(io.BytesIO(httpx.get(grid["imageUrl"]).content)).convert("RGB")
    assert picture.size == (256, 128)
    u2 = next(b["customId"] for b in grid["buttons"] if b["label"] == "U2")
    up_id = _submit(client, "/submit/action", {"taskId": grid_id, "customId": u2})
    assert _submit(client, "/submit/change", {"taskId": grid_id, "action": "UPSCALE", "index": 2}, 21) == up_id
    up = _done(client, up_id)
    single = Image.open(io.BytesIO(httpx.get(up["imageUrl"]).content)).convert("RGB")
    assert up["action"] == "UPSCALE" and single.size == (256, 128)
    assert single.getpixel((128, 64)) == picture.getpixel((192, 32))  # tile 2 (top right), doubled
    var_id = _submit(client, "/submit/simple-change", {"content": f"{grid_id} V1"})
    assert _done(client, var_id)["action"] == "VARIATION"
    listed = client.post("/task/list-by-condition", json={"ids": [grid_id, up_id, "nope"]}).json()
    assert [t["id"] for t in listed] == [grid_id, up_id]
    assert client.get(f"/task/{up_id}/image-seed").json()["code"] == 1


def test_emulator_modal_blend_describe_cancel(emulator):
    state, client, _, _ = emulator
    grid_id = _submit(client, "/submit/imagine", {"prompt": "a fox"})
    early = _submit(client, "/submit/change", {"taskId": grid_id, "action": "UPSCALE", "index": 1}, 4)  # not done
    grid = _done(client, grid_id)
    up = _done(client, _submit(client, "/submit/change", {"taskId": grid_id, "action": "UPSCALE", "index": 1}))
    inpaint = next(b["customId"] for b in up["buttons"] if b["label"] == "Vary (Region)")
    region_id = _submit(client, "/submit/action", {"taskId": up["id"], "customId": inpaint}, 21)
    assert _done(client, region_id)["status"] == "MODAL"
    _submit(client, "/submit/modal", {"taskId": region_id, "prompt": "a cat"}, 4)  # the mask is missing
    mask = "data:image/png;base64," + base64.b64encode(mask_png()).decode()
    _submit(client, "/submit/modal", {"taskId": region_id, "prompt": "a cat", "maskBase64": mask})
    assert _done(client, region_id)["status"] == "SUCCESS"
    assert early is None and grid["buttons"]
    image = "data:image/png;base64," + base64.b64encode(png()).decode()
    _submit(client, "/submit/blend", {"base64Array": [image]}, 4)
    blend = _done(client, _submit(client, "/submit/blend", {"base64Array": [image, image], "dimensions": "PORTRAIT"}))
    assert Image.open(io.BytesIO(httpx.get(blend["imageUrl"]).content)).size == (170, 256)
    described = _done(client, _submit(client, "/submit/describe", {"base64": image}))
    assert described["action"] == "DESCRIBE" and described["properties"]["finalPrompt"].count("\n\n") == 3
    pick = _submit(client, "/submit/action", {"taskId": described["id"], "customId": "MJ::Job::PicReader::2"})
    assert _done(client, pick)["action"] == "IMAGINE"
    slow = _submit(client, "/submit/imagine", {"prompt": "slow"})
    assert client.post(f"/task/{slow}/cancel").status_code == 200
    assert _done(client, slow)["status"] == "CANCEL"


def test_emulator_refusals(emulator):
    state, client, _, _ = emulator
    wrong = client.post("/submit/imagine", json={"prompt": "x"}, headers={"mj-api-secret": "bad"})
    assert (wrong.status_code, wrong.content) == (401, b"")
    assert client.post("/submit/imagine", content=b"{oops", headers={"content-type": "application/json"}).status_code == 400
    for body, code in [({"prompt": " "}, 4), ({"prompt": "x", "base64Array": ["not a data url"]}, 4),
                       ({"prompt": "x", "botType": "DALL_E"}, 4), ({"prompt": "x forbidden"}, 24)]:
        answer = client.post("/submit/imagine", json=body).json()
        assert (answer["code"], answer["result"]) == (code, None), answer
    assert client.post("/submit/imagine", json={"prompt": "a forbidden x"}).json()["properties"]["bannedWord"] == "forbidden"
    state.answer_next(23)
    assert client.post("/submit/imagine", json={"prompt": "x"}).json()["code"] == 23
    state.answer_next(22)
    queued = client.post("/submit/imagine", json={"prompt": "x"}).json()
    assert queued["code"] == 22 and queued["properties"]["numberOfQueues"] == 3 and queued["result"]
    assert client.post("/submit/change", json={"taskId": "123", "action": "UPSCALE", "index": 1}).json()["code"] == 3
    unknown = client.get("/task/123/fetch")
    assert (unknown.status_code, unknown.content) == (200, b"")
    state.fail_next_task("[Invalid parameter] Invalid value")
    failed = _done(client, _submit(client, "/submit/imagine", {"prompt": "x"}))
    assert (failed["status"], failed["failReason"], failed["progress"]) == ("FAILURE", "[Invalid parameter] Invalid value", "")
    task_id = _submit(client, "/submit/imagine", {"prompt": "x"})
    state.vanish(task_id, "404")
    gone = client.get(f"/task/{task_id}/fetch")
    assert gone.status_code == 404 and gone.json()["code"] == 3


@pytest.mark.parametrize("path, body, field", [
    ("/models/midjourney/midjourney/predictions", {"input": {"prompt": "a cat --v 99"}}, "prompt"),
    ("/v1/images/generations", {"model": "midjourney", "prompt": "a cat --q 3"}, "prompt"),
    ("/v1/models/midjourney/midjourney/predictions", {"input": {"prompt": "a cat --ar 0:1"}}, "prompt")])
def test_the_prompt_flag_rules_hold_on_every_api(mj, path, body, field):
    """Midjourney's parameter ranges are the model's rule, not one API's: a prompt the /mj API
    refuses is refused through predictions, OpenAI and Replicate too, before any upstream call."""
    gateway, state = mj
    with gateway.http() as client:
        resp = client.post(path, json=body)
    assert resp.status_code == (422 if path.startswith("/v1/models") else 400), resp.text  # Replicate's 422
    assert field in resp.text and "Invalid parameter" in resp.text
    assert _submits(state) == []
