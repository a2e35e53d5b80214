"""Asynchronous and idempotent on every API: `Prefer: respond-async` and GET /v1/images/tasks/{id}
on the OpenAI API, `Idempotency-Key` on every generating request (a repeat gets the first one's
images or task, starts no second vendor job and is charged nothing), an asynchronous vendor's job
on a task row even when the client waits, and a kill -9 in the middle healed by a retry."""

from __future__ import annotations

import base64
import io
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import openai
import pytest
from PIL import Image
from sqlalchemy import select

from pixelgate.db.models import Task

from tests.conftest import ADMIN_KEY, database, openai_channel
from tests.test_serve import _start_anywhere, _stop

GEN = "/v1/images/generations"


def _account(gateway, account_id: int) -> dict:
    with gateway.http() as admin:
        account = admin.get(f"/admin/accounts/{account_id}").json()
    return {k: Decimal(account[k]) for k in ("balance", "reserved", "spent")}


def _tasks(gateway) -> list[tuple[str, str]]:
    """(surface, status) of every task in the gateway's database."""
    async def query():
        async with gateway.services.sessions() as session:
            return [(t.surface, t.status) for t in (await session.execute(select(Task))).scalars()]
    return gateway.run(query())


def _wait_done(client: httpx.Client, url: str, seconds: float = 15) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while (resp := client.get(url)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.05)
    return resp


def test_respond_async_answers_a_task_and_then_exactly_the_synchronous_answer(make_gateway):
    gateway = make_gateway()
    with gateway.http(headers={"Prefer": "respond-async"}) as client:
        accepted = client.post(GEN, json={"model": "sandbox-image", "prompt": "a fox", "size": "64x48",
                                          "response_format": "b64_json", "sandbox_delay_ms": 300})
        assert accepted.status_code == 202, accepted.text
        task = accepted.json()
        assert task["object"] == "image.task" and task["id"].startswith("task_")
        assert task["polling_url"] == f"{gateway.base_url}/v1/images/tasks/{task['id']}"
        early = client.get(task["polling_url"])
        done = _wait_done(client, task["polling_url"])
        generic = client.get(f"/tasks/{task['id']}").json()  # the predictions API's view of the same task
    assert early.status_code == 202 and early.json()["status"] in ("pending", "running")
    assert done.status_code == 200, done.text
    body = done.json()
    assert set(body) >= {"created", "data"} and "status" not in body  # OpenAI's shape, as a sync call answers
    image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert image.size == (64, 48)
    assert generic["status"] == "succeeded" and generic["id"] == task["id"]


def test_respond_async_with_the_openai_sdk_and_a_failed_task(make_gateway):
    gateway = make_gateway()
    sdk = gateway.sdk()
    raw = sdk.images.with_raw_response.generate(model="sandbox-image", prompt="x", size="32x32",
                                                extra_headers={"Prefer": "respond-async"},
                                                extra_body={"sandbox_fail": "moderation"})
    assert raw.http_response.status_code == 202
    task_id = raw.http_response.json()["id"]
    with gateway.http() as client:
        failed = _wait_done(client, f"/v1/images/tasks/{task_id}")
    assert failed.status_code == 400 and failed.json()["error"]["code"] == "content_policy_violation"


def test_a_repeat_with_the_same_idempotency_key_gets_the_same_images_and_is_charged_once(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "0.25")
    account_id, key = gateway.paying_key("10")
    body = {"model": "sandbox-image", "prompt": "a lighthouse", "size": "32x32"}
    with gateway.http(key=key, headers={"Idempotency-Key": "order-17"}) as client:
        first = client.post(GEN, json=body)
        again = client.post(GEN, json=body)
        other = client.post(GEN, json={**body, "prompt": "a different lighthouse"})
    with gateway.http(key=key, headers={"Idempotency-Key": "order-18"}) as client:
        fresh = client.post(GEN, json=body)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    def files(answer):  # the stored images (a link's signature may be made a second later)
        return [item["url"].split("?")[0] for item in answer.json()["data"]]

    assert files(first) == files(again)  # the same stored image
    assert first.headers["x-pixelgate-cost"] == "0.25" and again.headers["x-pixelgate-cost"] == "0"
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409 and other.json()["error"]["param"] == "Idempotency-Key"
    assert fresh.status_code == 200 and files(fresh) != files(first)
    assert _account(gateway, account_id) == {"balance": Decimal("9.5"), "reserved": 0, "spent": Decimal("0.5")}


