"""Issue 11, hardening: whatever a client or a vendor sends, the gateway answers a clean 4xx or
502 in the surface's own shape, fetches nothing it should not, and holds nothing it need not.
Hostile vendors and clients here are small servers on loopback, spoken to over real sockets."""

from __future__ import annotations

import os

import asyncio
import base64
import io
import select
import socket
import threading
import time

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pixelgate.services.auth import hash_key
from pixelgate.services.transport import _sse_lines
from tests.conftest import ADMIN_KEY, REDIS_URL, openai_channel, openai_error, png
from tests.emulators.server import serve

GEN = "/v1/images/generations"


class Vendor:
    """An OpenAI-compatible upstream that answers what the test tells it to, and a second
    server (another origin on loopback) holding a secret no vendor answer may make us read."""

    def __init__(self) -> None:
        self.answer: dict | None = None
        self.raw: bytes | None = None
        self.secret_reads = 0
        self.image_bytes = png(16, 16)

    def app(self) -> Starlette:
        async def generate(request: Request):
            await request.body()
            if self.raw is not None:
                return Response(self.raw, media_type="application/json")
            return JSONResponse(self.answer)

        async def image(request: Request):
            return Response(self.image_bytes, media_type="image/png")

        async def endless(request: Request):
            async def chunks():
                block = b"\0" * 65536
                for _ in range(32 * 1024):  # 2 GiB, if anyone were to read it all
                    yield block
            return StreamingResponse(chunks(), media_type="image/png")

        return Starlette(routes=[Route("/v1/images/generations", generate, methods=["POST"]),
                                 Route("/img.png", image), Route("/endless.png", endless)])

    def secret_app(self) -> Starlette:
        async def secret(request: Request):
            self.secret_reads += 1
            return Response(png(8, 8), media_type="image/png")

        return Starlette(routes=[Route("/secret", secret)])


@pytest.fixture
def vendor():
    v = Vendor()
    with serve(v.app()) as base, serve(v.secret_app()) as secret:
        yield v, base, secret


def _generate(gateway, **fields):
    with gateway.http() as client:
        return client.post(GEN, json={"model": "dall-e-2", "prompt": "x", "size": "256x256",
                                      "response_format": "b64_json", **fields})


# -- 1. what a vendor hands us --

def test_a_vendors_cookie_is_never_sent_back_for_any_channel(make_gateway):
    """A vendor's Set-Cookie (Cloudflare's __cf_bm on api.openai.com, a load balancer's affinity)
    is not kept: one pool serves every channel, so a kept cookie would go out with other
    customers' keys to the same host, and stale ones with the next requests."""
    seen: list[str | None] = []

    async def generate(request: Request):
        await request.body()
        seen.append(request.headers.get("cookie"))
        return JSONResponse({"created": 1, "data": [{"b64_json": base64.b64encode(png(16, 16)).decode()}]},
                            headers={"set-cookie": "__cf_bm=first-tenant; Path=/; HttpOnly"})

    with serve(Starlette(routes=[Route("/v1/images/generations", generate, methods=["POST"])])) as base:
        base = base.replace("127.0.0.1", "localhost")  # a cookie jar takes no cookie from an IP address
        gateway = make_gateway(channels=[openai_channel(base + "/v1", name="first", api_key="sk-first-tenant"),
                                         openai_channel(base + "/v1", name="second", api_key="sk-second-tenant",
                                                        priority=-1)])
        for _ in range(3):
            assert _generate(gateway).status_code == 200
    assert seen == [None, None, None]


def test_a_vendor_image_url_on_loopback_is_not_fetched(make_gateway, vendor):
    v, base, secret = vendor
    gateway = make_gateway(channels=[openai_channel(base + "/v1")])
    v.answer = {"created": 1, "data": [{"url": secret + "/secret"}]}
    err = openai_error(_generate(gateway), 502, code="upstream_url_refused")
    assert "neither the channel's own origin" in err["message"]
    assert v.secret_reads == 0
    v.answer = {"created": 1, "data": [{"url": "http://[::ffff:127.0.0.1]:1/secret"}]}
    openai_error(_generate(gateway), 502, code="upstream_url_refused")
    # a host the operator lists as an image host must still be public, unless fetch_allow_hosts says so
    gateway = make_gateway(channels=[openai_channel(base + "/v1")], upstream_image_hosts=["127.0.0.*"])
    v.answer = {"created": 1, "data": [{"url": secret + "/secret"}]}
    err = openai_error(_generate(gateway), 502, code="upstream_url_refused")
    assert "not public" in err["message"] and v.secret_reads == 0
    gateway = make_gateway(channels=[openai_channel(base + "/v1")], upstream_image_hosts=["127.0.0.*"],
                           fetch_allow_hosts=["127.0.0.1"])
    assert _generate(gateway).status_code == 200 and v.secret_reads == 1


def test_a_vendor_image_url_on_another_channels_origin_is_not_fetched(make_gateway, vendor):
    """Every channel's origin used to be trusted for every channel's images: an openai-compatible
    vendor could make the gateway read another channel's service and serve it back."""
    v, base, secret = vendor
    gateway = make_gateway(channels=[{"name": "compat", "provider": "openai-compatible", "base_url": base + "/v1",
                                      "api_key": "k-compat", "models": ["house-model"]},
                                     {"name": "other", "provider": "openai-compatible", "base_url": secret,
                                      "api_key": "k-other", "models": ["other-model"]}])
    v.answer = {"created": 1, "data": [{"url": secret + "/secret"}]}
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "house-model", "prompt": "x", "response_format": "url"})
    err = openai_error(resp, 502, code="upstream_url_refused")
    assert secret.split("//")[1].split(":")[0] in err["message"] and v.secret_reads == 0


