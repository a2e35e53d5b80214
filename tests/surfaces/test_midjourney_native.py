"""The midjourney-proxy surface (/mj/*) in its own JSON shape, against the proxy emulator: result
codes, tasks followed by the gateway (progress, re-hosted images, notifyHook at each change),
follow-ups by button on the upstream's own task ids, prompt flags refused before any upstream
call, failures, a restart in the middle of a task; speed-mode prefixes (upstream and price),
image seeds, task lists and cancellation (refunded once)."""

from __future__ import annotations

import base64
import hashlib
import io
import time
from decimal import Decimal

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from pixelgate.config import Settings
from pixelgate.errors import InvalidRequest
from pixelgate.surfaces.midjourney import tasks as surface
from pixelgate.providers.midjourney_flags import check_flags
from tests.conftest import ADMIN_KEY, database, mask_png, png, run_gateway
from pixelgate.simulators.midjourney import MidjourneyEmulatorState, create_app
from tests.emulators.server import emulated, serve

SECRET = "mj-emulator-secret"
DOC_PROMPT = "a cute cat, anime style --ar 16:9 --v 6"  # the third source document's example
DONE = ("SUCCESS", "FAILURE", "CANCEL", "MODAL")


def channel(base: str) -> dict:
    return {"name": "mj", "provider": "midjourney", "base_url": base, "api_key": SECRET, "models": ["midjourney"]}


class Hooks:
    """A notifyHook receiver."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def app(self) -> Starlette:
        async def hook(request):
            self.calls.append(await request.json())
            return Response(status_code=204)
        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture
def upstream():
    with emulated(create_app, MidjourneyEmulatorState(duration=0.6)) as up:
        yield up


@pytest.fixture
def mj(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[channel(base)], fetch_allow_hosts=["127.0.0.1"], poll_interval_seconds=0.05)
    with httpx.Client(base_url=gateway.base_url, headers={"mj-api-secret": ADMIN_KEY}, timeout=30) as client:
        yield gateway, state, client


@pytest.fixture(scope="module")
def shared_mj(make_module_gateway):
    """One gateway and proxy for a module's many cases refused before any call."""
    with emulated(create_app, MidjourneyEmulatorState(duration=0.6)) as (state, base):
        gateway = make_module_gateway(channels=[channel(base)], fetch_allow_hosts=["127.0.0.1"])
        with httpx.Client(base_url=gateway.base_url, headers={"mj-api-secret": ADMIN_KEY}, timeout=30) as client:
            yield gateway, state, client


@pytest.fixture
def quiet_mj(shared_mj):
    """shared_mj with the proxy's log emptied: what it holds, this test sent."""
    shared_mj[1].requests.clear()
    return shared_mj