def test_concurrent_repeats_start_one_vendor_job(make_gateway, openai_upstream):
    state, url = openai_upstream
    state.delay = 0.5
    gateway = make_gateway(channels=[openai_channel(url)], unpriced="free")
    body = {"model": "dall-e-2", "prompt": "a heron", "size": "256x256"}

    def post(_: int) -> httpx.Response:
        with gateway.http(headers={"Idempotency-Key": "same-heron"}) as client:
            return client.post(GEN, json=body)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(post, range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len({a.json()["data"][0]["url"].split("?")[0] for a in answers}) == 1
    assert len(state.requests) == 1


@pytest.mark.parametrize("path, body", [
    ("/models/sandbox/sandbox-async/predictions", {"input": {"prompt": "x", "size": "32x32"}}),
    ("/v1/models/sandbox/sandbox-async/predictions", {"input": {"prompt": "x", "size": "32x32"}}),
    ("/models/sandbox/sandbox-image/predictions", {"input": {"prompt": "x", "size": "32x32"}})])
def test_idempotency_on_the_task_apis(make_gateway, path, body):
    gateway = make_gateway()
    with gateway.http(headers={"Idempotency-Key": "k-1"}) as client:
        first, again = client.post(path, json=body), client.post(path, json=body)
        conflict = client.post(path, json={"input": {**body["input"], "prompt": "y"}})
    assert first.status_code == again.status_code and first.status_code in (200, 201), first.text
    assert first.json()["id"] == again.json()["id"]
    assert conflict.status_code == 409 and "Idempotency-Key" in conflict.text
    assert len(_tasks(gateway)) == 1


def test_midjourney_repeat_answers_the_first_task(make_gateway):
    from pixelgate.simulators.midjourney import MidjourneyEmulatorState, create_app
    from tests.emulators.server import emulated
    from tests.surfaces.test_midjourney_native import channel

    with emulated(create_app, MidjourneyEmulatorState(duration=0.3)) as (state, base):
        gateway = make_gateway(channels=[channel(base)])
        with httpx.Client(base_url=gateway.base_url, headers={"mj-api-secret": ADMIN_KEY,
                                                              "Idempotency-Key": "mj-1"}) as client:
            answers = [client.post("/mj/submit/imagine", json={"prompt": "a cat"}).json() for _ in range(2)]
    assert answers[0] == answers[1] and answers[0]["code"] == 1
    assert len([r for r in state.requests if r.path.endswith("/submit/imagine")]) == 1


def test_an_idempotency_key_that_cannot_be_kept_is_refused(make_gateway):
    gateway = make_gateway()
    with gateway.http(headers={"Idempotency-Key": "has space"}) as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "Idempotency-Key"


def test_an_asynchronous_vendor_waited_for_on_the_openai_api_runs_as_a_task(make_gateway):
    """The client waits on its connection, but the job is a task row: it has an owner in the
    database from before the vendor is called (the admin API lists it)."""
    gateway = make_gateway(poll_interval_seconds=0.05)
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "sandbox-async", "prompt": "x", "size": "32x32",
                                      "sandbox_job_seconds": 0.2, "response_format": "b64_json"})
    assert resp.status_code == 200, resp.text
    assert Image.open(io.BytesIO(base64.b64decode(resp.json()["data"][0]["b64_json"]))).size == (32, 32)
    assert _tasks(gateway) == [("openai", "succeeded")]


@pytest.mark.long(20)
def test_kill_9_while_an_openai_client_waits_then_its_retry_gets_the_first_jobs_image(backend, tmp_path):
    admin_key, idem = "pg-idempotent-restart-admin", "retry-after-crash"
    admin = {"Authorization": f"Bearer {admin_key}"}
    with database(backend, tmp_path) as url:
        env = {**os.environ, "PIXELGATE_DATABASE_URL": url, "PIXELGATE_ADMIN_KEY": admin_key,
               "PIXELGATE_DATA_DIR": str(tmp_path / "data"), "PIXELGATE_POLL_INTERVAL_SECONDS": "0.1",
               "PIXELGATE_TASK_LEASE_SECONDS": "1", "PIXELGATE_UNPRICED": "refuse",
               "PIXELGATE_SANDBOX": "true"}  # a production database: the sandbox is asked for
        ask = dict(model="sandbox-async", prompt="survive", size="32x32", response_format="b64_json",
                   extra_headers={"Idempotency-Key": idem}, extra_body={"sandbox_job_seconds": 3})
        # --port 0 both times (a port picked first may be taken by another test in between): the
        # retry goes to wherever the restarted gateway listens, as a client behind a proxy would
        proc, base, _ = _start_anywhere(["serve"], tmp_path, env)
        try:
            with httpx.Client(base_url=base, headers=admin) as client:
                assert client.post("/admin/prices", json={"model": "sandbox-async", "amount": "0.5"}).status_code == 201
                account = client.post("/admin/accounts", json={"name": "a", "balance": "10"}).json()
                key = client.post("/admin/keys", json={"name": "k", "account_id": account["id"]}).json()["key"]
            sdk = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30)
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(sdk.images.generate, **ask)
                time.sleep(1.5)  # submitted: its job accepted and followed by the task
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                with pytest.raises(openai.APIConnectionError):
                    waiting.result()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        proc, base, _ = _start_anywhere(["serve"], tmp_path, env)
        try:
            retried = sdk.with_options(base_url=base + "/v1").images.generate(**ask)
            with httpx.Client(base_url=base, headers=admin) as client:
                usage = client.get("/admin/usage").json()
                after = client.get(f"/admin/accounts/{account['id']}").json()
        finally:
            _stop(proc)
    assert Image.open(io.BytesIO(base64.b64decode(retried.data[0].b64_json))).size == (32, 32)
    assert usage["total_images"] == 1 and Decimal(str(usage["total_cost"])) == Decimal("0.5")  # one job
    assert {k: Decimal(after[k]) for k in ("balance", "reserved", "spent")} == {
        "balance": Decimal("9.5"), "reserved": 0, "spent": Decimal("0.5")}  # charged once
