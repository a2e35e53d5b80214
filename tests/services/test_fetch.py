"""Input images by URL: fetched once, guarded against server-side request forgery."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import png
from tests.emulators.server import serve

IMAGE = png(64, 64)


def _image_host():
    async def image(request):
        return Response(IMAGE, media_type="image/png")

    async def redirect(request):
        return RedirectResponse(str(request.query_params["to"]))

    async def big(request):
        return Response(b"\0" * (3 * 1024 * 1024), media_type="image/png")

    return Starlette(routes=[Route("/img.png", image), Route("/redirect", redirect), Route("/big.png", big)])


@pytest.fixture
def image_host():
    with serve(_image_host()) as base:
        yield base


def _edit(gateway, url: str):
    with gateway.http() as client:
        return client.post("/v1/images/edits", json={"model": "sandbox-image", "prompt": "edit",
                                                     "images": [{"image_url": url}], "size": "32x32"})


def test_data_url_image(gateway):
    resp = _edit(gateway, "data:image/png;base64," + base64.b64encode(IMAGE).decode())
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/img.png", "http://[::1]:9/img.png", "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/img.png", "http://192.168.0.10/img.png", "ftp://example.com/img.png", "file:///etc/passwd",
])
def test_private_and_odd_urls_are_refused_without_fetching(gateway, url):
    resp = _edit(gateway, url)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "images[0].image_url"
    assert resp.json()["error"]["code"] in ("url_not_allowed", "invalid_url")


def test_a_name_that_resolves_to_loopback_is_refused(gateway, image_host):
    resp = _edit(gateway, image_host.replace("127.0.0.1", "localhost") + "/img.png")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "url_not_allowed"


def test_operator_allowed_host_is_fetched(make_gateway, image_host):
    gateway = make_gateway(fetch_allow_hosts=["localhost"])
    resp = _edit(gateway, image_host.replace("127.0.0.1", "localhost") + "/img.png")
    assert resp.status_code == 200, resp.text


def test_every_redirect_hop_is_checked(make_gateway, image_host):
    gateway = make_gateway(fetch_allow_hosts=["localhost"])
    allowed = image_host.replace("127.0.0.1", "localhost")
    resp = _edit(gateway, f"{allowed}/redirect?to={image_host}/img.png")  # hop 2 is a loopback literal
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "url_not_allowed"
    ok = _edit(gateway, f"{allowed}/redirect?to={allowed}/img.png")
    assert ok.status_code == 200


def test_byte_limit(make_gateway, image_host):
    gateway = make_gateway(fetch_allow_hosts=["localhost"], fetch_max_bytes=1024 * 1024)
    resp = _edit(gateway, image_host.replace("127.0.0.1", "localhost") + "/big.png")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "image_too_large"


def test_file_ids_are_refused(gateway):
    with gateway.http() as client:
        resp = client.post("/v1/images/edits", json={"model": "sandbox-image", "prompt": "x",
                                                     "images": [{"file_id": "file-1"}]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "images[0].file_id"


@pytest.mark.parametrize("address", [
    "::127.0.0.1", "::10.0.0.1", "::ffff:127.0.0.1", "::ffff:0:7f00:1",  # compatible, mapped, translated
    "2002:7f00:1::", "2002:a9fe:a9fe::1",  # 6to4 of 127.0.0.1 and 169.254.169.254
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::c0a8:1",  # NAT64, well-known and local-use
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is 127.0.0.1
    "::", "::1", "fe80::1", "fc00::1", "ff02::1",
])
def test_ipv6_forms_of_private_ipv4_are_not_public(address):
    from pixelgate.services.fetch import is_public

    assert not is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "2002:808:808::", "64:ff9b::808:808",
                                     "::ffff:8.8.8.8"])
def test_public_addresses_stay_public(address):
    from pixelgate.services.fetch import is_public

    assert is_public(address)


def _prediction(gateway, webhook: str):
    with gateway.http() as client:
        return client.post("/models/sandbox/sandbox-async/predictions",
                           json={"input": {"prompt": "x", "size": "32x32"}, "webhook": webhook})


@pytest.mark.parametrize("webhook,code", [
    ("http://localhost/hook", "url_not_allowed"), ("http://[::127.0.0.1]/hook", "url_not_allowed"),
    ("http://[64:ff9b::7f00:1]/hook", "url_not_allowed"), ("http://no-such-host.invalid/hook", "url_unresolvable"),
    ("http://example.com:99999/hook", "invalid_url"),
])
def test_a_webhook_that_can_never_be_delivered_is_refused_at_submit(gateway, webhook, code):
    resp = _prediction(gateway, webhook)
    assert resp.status_code == 400, resp.text
    assert (resp.json()["error"]["param"], resp.json()["error"]["code"]) == ("webhook", code)
    with gateway.http() as client:
        resp = client.post("/v1/models/sandbox/sandbox-async/predictions",
                           json={"input": {"prompt": "x"}, "webhook": webhook})
    assert resp.status_code == 422 and resp.json()["invalid_fields"][0]["field"] == "webhook"  # Replicate's shape


def test_a_notify_hook_on_loopback_is_refused_at_submit(make_gateway):
    from pixelgate.simulators.midjourney import MidjourneyEmulatorState, create_app
    from tests.emulators.server import emulated

    with emulated(create_app, MidjourneyEmulatorState()) as (state, base):
        gateway = make_gateway(channels=[{"name": "mj", "provider": "midjourney", "base_url": base,
                                          "api_key": "mj-emulator-secret", "models": ["midjourney"]}])
        with gateway.http() as client:
            resp = client.post("/mj/submit/imagine", json={"prompt": "a fox", "notifyHook": "http://localhost:1/h"})
        assert resp.status_code == 200 and resp.json()["code"] == 4, resp.text
        assert "notifyHook" in resp.json()["description"]
        assert state.requests == []


def test_a_webhook_receiver_answering_without_end_is_read_no_further(make_gateway):
    """Only the status of a webhook's answer counts: a receiver streaming an endless body gets
    its delivery recorded at once, not after the timeout, and nothing is retried."""
    async def hook(request):
        async def forever():
            while True:
                yield b"x" * 65536
                await asyncio.sleep(0)
        return StreamingResponse(forever(), media_type="text/plain")

    gateway = make_gateway(fetch_allow_hosts=["127.0.0.1"], webhook_retry_seconds=0.1, fetch_timeout_seconds=20)
    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as base:
        resp = _prediction(gateway, base + "/hook")
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["id"]
        deadline, delivery = time.monotonic() + 10, None
        with gateway.http() as admin:
            while time.monotonic() < deadline:
                deliveries = admin.get(f"/admin/tasks/{task_id}").json()["webhooks"]
                if deliveries and deliveries[0]["attempts"]:
                    delivery = deliveries[0]
                    break
                time.sleep(0.05)
    assert delivery is not None and delivery["delivered"] and delivery["attempts"] == 1, delivery