def submit(client: httpx.Client, path: str, body: dict, code: int = 1) -> dict:
    resp = client.post(path if path.startswith("/") else "/mj/submit/" + path, json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["code"] == code, answer
    return answer


def wait(client: httpx.Client, task_id: str, until=DONE, seconds: float = 15) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        task = client.get(f"/mj/task/{task_id}/fetch").json()
        if task["status"] in until:
            return task
        time.sleep(0.03)
    raise AssertionError(f"task not done: {task}")


def picture(client: httpx.Client, url: str) -> Image.Image:
    resp = client.get(url)
    assert resp.status_code == 200
    return Image.open(io.BytesIO(resp.content))


def sent(state, path: str) -> list:
    return [r.json for r in state.requests if r.path == "/mj/submit/" + path]


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def upstream_id(state, action: str = "IMAGINE") -> str:
    """The upstream's id of its newest task of this action."""
    return [i for i, j in state.tasks.items() if j.task["action"] == action][-1]


def balance(gateway, account_id: int) -> dict:
    with gateway.http() as admin:
        account = admin.get(f"/admin/accounts/{account_id}").json()
    return {k: Decimal(account[k]) for k in ("balance", "reserved", "spent")}


def test_the_documents_example_with_progress_and_a_rehosted_grid(mj):
    gateway, state, _ = mj
    with httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        answer = submit(client, "imagine", {"prompt": DOC_PROMPT})
        task_id = answer["result"]
        assert answer == {"code": 1, "description": "提交成功", "result": task_id, "properties": {}}
        seen = []
        while (task := client.get(f"/mj/task/{task_id}/fetch").json())["status"] not in DONE:
            seen.append(task)
            time.sleep(0.02)
        grid = picture(client, task["imageUrl"])
    assert sent(state, "imagine") == [{"prompt": DOC_PROMPT}]  # nothing added, no notifyHook upstream
    upstream_id = next(iter(state.tasks))
    assert task_id != upstream_id and upstream_id not in str(task)
    running = [t for t in seen if t["status"] == "IN_PROGRESS"]
    assert running and {t["progress"] for t in running} & {"10%", "45%", "80%"}
    assert all(t["buttons"] == [] and t["finishTime"] is None for t in seen)
    previews = [t["imageUrl"] for t in running if t["imageUrl"]]
    assert previews and all(u.startswith(gateway.base_url + "/files/") for u in previews)
    assert task["status"] == "SUCCESS" and task["progress"] == "100%" and task["action"] == "IMAGINE"
    assert task["prompt"] == task["promptEn"] == DOC_PROMPT and task["failReason"] is None
    assert task["description"] == "/imagine " + DOC_PROMPT and task["properties"]["finalPrompt"] == DOC_PROMPT
    assert task["submitTime"] <= task["startTime"] <= task["finishTime"]
    assert task["imageUrl"].startswith(gateway.base_url + "/files/")  # stored by the gateway
    assert grid.size == (256, 144)  # the 2x2 grid at 16:9
    assert [b["label"] or b["emoji"] for b in task["buttons"]] == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]


def test_auth_headers(mj):
    gateway, state, _ = mj
    body = {"prompt": "a fox"}
    for headers in ({"mj-api-secret": ADMIN_KEY}, {"Api-Key": ADMIN_KEY}, {"Authorization": f"Bearer {ADMIN_KEY}"}):
        assert httpx.post(gateway.base_url + "/mj/submit/imagine", json=body, headers=headers).json()["code"] == 1
    for headers in ({}, {"mj-api-secret": "wrong"}):
        resp = httpx.post(gateway.base_url + "/mj/submit/imagine", json=body, headers=headers)
        assert resp.status_code == 401 and resp.json()["result"] is None
        assert httpx.get(gateway.base_url + "/mj/task/x/fetch", headers=headers).status_code == 401
    assert len(sent(state, "imagine")) == 3


@pytest.mark.parametrize("flags", [
    "--ar 16x9", "--ar 0:1", "--v 9", "--version 5.3", "--niji 3", "--q 3", "--q .25 --v 7", "--s 2000",
    "--stylize -1", "--c 101", "--chaos 50.5", "--w 3001", "--seed 4294967296", "--seed -1", "--iw 4",
    "--iw 2.5 --v 5.2", "--tile yes", "--style fancy", "--no", "--stop 5", "\u2014s 1001"])
def test_out_of_range_flags_are_refused_with_code_4_and_never_sent(quiet_mj, flags):
    _, state, client = quiet_mj
    answer = submit(client, "imagine", {"prompt": "a fox " + flags}, code=4)
    assert answer["result"] is None and "Invalid parameter" in answer["description"]
    assert state.requests == []


def test_flags_in_range_pass():
    for prompt in (DOC_PROMPT, "a fox --ar 2:3 --v 6.1 --s 250 --c 100 --seed 4294967295", "a --niji",
                   "a --niji 6 --style cute", "a --q .5 --v 6", "a --q 4 --v 7", "a --q 2", "a --no text, people",
                   "a --tile --weird 3000", "https://x/a.png a --iw 1.5", "a --sref 123 --p --raw", "well--known",
                   "a \u2014ar 1:2"):
        check_flags(prompt)
    with pytest.raises(InvalidRequest) as info:
        check_flags("a --v 7 --q .5")
    assert info.value.field == "prompt" and "--quality" in info.value.message


