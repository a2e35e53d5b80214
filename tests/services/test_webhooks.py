"""Webhook receivers kept apart: a dead or slow receiver holds only its own origin's share of the
senders and backs off on its own, so everyone else's webhooks go out on time; its own are sent,
with their ids, once it is back."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.emulators.server import serve
from tests.services.test_task_engine import Receiver, _submit


class Silent:
    """A receiver on raw TCP that accepts connections and never answers them, until revived: from
    then on it reads each request, answers 204 and notes its webhook-id."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/hook"
        self.accepted: list[float] = []
        """When each connection came (time.monotonic())."""
        self.answered: list[str] = []
        self.alive = threading.Event()
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "Silent":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:  # the accept timed out: look at _stop again
                continue
            self.accepted.append(time.monotonic())
            if self.alive.is_set():
                self._answer(conn)
            else:
                self._held.append(conn)

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in head.decode().split("\r\n")[1:])}
            while len(body) < int(headers.get("content-length", 0)):
                body += conn.recv(65536)
            self.answered.append(headers["webhook-id"])
            conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")


def _wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.long(20)
def test_a_dead_receiver_delays_only_its_own_webhooks_and_gets_them_when_back(make_gateway):
    healthy = Receiver()
    gateway = make_gateway(fetch_allow_hosts=["127.0.0.1"], fetch_timeout_seconds=10, webhook_retry_seconds=0.5,
                           webhook_per_destination=4)
    with Silent() as dead, serve(healthy.app()) as rx, gateway.http() as client:
        stuck = [_submit(client, dead.url, 0.1) for _ in range(20)]
        time.sleep(0.5)  # their webhooks are due, and being sent
        submitted = {_submit(client, rx + "/fast", 0.1): time.monotonic() for _ in range(5)}
        _wait_for(lambda: len(healthy.arrived) == len(submitted), 10)
        assert set(healthy.arrived) == set(submitted)
        # each arrived about when its task finished, not after the dead receiver's 10 s timeouts
        assert max(healthy.arrived[t] - submitted[t] for t in submitted) < 3
        # the dead origin's share of the senders, not all 16 (a retry comes only after a timeout)
        assert len([t for t in dead.accepted if t < dead.accepted[0] + 9]) == 4
        dead.alive.set()
        # its first four time out (at 10 s), then one probe finds it back and the rest follow (on a
        # loaded machine a probe may come before it was back, and wait out a timeout too)
        _wait_for(lambda: len(dead.answered) == len(stuck), 25)
        deliveries = [client.get(f"/admin/tasks/{t}").json()["webhooks"][0] for t in stuck]
    assert sorted(dead.answered) == sorted(d["id"] for d in deliveries)  # each sent once when back, none lost
    assert all(d["delivered"] and d["log"][-1]["status"] == 204 for d in deliveries)
    retried = [d for d in deliveries if d["attempts"] > 1]
    assert len(retried) >= 4  # the first four (and any early probe), resent with their own webhook-id
    assert all(entry["status"] is None for d in retried for entry in d["log"][:-1])


@pytest.mark.long(10)
def test_an_origin_that_fails_is_tried_one_webhook_at_a_time_after_doubling_waits(make_gateway):
    calls: list[str] = []
    back = threading.Event()

    async def hook(request: Request) -> Response:
        calls.append(request.headers["webhook-id"])
        return Response(status_code=204 if back.is_set() else 503)

    gateway = make_gateway(fetch_allow_hosts=["127.0.0.1"], webhook_retry_seconds=0.4)
    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as rx, gateway.http() as client:
        tasks = [_submit(client, rx + "/hook", 0.1) for _ in range(6)]
        time.sleep(2)
        # each webhook retried on its own would be 6 x 3 tries by now (at 0, 0.4 and 1.2 s); the
        # origin's circuit lets through the first (or the few sent before it opened) and 2 probes
        failing = len(calls)
        assert failing <= 6, calls
        back.set()
        _wait_for(lambda: len(set(calls[failing:])) == len(tasks), 8)
        deliveries = [client.get(f"/admin/tasks/{t}").json()["webhooks"][0] for t in tasks]
    assert all(d["delivered"] for d in deliveries)
    assert set(calls) == {d["id"] for d in deliveries}  # the ones that failed were resent with their own id
    assert len(calls[failing:]) == len(tasks)  # once each once it was back