def test_only_images_are_stored_whatever_the_vendor_sends(make_gateway, vendor):
    v, base, _ = vendor
    gateway = make_gateway(channels=[openai_channel(base + "/v1")])
    v.image_bytes = b'{"internal": "a JSON document, not an image"}'
    for answer in ({"url": base + "/img.png"}, {"b64_json": base64.b64encode(v.image_bytes).decode()}):
        v.answer = {"created": 1, "data": [answer]}
        err = openai_error(_generate(gateway, response_format="url"), 502, code="upstream_bad_response")
        assert "not an image" in err["message"]
    v.image_bytes = png(16, 16)
    v.answer = {"created": 1, "data": [{"url": base + "/img.png"}]}
    resp = _generate(gateway, response_format="url")
    assert resp.status_code == 200, resp.text
    served = httpx.get(resp.json()["data"][0]["url"])
    assert served.headers["content-type"] == "image/png" and served.content == v.image_bytes


def test_a_base64_answer_passed_through_must_still_be_an_image(make_gateway, vendor):
    """A b64_json answer the gateway keeps no copy of goes out as the vendor wrote it, checked by
    its header only (decoded from the first 64 KiB of base64): a vendor's text that is no image
    is refused, short or long, and an image whose header lies further in still passes."""
    from PIL import Image

    v, base, _ = vendor
    gateway = make_gateway(channels=[openai_channel(base + "/v1")])
    for text in (b'{"internal": "a JSON document, not an image"}', b"<html>" + b"x" * 200_000):
        v.answer = {"created": 1, "data": [{"b64_json": base64.b64encode(text).decode()}]}
        err = openai_error(_generate(gateway), 502, code="upstream_bad_response")
        assert "not an image" in err["message"]
    v.answer = {"created": 1, "data": [{"b64_json": "not base64 at all!" * 10_000}]}
    assert "not valid base64" in openai_error(_generate(gateway), 502, code="upstream_bad_response")["message"]
    late_header = io.BytesIO()  # a JPEG whose size comes after a 60 KB comment
    Image.new("RGB", (48, 32), "red").save(late_header, "JPEG", comment=b"c" * 60_000)
    for image in (late_header.getvalue(), png(40, 30)):
        v.answer = {"created": 1, "data": [{"b64_json": base64.b64encode(image).decode()}]}
        resp = _generate(gateway)
        assert resp.status_code == 200, resp.text
        assert base64.b64decode(resp.json()["data"][0]["b64_json"]) == image


def test_the_delivery_hosts_providers_declare_match_their_vendors_urls():
    from pixelgate.providers import REGISTRY
    from pixelgate.services.fetch import image_source

    seen = {"openai": "https://oaidalleapiprodscus.blob.core.windows.net/private/org/img.png?st=1",
            "bfl": "https://delivery-us1.bfl.ai/results/ab/cd/sample.jpeg?se=1&sig=2",
            "ark": "https://ark-content-generation-v2-cn-beijing.tos-cn-beijing.volces.com/seedream/x.jpeg",
            "dashscope": "https://dashscope-result-sh.oss-cn-shanghai.aliyuncs.com/1d/ab/x.png?Expires=1",
            "ideogram": "https://ideogram.ai/api/images/ephemeral/xtdZ.png?exp=1&sig=e1",
            "qianfan": "https://qianfan-img-gen.bj.bcebos.com/x.png?authorization=bce",
            "midjourney": "https://cdn.discordapp.com/attachments/1/2/grid_0.png"}
    for name, url in seen.items():
        provider = REGISTRY[name]
        allowed = image_source("https://api.example:443", provider.image_hosts)
        assert allowed(url), name
        for foreign in ("http://127.0.0.1:8080/x", "https://evil.example/x.png", "https://ideogram.ai.evil.example/x"):
            assert not allowed(foreign), (name, foreign)
    own = image_source("http://127.0.0.1:9000", ())
    assert own("http://127.0.0.1:9000/files/x") and not own("http://127.0.0.1:9001/x")


def test_a_vendor_image_url_on_the_channels_own_origin_is_fetched(make_gateway, vendor):
    v, base, _ = vendor
    gateway = make_gateway(channels=[openai_channel(base + "/v1")])
    v.answer = {"created": 1, "data": [{"url": base + "/img.png"}]}
    resp = _generate(gateway)
    assert resp.status_code == 200, resp.text


def test_a_vendor_image_download_stops_at_the_byte_cap(make_gateway, vendor):
    v, base, _ = vendor
    gateway = make_gateway(channels=[openai_channel(base + "/v1")], upstream_max_bytes=1024 * 1024)
    v.answer = {"created": 1, "data": [{"url": base + "/endless.png"}]}
    started = time.monotonic()
    err = openai_error(_generate(gateway), 502, code="upstream_too_large")
    assert "1 MiB" in err["message"] and time.monotonic() - started < 10


def test_a_vendor_answer_over_the_byte_cap_is_a_502(make_gateway, vendor):
    v, base, _ = vendor
    gateway = make_gateway(channels=[openai_channel(base + "/v1")], upstream_max_bytes=64 * 1024)
    v.raw = b'{"created": 1, "data": [{"b64_json": "' + b"A" * (200 * 1024) + b'"}]}'
    openai_error(_generate(gateway), 502, code="upstream_too_large")