def test_refusals_and_queueing(mj):
    gateway, state, client = mj
    banned = submit(client, "imagine", {"prompt": "a forbidden fox"}, code=24)
    assert banned["result"] is None and "forbidden" in banned["description"]
    state.answer_next(23)
    assert submit(client, "imagine", {"prompt": "a fox"}, code=23)["result"] is None
    state.answer_next(22)
    queued = submit(client, "imagine", {"prompt": "a fox"}, code=22)
    assert queued["properties"] == {"numberOfQueues": 3} and queued["result"].startswith("task_")
    assert wait(client, queued["result"])["status"] == "SUCCESS"
    count = len(state.requests)
    for body in ({"prompt": "  "}, {"prompt": 5}, {}, {"prompt": "x", "base64Array": ["not an image"]},
                 {"prompt": "x", "botType": "DALL_E"}, {"prompt": "x", "notifyHook": "http://169.254.169.254/"}):
        assert submit(client, "imagine", body, code=4)["result"] is None, body
    assert len(state.requests) == count
    resp = client.get("/mj/task/task_nope/fetch")
    assert resp.status_code == 404 and resp.json()["code"] == 3


def test_upstream_failure_and_vanished_task(mj):
    _, state, client = mj
    state.fail_next_task("Job timed out after 600 s")
    failed = wait(client, submit(client, "imagine", {"prompt": "a fox"})["result"])
    assert failed["status"] == "FAILURE" and "Job timed out after 600 s" in failed["failReason"]
    assert failed["progress"] == "" and failed["imageUrl"] is None and failed["buttons"] == []
    for how in ("null", "404"):
        state.vanish_next(how, after=0.15)
        gone = wait(client, submit(client, "imagine", {"prompt": "a fox"})["result"])
        assert gone["status"] == "FAILURE" and "no longer knows the task" in gone["failReason"]


def test_notify_hook_gets_each_change(mj):
    gateway, state, client = mj
    state.duration = 2.0  # IN_PROGRESS lasts ~1.4 s: a loaded machine's poller still sees it
    hooks = Hooks()
    with serve(hooks.app()) as rx:
        task_id = submit(client, "imagine", {"prompt": "a fox", "notifyHook": rx + "/hook", "state": "s-1"})["result"]
        done = wait(client, task_id)
        deadline = time.monotonic() + 10
        while (not hooks.calls or hooks.calls[-1]["status"] != "SUCCESS") and time.monotonic() < deadline:
            time.sleep(0.03)
        time.sleep(0.3)
    assert "notifyHook" not in sent(state, "imagine")[0]  # the gateway follows the job itself
    order = ["NOT_START", "SUBMITTED", "IN_PROGRESS", "SUCCESS"]
    statuses = [c["status"] for c in hooks.calls]
    assert statuses[-1] == "SUCCESS" and "IN_PROGRESS" in statuses, statuses
    assert statuses == sorted(statuses, key=order.index) and len(statuses) >= 3
    assert all(c["id"] == task_id and c["state"] == "s-1" for c in hooks.calls)
    assert hooks.calls[-1] == done | {"imageUrl": hooks.calls[-1]["imageUrl"]}
    assert hooks.calls[-1]["imageUrl"].startswith(gateway.base_url + "/files/")


