"""Routing: priority, weight, failover when nothing was accepted, no retry otherwise; every
attempt lands in the request log."""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from tests.conftest import LEGACY_DAY, openai_channel
from pixelgate.simulators.openai_images import OpenAIEmulatorState, create_app
from tests.emulators.server import serve

GEN = "/v1/images/generations"
BODY = {"model": "dall-e-2", "prompt": "a fox", "size": "256x256", "response_format": "b64_json"}


@pytest.fixture
def two_upstreams():
    a, b = OpenAIEmulatorState(today=LEGACY_DAY), OpenAIEmulatorState(today=LEGACY_DAY)
    with serve(create_app(a)) as base_a, serve(create_app(b)) as base_b:
        yield (a, base_a + "/v1"), (b, base_b + "/v1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_higher_priority_channel_is_used_first(make_gateway, two_upstreams):
    (a, url_a), (b, url_b) = two_upstreams
    gateway = make_gateway(channels=[openai_channel(url_a, "low", priority=0),
                                     openai_channel(url_b, "high", priority=10)])
    with gateway.http() as client:
        for _ in range(3):
            assert client.post(GEN, json=BODY).status_code == 200
    assert len(b.requests) == 3 and a.requests == []


def test_weights_spread_load(make_gateway, two_upstreams):
    (a, url_a), (b, url_b) = two_upstreams
    gateway = make_gateway(channels=[openai_channel(url_a, "heavy", weight=9),
                                     openai_channel(url_b, "light", weight=1)])
    with gateway.http() as client:
        for _ in range(60):
            assert client.post(GEN, json={**BODY, "size": "256x256"}).status_code == 200
    # 9:1 expected; with 60 draws the light channel takes well under half
    assert len(a.requests) > 40 and len(a.requests) + len(b.requests) == 60


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_failover_when_nothing_was_accepted(make_gateway, two_upstreams, status):
    (a, url_a), (b, url_b) = two_upstreams
    gateway = make_gateway(channels=[openai_channel(url_a, "first", priority=10),
                                     openai_channel(url_b, "second", priority=0)])
    a.fail_next(status)
    with gateway.http() as client:
        resp = client.post(GEN, json=BODY)
    assert resp.status_code == 200, resp.text
    assert len(a.requests) == 1 and len(b.requests) == 1
    row = gateway.log_row(resp.headers["x-request-id"])
    assert row["channel"] == "second" and row["status"] == 200
    assert [att["channel"] for att in row["attempts"]] == ["first", "second"]
    assert row["attempts"][0]["status"] in (502, 429) and "error" not in row["attempts"][1]


def test_failover_on_connection_refused(make_gateway, openai_upstream):
    state, url = openai_upstream
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    gateway = make_gateway(channels=[openai_channel(dead, "dead", priority=10), openai_channel(url, "alive")])
    with gateway.http() as client:
        resp = client.post(GEN, json=BODY)
    assert resp.status_code == 200
    row = gateway.log_row(resp.headers["x-request-id"])
    assert row["attempts"][0]["error"] == "upstream_unavailable"


def test_failover_on_bad_channel_key(make_gateway, two_upstreams):
    (a, url_a), (b, url_b) = two_upstreams
    gateway = make_gateway(channels=[openai_channel(url_a, "wrong-key", priority=10, api_key="sk-wrong"),
                                     openai_channel(url_b, "right-key")])
    with gateway.http() as client:
        assert client.post(GEN, json=BODY).status_code == 200
    assert len(b.requests) == 1


def test_request_error_from_upstream_is_not_retried(make_gateway, two_upstreams):
    (a, url_a), (b, url_b) = two_upstreams
    gateway = make_gateway(channels=[openai_channel(url_a, "first", priority=10), openai_channel(url_b, "second")])
    a.fail_next(400, {"error": {"message": "Invalid prompt", "type": "invalid_request_error",
                                "param": "prompt", "code": "invalid_value"}})
    with gateway.http() as client:
        resp = client.post(GEN, json=BODY)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "prompt"
    assert b.requests == []


def test_all_channels_failing_gives_5xx_with_every_attempt_logged(make_gateway, two_upstreams):
    (a, url_a), (b, url_b) = two_upstreams
    gateway = make_gateway(channels=[openai_channel(url_a, "first", priority=10), openai_channel(url_b, "second")])
    a.fail_next(503)
    b.fail_next(500)
    with gateway.http() as client:
        resp = client.post(GEN, json=BODY)
    assert resp.status_code == 502
    assert resp.json()["error"]["type"] == "server_error"
    row = gateway.log_row(resp.headers["x-request-id"])
    assert row["status"] == 502 and len(row["attempts"]) == 2 and row["images_delivered"] == 0


def test_attempts_are_bounded(make_gateway, tmp_path):
    states = [OpenAIEmulatorState(today=LEGACY_DAY) for _ in range(4)]
    with serve(create_app(states[0])) as u0, serve(create_app(states[1])) as u1, \
            serve(create_app(states[2])) as u2, serve(create_app(states[3])) as u3:
        urls = [u0, u1, u2, u3]
        gateway = make_gateway(max_attempts=2, channels=[
            openai_channel(u + "/v1", f"c{i}", priority=10 - i) for i, u in enumerate(urls)])
        for s in states:
            s.fail_next(500)
        with gateway.http() as client:
            assert client.post(GEN, json=BODY).status_code == 502
    assert [len(s.requests) for s in states] == [1, 1, 0, 0]


def test_timeout_is_504_and_not_retried(make_gateway, two_upstreams):
    (a, url_a), (b, url_b) = two_upstreams
    gateway = make_gateway(channels=[openai_channel(url_a, "slow", priority=10, timeout_seconds=0.3),
                                     openai_channel(url_b, "other")])
    a.delay = 2
    with gateway.http() as client:
        resp = client.post(GEN, json=BODY)
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"
    assert b.requests == []


def test_sandbox_failure_modes_map_to_clear_errors(gateway):
    expected = {"server_error": 502, "unavailable": 502, "rate_limit": 429, "moderation": 400,
                "bad_request": 400, "bad_response": 502, "connection": 502}
    with gateway.http() as client:
        got = {mode: client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "32x32",
                                            "sandbox_fail": mode}).status_code for mode in expected}
    assert got == expected


def test_sandbox_channels_fail_over_like_real_ones(make_gateway):
    gateway = make_gateway(sandbox=False, channels=[
        {"name": "broken", "provider": "sandbox", "models": ["pic"], "priority": 5},
        {"name": "fine", "provider": "sandbox", "models": ["pic"]}])
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "pic", "prompt": "x", "size": "32x32", "sandbox_fail": "rate_limit"})
    # both channels honour the same option, so both fail, one after the other
    assert resp.status_code == 429
    assert Counter(a["channel"] for a in gateway.log_row(resp.headers["x-request-id"])["attempts"]) == \
        {"broken": 1, "fine": 1}