async def _chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def _events(data: bytes, size: int, cap: int = 1 << 30) -> list:
    return [e async for e in _sse_lines(_chunks(data, size), cap)]


def test_sse_splitting_is_linear_in_the_line_length():
    payload = b"A" * (12 * 1024 * 1024)  # one 12 MB frame (a large image in base64) in 4 KB pieces
    frame = b'event: image_generation.completed\ndata: {"b64_json": "' + payload + b'"}\n\n'
    started = time.perf_counter()
    events = asyncio.run(_events(frame, 4096))
    assert time.perf_counter() - started < 3  # quadratic splitting took minutes
    assert events == [("image_generation.completed", {"b64_json": payload.decode()})]
    # several events across odd chunk boundaries, \r\n line ends included
    stream = b"".join(b'event: e%d\r\ndata: {"i": %d}\r\n\r\n' % (i, i) for i in range(50)) + b"data: [DONE]\n\n"
    for size in (1, 3, 7, 64, 10_000):
        assert asyncio.run(_events(stream, size)) == [(f"e{i}", {"i": i}) for i in range(50)]


def test_an_sse_stream_over_the_byte_cap_stops():
    from pixelgate.errors import UpstreamBadResponse

    with pytest.raises(UpstreamBadResponse, match="larger than"):
        asyncio.run(_events(b"data: " + b"A" * 100_000 + b"\n\n", 1000, cap=50_000))


# -- 3. 500s found by fuzzing --

def test_a_non_ascii_signature_on_files_is_a_403(gateway):
    with gateway.http(key=None) as client:
        resp = client.get("/files/" + "0" * 32 + ".png", params={"exp": 9999999999, "sig": "é" * 10})
    openai_error(resp, 403, code="link_expired")


@pytest.mark.parametrize("path", ["/v1/usage", "/admin/usage"])
@pytest.mark.parametrize("days", [70368744177663, -1, 0])
def test_usage_days_out_of_range_is_a_400(module_gateway, path, days):
    gateway = module_gateway
    with gateway.http() as client:
        openai_error(client.get(path, params={"days": days}), 400, param="days")


@pytest.mark.parametrize("path", ["/admin/keys/{}", "/admin/accounts/{}", "/admin/accounts/{}/topup",
                                  "/admin/prices/{}"])
@pytest.mark.parametrize("value", [2 ** 63, 2 ** 31, 10 ** 30, -(2 ** 63) - 1])
def test_ids_out_of_range_are_a_404(module_gateway, path, value):
    gateway = module_gateway
    with gateway.http() as client:
        for method in ("GET", "PATCH", "DELETE", "POST"):
            resp = client.request(method, path.format(value), json={"amount": "1"} if method == "POST" else {})
            if resp.status_code == 405:
                continue
            openai_error(resp, 404)


def test_key_and_account_numbers_out_of_range_are_a_400(gateway):
    with gateway.http() as client:
        openai_error(client.post("/admin/keys", json={"name": "k", "account_id": 2 ** 40}), 400, param="account_id")
        openai_error(client.post("/admin/keys", json={"name": "k", "rate_limit_rpm": 2 ** 40}), 400,
                     param="rate_limit_rpm")
        openai_error(client.post("/admin/accounts", json={"name": "a", "balance": "1e30"}), 400, param="balance")
        openai_error(client.get("/admin/usage", params={"key_id": 2 ** 63}), 400, param="key_id")


@pytest.fixture
def ideogram_gateway(make_gateway):
    from pixelgate.simulators.ideogram import IdeogramEmulatorState, create_app
    from tests.emulators.server import emulated

    with emulated(create_app, IdeogramEmulatorState()) as (state, base):
        gateway = make_gateway(channels=[{"name": "ideogram", "provider": "ideogram", "base_url": base,
                                          "api_key": "ideogram-emulator-key", "models": ["V3", "V_2"]}])
        yield gateway, state