def test_change_and_action_on_a_finished_imagine(mj):
    gateway, state, client = mj
    grid_id = submit(client, "imagine", {"prompt": "a fox"})["result"]
    early = submit(client, "change", {"taskId": grid_id, "action": "UPSCALE", "index": 1}, code=4)
    assert "状态" in early["description"] and sent(state, "change") == []
    grid = wait(client, grid_id)
    upstream_grid = next(iter(state.tasks))
    up_id = submit(client, "change", {"taskId": grid_id, "action": "UPSCALE", "index": 1})["result"]
    assert sent(state, "change") == [{"taskId": upstream_grid, "action": "UPSCALE", "index": 1}]
    up = wait(client, up_id)
    assert up["status"] == "SUCCESS" and up["action"] == "UPSCALE"
    assert grid_id in up["description"] and upstream_grid not in up["description"]
    tile = picture(client, up["imageUrl"]).convert("RGB")
    whole = picture(client, grid["imageUrl"]).convert("RGB")
    assert tile.size == (256, 256) and tile.getpixel((128, 128)) == whole.getpixel((64, 64))
    # the same upscale again, by change or by its button: the existing task
    again = submit(client, "change", {"taskId": grid_id, "action": "UPSCALE", "index": 1}, code=21)
    assert again["result"] == up_id and again["properties"]["status"] == "SUCCESS"
    u1 = next(b["customId"] for b in grid["buttons"] if b["label"] == "U1")
    assert submit(client, "action", {"taskId": grid_id, "customId": u1}, code=21)["result"] == up_id
    v2 = next(b["customId"] for b in grid["buttons"] if b["label"] == "V2")
    var_id = submit(client, "action", {"taskId": grid_id, "customId": v2})["result"]
    assert sent(state, "action")[-1] == {"taskId": upstream_grid, "customId": v2}
    assert client.get(f"/mj/task/{var_id}/fetch").json()["action"] == "VARIATION"
    assert wait(client, var_id)["status"] == "SUCCESS"
    reroll = submit(client, "simple-change", {"content": f"{grid_id} R"})["result"]
    assert wait(client, reroll)["action"] == "REROLL"
    count = len(state.requests)
    submit(client, "action", {"taskId": grid_id, "customId": "MJ::JOB::upsample::9::nope"}, code=4)
    submit(client, "change", {"taskId": grid_id, "action": "VARIATION"}, code=4)  # no index
    submit(client, "change", {"taskId": "task_nope", "action": "REROLL"}, code=3)
    other = gateway.create_key(name="other")
    with httpx.Client(base_url=gateway.base_url, headers={"mj-api-secret": other}) as stranger:
        submit(stranger, "change", {"taskId": grid_id, "action": "REROLL"}, code=3)
        assert stranger.get(f"/mj/task/{grid_id}/fetch").status_code == 404
        assert stranger.post("/mj/task/list-by-condition", json={"ids": [grid_id]}).json() == []
    assert len(state.requests) == count
    listed = client.post("/mj/task/list-by-condition", json={"ids": [up_id, "nope", grid_id]}).json()
    assert [t["id"] for t in listed] == [up_id, grid_id] and listed[1] == client.get(f"/mj/task/{grid_id}/fetch").json()
    assert client.post("/mj/task/list-by-condition", json={}).json() == []


def test_vary_region_waits_for_the_modal(mj):
    _, state, client = mj
    grid_id = submit(client, "imagine", {"prompt": "a fox"})["result"]
    wait(client, grid_id)
    up = wait(client, submit(client, "change", {"taskId": grid_id, "action": "UPSCALE", "index": 2})["result"])
    region = next(b["customId"] for b in up["buttons"] if b["label"] == "Vary (Region)")
    waiting = submit(client, "action", {"taskId": up["id"], "customId": region}, code=21)
    assert waiting["properties"]["status"] == "MODAL"
    assert wait(client, waiting["result"])["status"] == "MODAL"
    mask = data_url(mask_png())
    done = submit(client, "modal", {"taskId": waiting["result"], "prompt": "a cat", "maskBase64": mask})
    assert done["result"] == waiting["result"]  # the same task goes on
    inpaint = next(i for i, job in state.tasks.items() if job.task["action"] == "INPAINT")
    assert sent(state, "modal") == [{"taskId": inpaint, "prompt": "a cat", "maskBase64": mask}]
    assert wait(client, done["result"], until=("SUCCESS", "FAILURE"))["status"] == "SUCCESS"
    submit(client, "modal", {"taskId": grid_id, "prompt": "x"}, code=4)  # not waiting for one


