"""GET /admin/metrics: Prometheus counters taken from each request's log row.

The in-process gateways of the tests share prometheus_client's default registry, so these tests
compare before and after. Several workers of one `serve` are covered in tests/test_serve.py."""

from __future__ import annotations

from tests.conftest import openai_channel
from tests.services.test_routing import _free_port
from tests.test_serve import metric

GEN = "/v1/images/generations"


def scrape(gateway) -> str:
    with gateway.http() as admin:
        resp = admin.get("/admin/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return resp.text


def test_metrics_need_the_admin_key(gateway):
    user = gateway.create_key()
    with gateway.http(key=None) as anonymous, gateway.http(key=user) as client:
        assert anonymous.get("/admin/metrics").status_code == 401
        assert client.get("/admin/metrics").status_code == 403


def test_requests_images_and_attempts_are_counted(make_gateway):
    closed = _free_port()  # nothing listens there: the channel is tried first and refuses
    broken = openai_channel(f"http://127.0.0.1:{closed}/v1", "broken", priority=10, models=["sandbox-image"])
    gateway = make_gateway(channels=[{**broken, "provider": "openai-compatible"}])
    before = scrape(gateway)
    with gateway.http() as client:
        for _ in range(2):
            resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "n": 2, "size": "16x16"})
            assert resp.status_code == 200, resp.text
        assert client.post(GEN, json={"model": "no-such-model-" + "x" * 40, "prompt": "x"}).status_code == 404
    after = scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("pixelgate_requests_total", surface="openai", model="sandbox-image", status="200") == 2
    assert delta("pixelgate_images_delivered_total", model="sandbox-image", channel="sandbox") == 4
    assert delta("pixelgate_request_seconds_count", surface="openai", model="sandbox-image") == 2
    assert delta("pixelgate_requests_total", status="404", model="-") == 1  # invented names stay out
    assert "no-such-model" not in after
    assert delta("pixelgate_upstream_attempts_total", channel="sandbox", result="ok") == 2
    assert delta("pixelgate_upstream_attempts_total", channel="broken") == 2  # tried first, failed over


def test_a_scraper_reads_metrics_with_the_metrics_token_and_nothing_else(make_gateway):
    token = "scrape-token-" + "7" * 20
    gateway = make_gateway(metrics_token=token)
    user = gateway.create_key()
    with gateway.http(key=token) as scraper:
        for path in ("/metrics", "/admin/metrics"):
            resp = scraper.get(path)
            assert resp.status_code == 200 and "pixelgate_requests_total" in resp.text
        refused = scraper.get("/admin/keys")  # the token is not a key
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    with gateway.http(key=None) as anonymous, gateway.http(key=token[:-1]) as wrong, \
            gateway.http(key=user) as client, gateway.http() as admin:
        assert anonymous.get("/metrics").json()["error"]["code"] == "missing_api_key"
        assert wrong.get("/metrics").status_code == 401
        assert client.get("/metrics").status_code == 403
        assert admin.get("/metrics").status_code == 200


def test_without_a_metrics_token_only_the_admin_key_reads_metrics(gateway):
    with gateway.http(key=None) as anonymous, gateway.http() as admin:
        assert anonymous.get("/metrics").status_code == 401
        assert admin.get("/metrics").status_code == 200