def test_a_deeply_nested_ideogram_prompt_is_a_400(ideogram_gateway):
    gateway, state = ideogram_gateway
    prompt: object = "x"
    for _ in range(1000):
        prompt = [prompt]
    body = orjson.dumps({"image_request": {"prompt": prompt}}) if False else (
        b'{"image_request": {"prompt": ' + b"[" * 1000 + b'"x"' + b"]" * 1000 + b"}}")
    with gateway.http() as client:
        resp = client.post("/ideogram/generate", content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 400, resp.text
        assert "prompt" in resp.json()["error"]
        resp = client.post("/ideogram/v1/ideogram-v3/generate", content=b'{"prompt": ' + b"[" * 1000 + b"1"
                           + b"]" * 1000 + b"}", headers={"content-type": "application/json"})
        assert resp.status_code == 400, resp.text
    assert state.requests == []


def _truncated_png() -> bytes:
    whole = png(64, 64)
    noisy = io.BytesIO()
    from PIL import Image
    import os
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(noisy, "PNG")
    return noisy.getvalue()[: len(noisy.getvalue()) // 2] if whole else b""


def test_a_truncated_png_mask_is_a_400_naming_the_field(ideogram_gateway):
    gateway, state = ideogram_gateway
    image = png(64, 64)
    with gateway.http() as client:
        resp = client.post("/ideogram/v1/ideogram-v3/edit", data={"prompt": "x"},
                           files={"image": ("i.png", image, "image/png"),
                                  "mask": ("m.png", _truncated_png(), "image/png")})
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"].startswith("'mask'") or "'mask'" in resp.json()["error"]
        resp = client.post("/ideogram/edit", data={"prompt": "x", "model": "V_2"},
                           files={"image_file": ("i.png", _truncated_png(), "image/png"),
                                  "mask": ("m.png", image, "image/png")})
        assert resp.status_code == 400 and "'image_file'" in resp.json()["error"], resp.text
    assert state.requests == []


def test_a_truncated_png_on_the_openai_edits_is_a_400(openai_gateway):
    gateway, upstream = openai_gateway
    with gateway.http() as client:
        resp = client.post("/v1/images/edits", data={"model": "dall-e-2", "prompt": "x"},
                           files={"image": ("i.png", _truncated_png(), "image/png")})
    openai_error(resp, 400, param="image")
    assert upstream.requests == []


# -- 4. nothing a client sends may lose another request's log row --

def test_what_a_client_sends_is_fitted_to_the_log(gateway):
    with gateway.http() as client:
        huge = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "n": 2 ** 40})  # PostgreSQL: int4
        long = client.post(GEN, json={"model": "m" + "x" * 500, "prompt": "x"})
        nul = client.post("/v1/images/edits", data={"model": "m\x00x", "prompt": "x"},
                          files={"image": ("i.png", png(8, 8), "image/png")})
        ok = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "32x32"})
    openai_error(huge, 400, param="n")
    openai_error(long, 404, param="model")
    assert ok.status_code == 200
    assert gateway.log_row(huge.headers["x-request-id"])["images_requested"] == 2**31 - 1
    row = gateway.log_row(long.headers["x-request-id"])
    assert row["model"] == ("m" + "x" * 500)[:128]
    openai_error(nul, 404, param="model")
    assert gateway.log_row(nul.headers["x-request-id"])["model"] == "mx"  # PostgreSQL stores no NUL
    assert gateway.log_row(ok.headers["x-request-id"])["status"] == 200


def test_a_row_that_cannot_be_written_loses_only_itself(gateway, caplog):
    """A batch the database refuses (here: one row repeats another's id) is written row by row."""
    from datetime import datetime, timezone

    from pixelgate.db.models import RequestLog

    def row(request_id: str) -> tuple:
        return (RequestLog, dict(id=request_id, key_id=None, surface="openai", operation="generate", model="m",
                                 channel=None, status=200, error_code=None, error=None, images_requested=1,
                                 images_delivered=1, latency_ms=1.0, attempts=[], cost=None,
                                 created_at=datetime.now(timezone.utc), images=None))

    records = gateway.services.records

    async def write() -> None:
        records.add(row("req_first"))
        await records.flush()
        records.add(row("req_before"), row("req_first"), row("req_after"))  # the middle one is a duplicate
        await records.flush()

    with caplog.at_level("WARNING", logger="pixelgate.records"):
        gateway.run(write())
    ids = {r["id"] for r in gateway.requests_log()}
    assert {"req_first", "req_before", "req_after"} <= ids
    assert any("dropped a requests row" in r.getMessage() and "req_first" in r.getMessage() for r in caplog.records)


# -- 5. bodies are limited while they stream in --

def _chunked_upload(base_url: str, path: str, content_type: str, total: int, key: str = ADMIN_KEY,
                     first: bytes = b"") -> tuple[int, bytes]:
    """POST a chunked body of `total` bytes over a raw socket, stopping as soon as the gateway
    answers. Returns (bytes sent, the answer)."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Type: "
                 f"{content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    sent, block = 0, first + b"x" * (65536 - len(first))
    answer = b""
    try:
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            chunk = block if sent == 0 else b"y" * 65536
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")
        sock.settimeout(30)
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    return sent, answer


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), orjson.loads(body)


@pytest.mark.parametrize("path,content_type", [
    (GEN, "application/json"), ("/v1/images/edits", "multipart/form-data; boundary=b"),
    ("/ideogram/v1/ideogram-v3/generate", "application/json"),
    ("/ideogram/v1/ideogram-v3/edit", "multipart/form-data; boundary=b"),
    ("/models/sandbox/sandbox-image/predictions", "application/json"),
])
def test_a_chunked_body_over_the_limit_is_refused_as_it_streams(make_gateway, path, content_type):
    gateway = make_gateway(max_body_bytes=1024 * 1024)
    first = b'--b\r\nContent-Disposition: form-data; name="image"; filename="i.png"\r\n\r\n' \
        if content_type.startswith("multipart") else b'{"prompt": "'
    sent, answer = _chunked_upload(gateway.base_url, path, content_type, 64 * 1024 * 1024, first=first)
    status, body = _status_and_json(answer)
    assert status == 413, answer[:300]
    if path.startswith("/ideogram"):
        assert "larger than 1048576 bytes" in body["error"]
    else:
        assert body["error"]["code"] == "payload_too_large"
    assert sent < 16 * 1024 * 1024  # the gateway stopped reading near the limit, not at 64 MB


def test_a_chunked_body_costs_no_more_memory_than_the_limit(gateway):
    """200 MB chunked at the default 64 MiB limit: the peak resident memory of this process (the
    gateway runs in it) grows by about the limit, not by the body (260-290 MB before)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    before = _vm("VmRSS")
    sent, answer = _chunked_upload(gateway.base_url, GEN, "application/json", 200 * 1024 * 1024,
                                   first=b'{"prompt": "')
    assert _status_and_json(answer)[0] == 413
    grown = _vm("VmHWM") - before
    assert grown < 150 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.0f} MiB"