def test_blend_describe_and_image_prompts(mj):
    gateway, state, client = mj
    one, two = data_url(png(colour=(1, 2, 3))), data_url(png(colour=(9, 9, 9)))
    submit(client, "blend", {"base64Array": [one]}, code=4)
    blend = wait(client, submit(client, "blend", {"base64Array": [one, two], "dimensions": "PORTRAIT"})["result"])
    assert blend["action"] == "BLEND" and picture(client, blend["imageUrl"]).size == (170, 256)
    assert sent(state, "blend") == [{"base64Array": [one, two], "dimensions": "PORTRAIT"}]
    described = wait(client, submit(client, "describe", {"base64": one})["result"])
    assert described["action"] == "DESCRIBE" and described["status"] == "SUCCESS"
    assert described["prompt"].count("\n\n") == 3 and described["imageUrl"].startswith(gateway.base_url)
    # image prompts: base64Array and the single legacy base64 of the third source document
    answer = submit(client, "imagine", {"prompt": "in this style", "base64Array": [one], "base64": two})
    task = wait(client, answer["result"])
    assert task["status"] == "SUCCESS" and task["prompt"] == "in this style"
    assert sent(state, "imagine")[-1] == {"prompt": "in this style", "base64Array": [one, two]}


def test_a_restart_mid_task_loses_nothing(backend, tmp_path, upstream):
    state, base = upstream
    state.duration = 1.5
    hooks = Hooks()
    with database(backend, tmp_path) as url, serve(hooks.app()) as rx:
        settings = Settings(data_dir=tmp_path, database_url=url, admin_key=ADMIN_KEY, cache_seconds=0,
                            poll_interval_seconds=0.05, task_lease_seconds=1, unpriced="free",
                            channels=[channel(base)], fetch_allow_hosts=["127.0.0.1"])
        headers = {"mj-api-secret": ADMIN_KEY}
        with run_gateway(settings) as gateway, httpx.Client(base_url=gateway.base_url, headers=headers) as client:
            task_id = submit(client, "imagine", {"prompt": "a fox", "notifyHook": rx + "/hook"})["result"]
            time.sleep(0.3)
            assert client.get(f"/mj/task/{task_id}/fetch").json()["status"] != "SUCCESS"
        with run_gateway(settings) as gateway, httpx.Client(base_url=gateway.base_url, headers=headers) as client:
            task = wait(client, task_id)
            assert task["status"] == "SUCCESS" and picture(client, task["imageUrl"]).size == (256, 256)
            time.sleep(0.5)
    assert len(sent(state, "imagine")) == 1
    assert [c["status"] for c in hooks.calls].count("SUCCESS") == 1


def test_a_follow_up_goes_to_the_channel_that_holds_the_job(make_gateway, upstream):
    state, base = upstream
    other = MidjourneyEmulatorState(duration=0.2)
    with serve(create_app(other)) as other_base:
        gateway = make_gateway(channels=[{**channel(base), "priority": 10}, {**channel(other_base), "name": "mj2"}],
                               fetch_allow_hosts=["127.0.0.1"], poll_interval_seconds=0.05)
        with gateway.http() as admin, gateway.http(headers={"mj-api-secret": ADMIN_KEY}) as client:
            grid_id = submit(client, "imagine", {"prompt": "a fox"})["result"]
            wait(client, grid_id)
            assert admin.patch("/admin/channels/mj2", json={"priority": 20}).status_code == 200
            up_id = submit(client, "change", {"taskId": grid_id, "action": "UPSCALE", "index": 3})["result"]
            assert wait(client, up_id)["status"] == "SUCCESS"
            assert wait(client, submit(client, "imagine", {"prompt": "a hen"})["result"])["status"] == "SUCCESS"
    assert [r.path for r in other.requests if "/submit/" in r.path] == ["/mj/submit/imagine"]  # the new one
    assert len(sent(state, "change")) == 1


