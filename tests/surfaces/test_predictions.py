"""The predictions and tasks API: sync models answer at once, async ones become tasks that the
gateway polls in the background; webhooks are signed and retried; a task is its owner's only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from tests.emulators.server import serve


def _wait_done(client: httpx.Client, url: str, seconds: float = 20) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        task = client.get(url).json()
        if task["status"] in ("succeeded", "failed", "canceled"):
            return task
        time.sleep(0.05)
    raise AssertionError(f"task not finished: {task}")


def test_sync_model_answers_with_the_finished_prediction(gateway):
    with gateway.http() as client:
        resp = client.post("/models/sandbox/sandbox-image/predictions",
                           json={"input": {"prompt": "a deer", "size": "64x48", "n": 2}})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "succeeded" and body["model"] == "sandbox/sandbox-image"
        assert len(body["output"]) == 2 and body["metrics"]["image_count"] == 2
        assert client.get(body["output"][0]["url"]).status_code == 200


def test_async_model_answers_with_a_task_and_polling_url(gateway):
    with gateway.http() as client:
        resp = client.post("/models/sandbox/sandbox-async/predictions",
                           json={"input": {"prompt": "a deer", "size": "64x64", "sandbox_job_seconds": 0.5}})
        assert resp.status_code == 201, resp.text
        out = resp.json()["output"][0]
        assert out["polling_url"] == f"{gateway.base_url}/tasks/{out['taskId']}"
        first = client.get(out["polling_url"]).json()
        assert first["status"] in ("pending", "running")
        task = _wait_done(client, out["polling_url"])
    assert task["status"] == "succeeded" and task["progress"] == 1.0
    assert httpx.get(task["output"][0]["url"]).content.startswith(b"\x89PNG")


def test_prefer_wait_and_respond_async(gateway):
    with gateway.http() as client:
        waited = client.post("/models/sandbox/sandbox-async/predictions", headers={"Prefer": "wait=10"},
                             json={"input": {"prompt": "x", "size": "32x32", "sandbox_job_seconds": 0.2}})
        assert waited.json()["status"] == "succeeded" and waited.json()["output"]
        background = client.post("/models/sandbox/sandbox-image/predictions", headers={"Prefer": "respond-async"},
                                 json={"input": {"prompt": "x", "size": "32x32"}})
        assert background.status_code == 201
        task = _wait_done(client, background.json()["output"][0]["polling_url"])
    assert task["status"] == "succeeded"


def test_a_task_is_its_owners_only(gateway):
    other = gateway.create_key(name="other")
    with gateway.http() as client:
        task_id = client.post("/models/sandbox/sandbox-async/predictions",
                              json={"input": {"prompt": "x", "size": "32x32"}}).json()["id"]
    with gateway.http(key=other) as client:
        assert client.get(f"/tasks/{task_id}").status_code == 404
        assert client.post(f"/tasks/{task_id}/cancel").status_code == 404
        assert client.get(f"/v1/predictions/{task_id}").status_code == 404


def test_cancel(gateway):
    with gateway.http() as client:
        task_id = client.post("/models/sandbox/sandbox-async/predictions",
                              json={"input": {"prompt": "x", "size": "32x32", "sandbox_job_seconds": 30}}).json()["id"]
        canceled = client.post(f"/tasks/{task_id}/cancel").json()
        assert canceled["status"] == "canceled"
        time.sleep(0.3)
        assert client.get(f"/tasks/{task_id}").json()["status"] == "canceled"


def test_failed_job(gateway):
    with gateway.http() as client:
        resp = client.post("/models/sandbox/sandbox-async/predictions",
                           json={"input": {"prompt": "x", "sandbox_fail": "job_failed", "sandbox_job_seconds": 0.1}})
        task = _wait_done(client, resp.json()["output"][0]["polling_url"])
    assert task["status"] == "failed" and task["error"]["code"] == "upstream_job_failed"


@pytest.mark.parametrize("body,status,param", [
    ({"input": {"prompt": "x", "wat": 1}}, 400, "input.wat"),
    ({"input": {"prompt": "x", "n": 11}}, 400, "input.n"),
    ({"input": {"prompt": 5}}, 400, "input.prompt"),
    ({"input": {"prompt": "x", "size": "huge"}}, 400, "input.size"),
    ({"prompt": "x"}, 400, "prompt"),
    ({}, 400, "input"),
    ({"input": {"prompt": "x"}, "webhook": "http://169.254.169.254/"}, 400, "webhook"),
])
def test_bad_input(gateway, body, status, param):
    with gateway.http() as client:
        resp = client.post("/models/sandbox/sandbox-image/predictions", json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["param"] == param


def test_unknown_model_and_non_json(gateway):
    with gateway.http() as client:
        assert client.post("/models/acme/nope/predictions", json={"input": {"prompt": "x"}}).status_code == 404
        resp = client.post("/models/sandbox/sandbox-image/predictions", content=b"{oops",
                           headers={"content-type": "application/json"})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
        assert client.get("/tasks/task_nope").status_code == 404


class Receiver:
    """A webhook receiver that fails its first `failures` deliveries."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[dict, bytes]] = []

    def app(self) -> Starlette:
        async def hook(request):
            self.calls.append((dict(request.headers), await request.body()))
            if len(self.calls) <= self.failures:
                return Response(status_code=500)
            return Response(status_code=204)
        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def _verify(secret: str, headers: dict, body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return headers["webhook-signature"] == f"v1,{expected}"


def test_webhook_is_signed_and_retried_until_the_receiver_recovers(make_gateway):
    receiver = Receiver(failures=2)
    gateway = make_gateway(fetch_allow_hosts=["127.0.0.1"], webhook_retry_seconds=0.1)
    with serve(receiver.app()) as base, gateway.http() as client:
        resp = client.post("/models/sandbox/sandbox-async/predictions",
                           json={"input": {"prompt": "x", "size": "32x32", "sandbox_job_seconds": 0.2},
                                 "webhook": base + "/hook"})
        task_id = resp.json()["id"]
        deadline = time.monotonic() + 15
        while len(receiver.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # nothing more may come once delivered
        secret = client.get("/v1/webhooks/default/secret").json()["key"]
    assert len(receiver.calls) == 3
    ids = {headers["webhook-id"] for headers, _ in receiver.calls}
    assert len(ids) == 1  # one message, retried
    for headers, body in receiver.calls:
        assert _verify(secret, headers, body)
        assert orjson.loads(body)["id"] == task_id and orjson.loads(body)["status"] == "succeeded"
    with gateway.http() as admin:
        (delivery,) = admin.get(f"/admin/tasks/{task_id}").json()["webhooks"]
    assert delivery["delivered"] and delivery["attempts"] == 3
    assert [entry["status"] for entry in delivery["log"]] == [500, 500, 204]