def _vm(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(name)


def test_a_declared_length_over_the_limit_is_refused_before_reading(make_gateway):
    gateway = make_gateway(max_body_bytes=1024 * 1024)
    with gateway.http() as client:
        resp = client.post("/v1/images/edits", content=b"x" * (2 * 1024 * 1024),
                           headers={"content-type": "multipart/form-data; boundary=b"})
        openai_error(resp, 413, code="payload_too_large")
        resp = client.post("/admin/keys", content=b"x" * (2 * 1024 * 1024), headers={"content-type": "application/json"})
        openai_error(resp, 413, code="payload_too_large")


# -- 6. headers, slow clients, unknown keys, Redis down --

def test_files_are_served_with_nosniff_and_a_closed_csp(gateway):
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "32x32",
                                      "response_format": "url"})
        image = client.get(resp.json()["data"][0]["url"])
    assert image.status_code == 200
    assert image.headers["x-content-type-options"] == "nosniff"
    assert image.headers["content-security-policy"] == "default-src 'none'; sandbox"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slow_and_idle_connections_are_closed_after_the_header_timeout(tmp_path):
    """`pixelgate serve` as deployed: 200 sockets that send nothing and 50 that trickle their
    headers are all closed by the server within the header timeout (1 s here), while a normal
    request is answered meanwhile."""
    import os
    import signal
    import subprocess

    from tests.test_serve import _start_anywhere

    env = {**os.environ, "PIXELGATE_DATA_DIR": str(tmp_path),
           "PIXELGATE_HEADER_TIMEOUT_SECONDS": "1", "PIXELGATE_ADMIN_KEY": ADMIN_KEY}
    proc, base, _ = _start_anywhere(["serve"], tmp_path, env)  # the system picks the port
    port = int(base.rsplit(":", 1)[1])
    sockets: list[socket.socket] = []
    try:
        for i in range(250):
            s = socket.create_connection(("127.0.0.1", port))
            if i >= 200:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            sockets.append(s)
        opened = time.monotonic()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/healthz").status_code == 200
            time.sleep(0.3)
            for s in sockets[200:]:  # a trickle: a header line now and then keeps nothing alive
                s.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.5)
            assert client.get("/healthz").status_code == 200  # a keep-alive client is served meanwhile
        closed = 0
        for s in sockets:
            s.settimeout(max(0.1, opened + 4 - time.monotonic()))
            try:
                closed += s.recv(1) == b""
            except (socket.timeout, ConnectionResetError):
                pass
        assert closed == len(sockets)
    finally:
        for s in sockets:
            s.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("store", ["process", "redis"])
def test_unknown_keys_are_throttled_per_address(make_gateway, store):
    import secrets

    extra = {"redis_url": REDIS_URL, "redis_namespace": "t" + secrets.token_hex(6)} \
        if store == "redis" else {}
    gateway = make_gateway(auth_failures_per_minute=5, **extra)
    fresh = gateway.create_key(name="never used from here yet")
    with gateway.http(key="pg-wrong") as wrong, gateway.http() as admin, gateway.http(key=fresh) as newcomer:
        link = admin.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "16x16",
                                     "response_format": "url"}).json()["data"][0]["url"]
        for _ in range(3):  # a missing key is no guess
            openai_error(wrong.get("/v1/models", headers={"Authorization": ""}), 401, code="missing_api_key")
        for _ in range(5):
            openai_error(wrong.get("/v1/models"), 401)
        resp = wrong.get("/v1/models")
        openai_error(resp, 429, code="too_many_auth_failures")
        assert 1 <= int(resp.headers["retry-after"]) <= 60
        resp = wrong.post("/ideogram/v1/ideogram-v3/generate", data={"prompt": "x"})
        assert resp.status_code == 429 and "unknown API key" in resp.json()["error"]  # Ideogram's shape
        # only failures wait: a key that verifies passes, even one never used from this address
        # (a guesser cannot lock out its neighbours), and a signed link needs no key at all
        assert admin.get("/v1/models").status_code == 200
        assert newcomer.get("/v1/models").status_code == 200
        for _ in range(40):
            resp = httpx.get(link)
            assert resp.status_code == 200 and resp.content.startswith(b"\x89PNG")


def test_redis_down_neither_throttles_nor_fails(make_gateway):
    gateway = make_gateway(auth_failures_per_minute=2, redis_url="redis://127.0.0.1:1/0")
    key = gateway.create_key(rate_limit_rpm=1, max_concurrent=1)
    with gateway.http(key=key) as client, gateway.http(key="pg-wrong") as wrong:
        for _ in range(3):
            resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "32x32"})
            assert resp.status_code == 200, resp.text
        for _ in range(4):
            openai_error(wrong.get("/v1/models"), 401)


# -- 7. work off the event loop; usage summed by the database --