def test_an_empty_balance_is_code_4_before_any_upstream_call(mj):
    gateway, state, _ = mj
    gateway.set_price("midjourney", "1")
    _, key = gateway.paying_key("0.5")
    with httpx.Client(base_url=gateway.base_url, headers={"mj-api-secret": key}, timeout=30) as payer:
        answer = submit(payer, "imagine", {"prompt": "a fox"}, code=4)
    assert "balance" in answer["description"] and answer["result"] is None
    assert sent(state, "imagine") == []


# -- speed modes --

@pytest.mark.parametrize("prefix,mode,upstream_path", [
    ("", "FAST", "/mj/"), ("/mj-fast", "FAST", "/mj/"), ("/mj-turbo", "TURBO", "/mj-turbo/mj/"),
    ("/mj-relax", "RELAX", "/mj-relax/mj/")])
def test_speed_mode_prefixes_go_upstream_as_the_proxys_own(mj, prefix, mode, upstream_path):
    _, state, client = mj
    task_id = submit(client, f"{prefix}/mj/submit/imagine", {"prompt": "a fox"})["result"]
    task = client.get(f"{prefix}/mj/task/{task_id}/fetch").json()
    assert task["id"] == task_id and task["mode"] == mode
    assert [r.path for r in state.requests if "/submit/" in r.path] == [upstream_path + "submit/imagine"]
    assert state.tasks[upstream_id(state)].task["mode"] == mode  # the proxy runs it in that mode
    assert wait(client, task_id)["status"] == "SUCCESS"
    up_id = submit(client, f"{prefix}/mj/submit/change", {"taskId": task_id, "action": "UPSCALE", "index": 1})
    assert client.get(f"{prefix}/mj/task/{up_id['result']}/fetch").json()["mode"] == mode
    assert [r.path for r in state.requests if "/submit/" in r.path][-1] == upstream_path + "submit/change"
    listed = client.post(f"{prefix}/mj/task/list-by-condition", json={"ids": [task_id]}).json()
    assert [t["id"] for t in listed] == [task_id]


def test_a_prompt_flag_sets_the_mode_under_the_plain_path_and_may_not_contradict_a_prefix(mj):
    _, state, client = mj
    task_id = submit(client, "imagine", {"prompt": "a fox --relax"})["result"]
    assert client.get(f"/mj/task/{task_id}/fetch").json()["mode"] == "RELAX"
    (submitted,) = [r for r in state.requests if "/submit/" in r.path]  # the poller may have fetched since
    assert submitted.path == "/mj-relax/mj/submit/imagine" and submitted.json == {"prompt": "a fox --relax"}
    for path, prompt in (("/mj-turbo/mj/submit/imagine", "a fox --relax"), ("/mj/submit/imagine", "a --fast --turbo")):
        answer = client.post(path, json={"prompt": prompt}).json()
        assert answer["code"] == 4 and "speed mode" in answer["description"], answer
    assert submit(client, "/mj-relax/mj/submit/imagine", {"prompt": "a fox --relax"})["code"] == 1
    assert [r.path for r in state.requests if "/submit/" in r.path] == ["/mj-relax/mj/submit/imagine"] * 2


def test_an_unknown_speed_mode_is_code_4(mj):
    _, state, client = mj
    for method, path in (("POST", "/mj-slow/mj/submit/imagine"), ("GET", "/fast/mj/task/x/fetch"),
                         ("GET", "/mj-slow/mj/task/list")):
        resp = client.request(method, path, json={"prompt": "a fox"} if method == "POST" else None)
        assert resp.status_code == 200 and resp.json()["code"] == 4, resp.text
        assert "speed mode" in resp.json()["description"]
    assert httpx.post(client.base_url.join("/mj-relax/mj/submit/imagine"), json={"prompt": "x"}).status_code == 401
    assert state.requests == []


