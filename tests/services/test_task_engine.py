"""The task engine's rules, each checked on a real gateway and database: fenced writes, leased
request holds and their sweeper, webhooks that never wait on each other, links from the task's
own origin, cancel when the vendor cannot cancel. The kill -9 proofs are in tests/test_fleet.py."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pixelgate.errors import LeaseLost
from pixelgate.simulators.bfl import BFLEmulatorState, create_app as create_bfl
from tests.emulators.server import serve


class Receiver:
    """Webhook receiver: /fast answers at once, /stall never within the sender's timeout."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.release = threading.Event()

    def app(self) -> Starlette:
        async def fast(request: Request) -> Response:
            body = await request.json()
            self.arrived[body["id"]] = time.monotonic()
            return Response(status_code=204)

        async def stall(request: Request) -> Response:
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return Response(status_code=204)

        return Starlette(routes=[Route("/fast", fast, methods=["POST"]), Route("/stall", stall, methods=["POST"])])


def _submit(client: httpx.Client, hook: str, seconds: float = 0.2) -> str:
    resp = client.post("/models/sandbox/sandbox-async/predictions", json={
        "input": {"prompt": "x", "size": "32x32", "sandbox_job_seconds": seconds}, "webhook": hook})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_a_stalled_webhook_receiver_delays_no_other_task(make_gateway):
    receiver = Receiver()
    gateway = make_gateway(fetch_allow_hosts=["127.0.0.1"], fetch_timeout_seconds=20)
    with serve(receiver.app()) as rx, gateway.http() as client:
        try:
            stalled = [_submit(client, rx + "/stall", 0.1) for _ in range(3)]
            time.sleep(0.5)  # their webhooks are being sent, and hang
            submitted = {_submit(client, rx + "/fast"): time.monotonic() for _ in range(5)}
            deadline = time.monotonic() + 10
            while len(receiver.arrived) < len(submitted) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert set(receiver.arrived) == set(submitted)
            # each arrived about when its task finished, not after the stalled sends' 20 s
            assert max(receiver.arrived[t] - submitted[t] for t in submitted) < 5
            assert all(client.get(f"/tasks/{t}").json()["status"] == "succeeded" for t in stalled)
        finally:
            receiver.release.set()