def test_usage_is_summed_per_group_across_requests_and_tasks(make_gateway):
    from datetime import datetime, timezone

    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "0.25")
    gateway.set_price("sandbox-async", "0.5")
    _, key = gateway.paying_key("100")
    with gateway.http(key=key) as client:
        for n in (2, 1):
            assert client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "n": n, "size": "16x16"}).status_code == 200
        openai_error(client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "n": 99}), 400)
        task = client.post("/models/sandbox/sandbox-async/predictions",
                           json={"input": {"prompt": "x", "size": "16x16", "sandbox_job_seconds": 0.05}}).json()
        deadline = time.monotonic() + 20
        while client.get(f"/tasks/{task['id']}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        by_model = client.get("/v1/usage").json()
        by_day = client.get("/v1/usage", params={"group_by": "day", "days": 2}).json()
    assert [r for r in by_model["data"] if r["model"] != "None"] == [  # None: the task polls, logged at no cost
        {"model": "sandbox-async", "cost": "0.5", "images": 1, "requests": 1, "failed": 0},
        {"model": "sandbox-image", "cost": "0.75", "images": 3, "requests": 3, "failed": 1}]
    today = datetime.now(timezone.utc).date().isoformat()
    (day,) = by_day["data"]
    assert (day["day"], day["cost"], day["images"], day["failed"]) == (today, "1.25", 4, 1) and day["requests"] >= 4
    assert (by_day["total_cost"], by_day["total_images"]) == ("1.25", 4)
    with gateway.http() as admin:
        by_key = admin.get("/admin/usage", params={"group_by": "key"}).json()["data"]
        by_channel = admin.get("/admin/usage", params={"group_by": "channel"}).json()["data"]
    assert [(r["cost"], r["images"]) for r in by_key if r["cost"] != "0"] == [("1.25", 4)]
    assert {r["channel"]: r["images"] for r in by_channel}["sandbox"] == 4


def _big_png() -> bytes:
    """6000x6000 pixels in half a megabyte: decoding it takes a few hundred milliseconds."""
    from PIL import Image

    out = io.BytesIO()
    Image.linear_gradient("L").resize((6000, 6000)).convert("RGB").save(out, "PNG", compress_level=1)
    return out.getvalue()


def _big_mask() -> bytes:
    """6000x6000 transparent-or-opaque pixels (the OpenAI convention): a valid mask to convert."""
    from PIL import Image

    mask = Image.new("RGBA", (6000, 6000), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (1000, 1000, 5000, 5000))
    out = io.BytesIO()
    mask.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _flat_alpha_png(side: int) -> bytes:
    """An opaque square with a transparent middle: a valid image to edit without a mask, whose
    file is tiny for its pixels (3000x3000: 42 KB)."""
    from PIL import Image

    img = Image.new("RGBA", (side, side), (200, 30, 30, 255))
    img.paste((0, 0, 0, 0), (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _loop_lag_during(gateway, action) -> float:
    """The longest the gateway's event loop went unscheduled (seconds) while `action` ran."""
    # The test's own client imports its HTTP machinery on first use; under the GIL that import
    # would stall the gateway's thread too and be counted against the gateway.
    httpx.get(gateway.base_url + "/healthz")
    stop = threading.Event()

    async def probe() -> float:
        loop, worst = asyncio.get_running_loop(), 0.0
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - before - 0.005)
        return worst

    future = asyncio.run_coroutine_threadsafe(probe(), gateway.services.tasks.worker.loop_task.get_loop())
    time.sleep(0.1)
    try:
        action()
    finally:
        stop.set()
    return future.result(10)


@pytest.mark.skipif(bool(os.environ.get("PYTEST_XDIST_WORKER")),
                    reason="times the event loop: other test processes on the same cores make it flaky; "
                           "make test runs it alone, after the others")
@pytest.mark.parametrize("how", ["multipart", "data_url", "ideogram_mask", "ideogram_edit", "ideogram_alpha_edit"])
def test_large_images_are_decoded_off_the_event_loop(ideogram_gateway, how):
    import base64

    gateway, state = ideogram_gateway
    big = _big_png()

    def send() -> None:
        with gateway.http() as client:
            if how == "multipart":  # refused after the image is read: no model serves it
                resp = client.post("/v1/images/edits", data={"model": "no-such-model", "prompt": "x"},
                                   files={"image": ("big.png", big, "image/png")})
            elif how == "data_url":
                resp = client.post("/v1/images/edits", json={"model": "no-such-model", "prompt": "x", "images": [
                    {"image_url": "data:image/png;base64," + base64.b64encode(big).decode()}]})
            elif how == "ideogram_mask":  # a mask is decoded, converted and checked: a gradient is not two-tone
                resp = client.post("/ideogram/v1/ideogram-v3/edit", data={"prompt": "x"},
                                   files={"image": ("i.png", big, "image/png"), "mask": ("m.png", big, "image/png")})
                assert resp.status_code == 400 and "black and white" in resp.json()["error"], resp.text
                return
            elif how == "ideogram_edit":  # a good mask goes on to the provider's build, which converts it
                resp = client.post("/v1/images/edits", data={"model": "V3", "prompt": "x"},
                                   files={"image": ("i.png", big, "image/png"), "mask": ("m.png", _big_mask(), "image/png")})
                assert resp.status_code == 200, resp.text
                return
            else:  # no mask: the build makes Ideogram's of the image's alpha, 4096x4096 pixels in 75 KB
                resp = client.post("/v1/images/edits", data={"model": "V3", "prompt": "x"},
                                   files={"image": ("i.png", _flat_alpha_png(4096), "image/png")})
                assert resp.status_code == 200, resp.text
                return
            assert resp.status_code == 404, resp.text

    from PIL import Image

    started = time.perf_counter()
    Image.open(io.BytesIO(big)).load()
    decode = time.perf_counter() - started  # what the loop would stall for, on this machine now
    lag = _loop_lag_during(gateway, send)
    assert lag < max(0.1, decode / 2), f"the event loop stalled {lag * 1000:.0f} ms (a decode: {decode * 1000:.0f} ms)"


def test_pixels_not_file_size_decide_what_is_decoded_off_the_event_loop(ideogram_gateway, monkeypatch):
    """A flat 3000x3000 PNG is a 42 KB file, yet decoding it takes about 100 ms and making
    Ideogram's mask of its alpha (an edit without a mask) about 200 ms: both run in a thread. A
    64x64 image stays on the loop. Checked by where they run, so it holds beside other tests."""
    from pixelgate.domain import images, masks

    gateway, _ = ideogram_gateway
    ran: list[tuple[str, bool]] = []

    def spy(module, name: str) -> None:
        real = getattr(module, name)

        def run(*args, **kwargs):
            ran.append((name, _on_event_loop()))
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, run)

    spy(images, "read_image")
    spy(masks, "convert")
    flat = _flat_alpha_png(3000)
    assert len(flat) < images.INLINE_DECODE_BYTES
    with gateway.http() as client:
        for side, on_loop in ((3000, False), (64, True)):
            ran.clear()
            resp = client.post("/v1/images/edits", data={"model": "V3", "prompt": "x"},
                               files={"image": ("i.png", flat if side == 3000 else _flat_alpha_png(64), "image/png")})
            assert resp.status_code == 200, resp.text
            assert ran == [("read_image", on_loop), ("convert", on_loop)], (side, ran)


def test_base64_of_large_answers_is_coded_off_the_event_loop(make_gateway, monkeypatch):
    """A vendor's large base64 image the gateway stores is decoded, and a large downloaded one
    encoded for a b64_json answer, in a thread; small ones stay on the loop (the thread hop would
    cost more). One only passed through in a b64_json answer is not decoded beyond its header.
    Checked by where the coding runs, not by timing: base64 is fast enough that a timing test
    proves nothing."""
    import base64

    from PIL import Image

    from pixelgate.services import delivery

    big = io.BytesIO()
    Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3)).save(big, "PNG")  # noise: 480 KB
    big_png, small_png = big.getvalue(), png(16, 16)
    assert len(big_png) > delivery.LARGE > len(base64.b64encode(small_png))

    async def generations(request: Request) -> Response:
        model = (await request.json())["model"]
        if model == "dall-e-2":  # by URL: the gateway downloads it, and encodes it for a b64_json answer
            return JSONResponse({"created": 1, "data": [{"url": f"{request.base_url}big.png"}]})
        data = big_png if model == "gpt-image-1" else small_png
        return JSONResponse({"created": 1, "data": [{"b64_json": base64.b64encode(data).decode()}]})

    async def image(request: Request) -> Response:
        return Response(big_png, media_type="image/png")

    coded: list[tuple[str, int, bool]] = []  # (function, input length, on the event loop)

    def spy(name: str):
        real = getattr(delivery.pybase64, name)

        def run(data, *args, **kwargs):
            coded.append((name, len(data), _on_event_loop()))
            return real(data, *args, **kwargs)
        return run

    monkeypatch.setattr(delivery, "pybase64", type("Spied", (), {"b64decode": staticmethod(spy("b64decode")),
                                                                 "b64encode": staticmethod(spy("b64encode"))}))
    app = Starlette(routes=[Route("/v1/images/generations", generations, methods=["POST"]),
                            Route("/big.png", image)])
    with serve(app) as base:
        gateway = make_gateway(channels=[openai_channel(base + "/v1", models=["gpt-image-1", "gpt-image-1-mini",
                                                                              "dall-e-2"])])
        with gateway.http() as client:
            for model in ("gpt-image-1", "gpt-image-1-mini", "dall-e-2"):
                resp = client.post(GEN, json={"model": model, "prompt": "x", "response_format": "b64_json"})
                assert resp.status_code == 200, resp.text
                assert base64.b64decode(resp.json()["data"][0]["b64_json"]) == (
                    small_png if model == "gpt-image-1-mini" else big_png)
            passed_through = list(coded)
            coded.clear()
            resp = client.post(GEN, json={"model": "gpt-image-1", "prompt": "x", "response_format": "url"})
            assert resp.status_code == 200, resp.text
            assert client.get(resp.json()["data"][0]["url"]).content == big_png
    # passed through: the big one's head (64 KiB of base64) and the small one decoded, on the loop
    assert sorted(passed_through) == sorted([("b64decode", delivery.SNIFF_B64, True),
                                             ("b64decode", len(base64.b64encode(small_png)), True),
                                             ("b64encode", len(big_png), False)]), passed_through
    assert coded == [("b64decode", len(base64.b64encode(big_png)), False)], coded  # stored: whole, in a thread


