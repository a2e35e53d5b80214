"""Every request is recorded: id, key, model, channel, operation, images, latency, status, error."""

from __future__ import annotations


def test_success_is_recorded(gateway):
    key = gateway.create_key(name="alice")
    with gateway.http(key=key) as client:
        resp = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x", "n": 2,
                                                           "size": "32x32"})
    assert resp.status_code == 200
    row = gateway.log_row(resp.headers["x-request-id"])
    with gateway.http() as admin:
        key_id = [k["id"] for k in admin.get("/admin/keys").json()["data"] if k["name"] == "alice"][0]
    assert row["key_id"] == key_id
    assert (row["model"], row["channel"], row["operation"], row["surface"]) == \
        ("sandbox-image", "sandbox", "generate", "openai")
    assert (row["images_requested"], row["images_delivered"], row["status"]) == (2, 2, 200)
    assert row["latency_ms"] > 0 and row["error"] is None


def test_failures_are_recorded_too(gateway):
    with gateway.http() as client:
        bad = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x", "n": 99})
        unauth = client.post("/v1/images/generations", json={"model": "sandbox-image"},
                             headers={"Authorization": "Bearer pg-wrong"})
    row = gateway.log_row(bad.headers["x-request-id"])
    assert (row["status"], row["error_code"]) == (400, "invalid_value") and "n" in row["error"]
    row = gateway.log_row(unauth.headers["x-request-id"])
    assert (row["status"], row["key_id"]) == (401, None)


def test_stream_is_recorded_when_it_ends(gateway):
    with gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x", "stream": True,
                                                           "size": "32x32"})
        assert resp.status_code == 200 and resp.text.count("event: ") == 1
    row = gateway.log_row(resp.headers["x-request-id"])
    assert row["images_delivered"] == 1 and row["status"] == 200
