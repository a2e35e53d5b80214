"""Input images by URL: fetched once, guarded against server-side request forgery."""

from __future__ import annotations

import base64

import pytest
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response
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