def test_price_fields_longer_than_their_columns_are_a_400(gateway):
    with gateway.http() as client:
        openai_error(client.post("/admin/prices", json={"model": "m", "amount": "1", "currency": "X" * 20}), 400,
                     param="currency")
        openai_error(client.post("/admin/prices", json={"model": "m", "amount": "1", "operation": "o" * 40}), 400,
                     param="operation")
        openai_error(client.post("/admin/prices", json={"model": "m\x00", "amount": "1"}), 400, param="model")


# ---- channel keys never leave in an upstream's error message ----

def test_a_vendor_error_echoing_the_channel_key_is_redacted_for_client_and_log(make_gateway, openai_upstream):
    state, base = openai_upstream
    # The tail is not hexadecimal, so a random request id can never contain it by chance.
    wrong = "sk-proj-ThisIsTheChannelsOwnSecretWXYZ"
    gateway = make_gateway(channels=[openai_channel(base, api_key=wrong)])
    with gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x"})
    assert resp.status_code == 502 and state.requests  # OpenAI's 401 quotes the key, masked
    logged = gateway.requests_log()[0]
    for text in (resp.text, orjson.dumps(logged).decode()):
        assert wrong not in text and wrong[:6] not in text and wrong[-4:] not in text, text
    assert "[redacted]" in resp.text


