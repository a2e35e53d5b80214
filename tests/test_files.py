"""Image URLs are the gateway's own: signed, expiring, served from its storage."""

from __future__ import annotations

import time

import httpx


def _url(gateway, **settings) -> str:
    with gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x", "size": "32x32"})
    return resp.json()["data"][0]["url"]


def test_signed_url_serves_the_stored_image(gateway):
    url = _url(gateway)
    resp = httpx.get(url)
    assert resp.status_code == 200 and resp.content.startswith(b"\x89PNG")
    name = url.split("/files/")[1].split("?")[0]
    assert gateway.services.storage.read(name.split(".")[0]) == resp.content


def test_tampered_or_unsigned_url_is_refused(gateway):
    url = _url(gateway)
    assert httpx.get(url.replace("sig=", "sig=0")).status_code == 403
    assert httpx.get(url.split("?")[0]).status_code == 403
    assert httpx.get(url.replace("exp=", "exp=9")).status_code == 403


def test_url_expires(gateway):
    url = _url(gateway)
    assert httpx.get(url).status_code == 200
    gateway.services.signer.ttl = -1  # links made now expired a second ago (no waiting for a clock)
    expired = _url(gateway)
    resp = httpx.get(expired)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "link_expired"
    assert httpx.get(url).status_code == 200  # the earlier link still serves


def test_public_base_url(make_gateway):
    gateway = make_gateway(public_base_url="https://images.example.test/")
    assert _url(gateway).startswith("https://images.example.test/files/")


def test_keep_images_all_stores_base64_answers_too(make_gateway):
    import base64

    gateway = make_gateway(keep_images="all")
    with gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x", "size": "32x32",
                                                           "response_format": "b64_json"})
    row = gateway.log_row(resp.headers["x-request-id"])
    (image,) = row["images"]
    deadline = time.monotonic() + 5
    while gateway.services.storage.read(image["id"]) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gateway.services.storage.read(image["id"]) == base64.b64decode(resp.json()["data"][0]["b64_json"])


def test_base64_answers_pass_through_without_touching_the_disk(gateway):
    import base64

    with gateway.http() as client:
        b64 = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x", "size": "32x32",
                                                          "response_format": "b64_json"})
        linked = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x", "size": "32x32"})
    assert base64.b64decode(b64.json()["data"][0]["b64_json"]).startswith(b"\x89PNG")
    (image,) = gateway.log_row(b64.headers["x-request-id"])["images"]
    assert image["kept"] is False and image["bytes"] > 0
    assert gateway.services.storage.read(image["id"]) is None
    (segment,) = gateway.services.storage.root.glob("*.seg")
    linked_png = httpx.get(linked.json()["data"][0]["url"]).content
    assert linked_png.startswith(b"\x89PNG") and segment.read_bytes() == linked_png  # only the link's image