def test_webhook_links_point_at_the_host_each_task_was_submitted_to(make_gateway):
    receiver = Receiver()
    bodies: dict[str, dict] = {}

    async def hook(request: Request) -> Response:
        body = await request.json()
        bodies[body["id"]] = body
        return Response(status_code=204)

    gateway = make_gateway(fetch_allow_hosts=["127.0.0.1"])
    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as rx, gateway.http() as client:
        first = client.post("/models/sandbox/sandbox-async/predictions", headers={"Host": "first.example:8080"},
                            json={"input": {"prompt": "x", "sandbox_job_seconds": 0.1}, "webhook": rx + "/hook"})
        second = client.post("/models/sandbox/sandbox-async/predictions", headers={"Host": "second.example"},
                             json={"input": {"prompt": "x", "sandbox_job_seconds": 0.1}, "webhook": rx + "/hook"})
        deadline = time.monotonic() + 10
        while len(bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert bodies[first.json()["id"]]["output"][0]["url"].startswith("http://first.example:8080/files/")
    assert bodies[second.json()["id"]]["output"][0]["url"].startswith("http://second.example/files/")
    del receiver


def test_a_worker_whose_lease_was_taken_over_writes_nothing(make_gateway):
    gateway = make_gateway(poll_interval_seconds=30)  # the loop stays out of the way
    account_id, key = gateway.paying_key("10")
    gateway.set_price("sandbox-async", "1")
    with gateway.http(key) as client:
        task_id = client.post(
            "/models/sandbox/sandbox-async/predictions",
            json={"input": {"prompt": "x", "sandbox_job_seconds": 30}}).json()["id"]
    tasks = gateway.services.tasks.store
    first = gateway.run(tasks.take_over(task_id))
    assert first is not None
    gateway.run(tasks.write(task_id, first, lease_until=None))  # as if its lease ran out
    second = gateway.run(tasks.claim(task_id))
    assert second is not None and second != first
    with pytest.raises(LeaseLost):  # the stale worker: its outcome and its charge are refused
        gateway.run(tasks.finish(task_id, first, "succeeded", jobs=[{"id": None, "poll_url": None, "images": []}]))
    with pytest.raises(LeaseLost):
        gateway.run(tasks.write(task_id, first, progress=0.5))
    account = gateway.http().get(f"/admin/accounts/{account_id}").json()
    assert Decimal(account["reserved"]) == 1 and Decimal(account["spent"]) == 0
    gateway.run(tasks.finish(task_id, second, "failed", error={"code": "x", "message": "x"}))
    account = gateway.http().get(f"/admin/accounts/{account_id}").json()
    assert Decimal(account["reserved"]) == 0 and Decimal(account["spent"]) == 0


def test_the_hold_of_a_request_whose_process_died_is_released(make_gateway):
    gateway = make_gateway(task_lease_seconds=60)  # the loop's own sweep stays out of the way
    account_id, _ = gateway.paying_key("10")
    billing = gateway.services.engine.billing
    gateway.run(_holds(billing, account_id))
    account = gateway.http().get(f"/admin/accounts/{account_id}").json()
    assert Decimal(account["reserved"]) == 0 and Decimal(account["spent"]) == 3


async def _holds(billing, account_id: int) -> None:
    # what a process killed between hold and settle leaves behind: a leased, unsettled hold
    assert await billing.hold(account_id, "req_dead", Decimal("2"), 1, lease_seconds=0.3)
    # and a live one, renewed by its request
    assert await billing.hold(account_id, "req_alive", Decimal("3"), 1, lease_seconds=0.3)
    for _ in range(4):
        await asyncio.sleep(0.2)
        await billing.renew("req_alive", 0.3)
    assert await billing.release_abandoned() == 1
    assert (await billing.account(account_id)).reserved == 3
    assert await billing.settle("req_alive", 1) == 3
    assert await billing.release_abandoned() == 0


def test_the_task_loop_sweeps_dead_holds_by_itself(make_gateway):
    gateway = make_gateway(task_lease_seconds=0.3)
    account_id, _ = gateway.paying_key("10")

    async def dead_hold() -> None:
        await gateway.services.engine.billing.hold(account_id, "req_gone", Decimal("4"), 1, lease_seconds=0.1)

    gateway.run(dead_hold())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        account = gateway.http().get(f"/admin/accounts/{account_id}").json()
        if Decimal(account["reserved"]) == 0:
            break
        time.sleep(0.1)
    assert Decimal(account["reserved"]) == 0 and Decimal(account["balance"]) == 10


@pytest.fixture
def bfl_gateway(make_gateway):
    state = BFLEmulatorState(pending_seconds=30)
    with serve(create_bfl(state)) as base:
        gateway = make_gateway(channels=[{"name": "bfl", "provider": "bfl", "base_url": base + "/v1", "api_key": "bfl-emulator-key",
                                          "models": ["flux-2-pro"]}])
        yield gateway, state


def test_replicate_cancel_where_the_vendor_cannot_cancel_answers_canceled_and_charges_nothing(bfl_gateway):
    gateway, state = bfl_gateway
    account_id, key = gateway.paying_key("10")
    gateway.set_price("flux-2-pro", "1.5")
    with gateway.http(key) as client:
        created = client.post("/v1/models/black-forest-labs/flux-2-pro/predictions",
                              json={"input": {"prompt": "a slow fox"}})
        assert created.status_code == 201, created.text
        held = gateway.http().get(f"/admin/accounts/{account_id}").json()
        assert Decimal(held["reserved"]) == Decimal("1.5")
        canceled = client.post(f"/v1/predictions/{created.json()['id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        assert "cannot stop" in canceled.json()["error"]
        time.sleep(0.3)  # the poller, had it kept the job, would have polled by now
        assert client.get(f"/v1/predictions/{created.json()['id']}").json()["status"] == "canceled"
    account = gateway.http().get(f"/admin/accounts/{account_id}").json()
    assert Decimal(account["reserved"]) == 0 and Decimal(account["spent"]) == 0
    assert Decimal(account["balance"]) == 10