def test_redaction_finds_keys_in_their_masked_and_usual_shapes():
    from pixelgate.services.transport import redact

    secret = "AIzaSyChannelKey0123456789"
    assert redact(f"API key not valid: {secret}", secret) == "API key not valid: [redacted]"
    assert redact("Incorrect API key provided: sk-ab************wxyz.") == "Incorrect API key provided: [redacted]."
    assert redact("header was 'Bearer abc.def.ghi-jkl'") == "header was '[redacted]'"
    assert redact("upstream answered HTTP 500: model overloaded") == "upstream answered HTTP 500: model overloaded"


def test_a_channel_key_the_vendor_shortened_with_an_ellipsis_is_redacted(make_gateway, openai_upstream):
    state, base = openai_upstream
    key = state.api_key = "sk-proj-AnotherChannelSecretwXyZ"
    gateway = make_gateway(channels=[openai_channel(base, api_key=key)])
    state.fail_next(401, {"error": {"message": f"Incorrect API key provided: {key[:6]}...{key[-3:]}. Revoked; "
                                               f"the key ending in \u2026{key[-4:]} no longer works.",
                                    "type": "invalid_request_error", "param": f"{key[:8]}...", "code": "invalid_api_key"}})
    with gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x"})
    assert resp.status_code == 502 and "[redacted]" in resp.text, resp.text
    logged = gateway.requests_log()[0]
    for text in (resp.text, orjson.dumps(logged).decode()):
        assert key[:6] not in text and key[-3:] not in text, text


def test_a_channel_key_the_vendor_echoes_upper_cased_is_redacted(make_gateway, openai_upstream):
    state, base = openai_upstream
    key = state.api_key = "abcd1234efgh5678ijkl9012"  # an openai-compatible vendor's own key shape
    gateway = make_gateway(channels=[openai_channel(base, api_key=key)])
    state.fail_next(401, {"error": {"message": f"Invalid key {key[:8].upper()}... (full: {key.upper()})",
                                    "type": "invalid_request_error", "param": key.title(), "code": "invalid_api_key"}})
    with gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x"})
        assert resp.status_code == 502 and "[redacted]" in resp.text, resp.text
    from tests.console.test_console import sign_in

    page = sign_in(gateway).get(f"/console/requests/{resp.headers['x-request-id']}")
    assert page.status_code == 200 and "[redacted]" in page.text
    logged = gateway.log_row(resp.headers["x-request-id"])
    for text in (resp.text, orjson.dumps(logged).decode()):
        assert "ABCD1234" not in text.upper(), text
    assert key[:8].upper() not in page.text  # the console shows the request log's row
    from pixelgate.services.transport import redact

    assert redact("Bad key SK-PROJ-ABCDEFGH12 and bearer: BEARER ABCDEFGH1234") == "Bad key [redacted] and bearer: [redacted]"


def test_redaction_of_shortened_and_ellipsis_forms():
    from pixelgate.services.transport import redact

    secret = "sk-abcdefghijklmnopqrstuvwxyz"
    for shown in ("sk-abc...xyz", "sk-ab****wxyz", "sk-...wxyz", "****wxyz", "sk-abc\u2026wxyz", "sk-abcdefghij...xyz"):
        assert redact(f"Incorrect API key provided: {shown}.", secret) == "Incorrect API key provided: [redacted].", shown
    # without the channel's key at hand, an OpenAI-style key still goes in any of those shapes
    assert redact("Incorrect API key provided: sk-abc...xyz.") == "Incorrect API key provided: [redacted]."
    assert redact("Incorrect API key provided: sk-abc\u2026xyz.") == "Incorrect API key provided: [redacted]."
    # text that merely has an ellipsis or asterisks is left alone
    assert redact("Please wait... the model is **busy**", secret) == "Please wait... the model is **busy**"


def test_random_keys_never_evict_a_real_one_from_the_key_cache(make_gateway):
    from pixelgate.errors import Unauthorized

    gateway = make_gateway(cache_seconds=300)
    keys, admin_digest = gateway.services.keys, hash_key(ADMIN_KEY)
    original, reads = keys._load, []

    async def load(digest):  # the database, minus its latency for the guesses
        reads.append(digest)
        return await original(digest) if digest == admin_digest else None

    async def guess_many() -> None:
        await keys.authenticate(ADMIN_KEY)
        for i in range(100_050):  # more than the whole cache used to hold before it was emptied
            try:
                await keys.authenticate(f"pg-guess-{i}")
            except Unauthorized:
                pass
        await keys.authenticate(ADMIN_KEY)

    keys._load = load
    gateway.run(guess_many(), timeout=120)
    assert reads.count(admin_digest) == 1, "the guesses pushed the real key out of the cache"