def test_the_speed_mode_is_priced_when_the_price_table_says_so(mj):
    gateway, state, _ = mj
    gateway.set_price("midjourney", "1")
    gateway.set_price("midjourney", "0.25", dimensions={"speed": "RELAX"})
    account_id, key = gateway.paying_key("10")
    with httpx.Client(base_url=gateway.base_url, headers={"mj-api-secret": key}, timeout=30) as payer:
        for path in ("/mj-relax/mj/submit/imagine", "/mj/submit/imagine", "/mj-turbo/mj/submit/imagine"):
            assert wait(payer, payer.post(path, json={"prompt": "a fox"}).json()["result"])["status"] == "SUCCESS"
    assert balance(gateway, account_id) == {"balance": Decimal("7.75"), "reserved": 0, "spent": Decimal("2.25")}


# -- image seed, lists, cancel --

def test_image_seed_is_asked_of_the_channel_that_made_the_image(mj):
    gateway, state, client = mj
    task_id = submit(client, "imagine", {"prompt": "a fox"})["result"]
    early = client.get(f"/mj/task/{task_id}/image-seed").json()
    assert early["code"] == 4 and early["result"] is None  # not finished: nothing asked upstream
    assert not [r for r in state.requests if r.path.endswith("/image-seed")]
    wait(client, task_id)
    job = upstream_id(state)
    expected = str(int(hashlib.sha256(job.encode()).hexdigest()[:8], 16))  # the emulator's seed
    for prefix in ("", "/mj-relax"):
        resp = client.get(f"{prefix}/mj/task/{task_id}/image-seed")
        assert resp.status_code == 200 and resp.json() == {"code": 1, "description": "成功", "result": expected}
    assert [r.path for r in state.requests if r.path.endswith("/image-seed")] == [f"/mj/task/{job}/image-seed"] * 2
    other = gateway.create_key(name="other")
    for headers, unknown in (({}, "task_nope"), ({"mj-api-secret": other}, task_id)):
        resp = client.get(f"/mj/task/{unknown}/image-seed", headers=headers)
        assert resp.status_code == 404 and resp.json()["code"] == 3 and resp.json()["result"] is None
    assert len([r for r in state.requests if r.path.endswith("/image-seed")]) == 2
    state.fail_next(404, {"code": 3, "description": "关联任务不存在或已失效", "result": None}, path="/mj/task")
    assert client.get(f"/mj/task/{task_id}/image-seed").json()["code"] == 9  # the upstream lost it


def _unsigned(task: dict) -> dict:
    """A task with its links' signatures (?exp=&sig=) cut off."""
    def cut(value):
        if isinstance(value, str) and "/files/" in value:
            return value.split("?", 1)[0]
        if isinstance(value, list):
            return [cut(v) for v in value]
        return value
    return {k: cut(v) for k, v in task.items()}


def test_list_and_queue_show_the_callers_newest_tasks(mj, monkeypatch):
    gateway, state, client = mj
    done = submit(client, "imagine", {"prompt": "a fox"})["result"]
    wait(client, done)
    state.duration = 30
    running = submit(client, "/mj-relax/mj/submit/imagine", {"prompt": "a hen"})["result"]
    with gateway.http() as other:  # another surface's task of the same key is not listed
        assert other.post("/models/sandbox/sandbox-async/predictions", json={"input": {"prompt": "x"}}).status_code == 201
    listed = client.get("/mj/task/list").json()
    assert [t["id"] for t in listed] == [running, done]
    fetched = [client.get(f"/mj/task/{i}/fetch").json() for i in (running, done)]
    # the fetch shape (the running one's progress may move in between; a link signed a second
    # later carries another expiry and signature)
    assert _unsigned(listed[1]) == _unsigned(fetched[1])
    assert set(listed[0]) == set(fetched[0]) and listed[0]["prompt"] == fetched[0]["prompt"]
    assert [t["id"] for t in client.get("/mj-relax/mj/task/queue").json()] == [running]
    stranger = gateway.create_key(name="other")
    assert client.get("/mj/task/list", headers={"mj-api-secret": stranger}).json() == []
    monkeypatch.setattr(surface, "RECENT", 1)  # bounded
    assert [t["id"] for t in client.get("/mj/task/list").json()] == [running]
    assert not [r for r in state.requests if "/task/list" in r.path or "/task/queue" in r.path]
    assert httpx.get(client.base_url.join("/mj/task/queue")).status_code == 401


def test_cancel_stops_the_upstream_job_and_refunds_once(mj):
    gateway, state, client = mj
    gateway.set_price("midjourney", "1")
    account_id, key = gateway.paying_key("1")
    hooks = Hooks()
    with serve(hooks.app()) as rx, httpx.Client(base_url=gateway.base_url, headers={"mj-api-secret": key},
                                                timeout=30) as payer:
        state.duration = 30
        task_id = submit(payer, "imagine", {"prompt": "a fox", "notifyHook": rx + "/hook"})["result"]
        wait(payer, task_id, until=("SUBMITTED", "IN_PROGRESS"))
        assert balance(gateway, account_id)["reserved"] == 1
        assert submit(payer, "imagine", {"prompt": "a hen"}, code=4)["result"] is None  # the balance is held
        job = upstream_id(state)
        for _ in range(2):  # a second cancel changes nothing
            resp = payer.post(f"/mj-relax/mj/task/{task_id}/cancel")
            assert resp.status_code == 200 and resp.json() == {"code": 1, "description": "成功", "result": task_id,
                                                               "properties": {}}
        cancelled = payer.get(f"/mj/task/{task_id}/fetch").json()
        assert cancelled["status"] == "CANCEL" and cancelled["failReason"] == "Canceled by the client."
        assert cancelled["progress"] == "" and cancelled["imageUrl"] is None and cancelled["finishTime"]
        assert [r.path for r in state.requests if r.path.endswith("/cancel")] == [f"/mj/task/{job}/cancel"]
        assert state.tasks[job].task["status"] == "CANCEL"
        assert payer.get("/mj/task/queue").json() == []
        time.sleep(0.3)  # the poller leaves it as it is
        assert payer.get(f"/mj/task/{task_id}/fetch").json() == cancelled
        assert balance(gateway, account_id) == {"balance": 1, "reserved": 0, "spent": 0}
        deadline = time.monotonic() + 5
        while not any(c["status"] == "CANCEL" for c in hooks.calls) and time.monotonic() < deadline:
            time.sleep(0.03)
        assert any(c["status"] == "CANCEL" and c["id"] == task_id for c in hooks.calls)
        # refunded: the balance pays for the next one, which is charged when it is done
        state.duration = 0.3
        finished = submit(payer, "imagine", {"prompt": "a hen"})["result"]
        wait(payer, finished)
        count = len(state.requests)
        late = payer.post(f"/mj/task/{finished}/cancel").json()
        assert late["code"] == 4 and "SUCCESS" in late["description"]
        assert payer.get(f"/mj/task/{finished}/fetch").json()["status"] == "SUCCESS"
        for headers, unknown in (({}, "task_nope"), ({"mj-api-secret": ADMIN_KEY}, finished)):
            resp = payer.post(f"/mj/task/{unknown}/cancel", headers=headers)
            assert resp.status_code == 404 and resp.json()["code"] == 3
        assert len(state.requests) == count
    assert balance(gateway, account_id) == {"balance": 0, "reserved": 0, "spent": 1}


def test_a_proxy_that_cannot_cancel_leaves_the_task_running(mj):
    gateway, state, client = mj
    state.duration = 1.5
    task_id = submit(client, "imagine", {"prompt": "a fox"})["result"]
    wait(client, task_id, until=("SUBMITTED", "IN_PROGRESS"))
    state.fail_next(404, path="/mj/task/" + upstream_id(state) + "/cancel")  # novicezk has no cancel
    answer = client.post(f"/mj/task/{task_id}/cancel").json()
    assert answer["code"] == 9 and "no such endpoint" in answer["description"]
    assert wait(client, task_id)["status"] == "SUCCESS"  # followed on, not held by the failed cancel
