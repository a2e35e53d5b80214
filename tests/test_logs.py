"""What `pixelgate serve` writes to its output: an access line per request (text, or JSON with
log_format), never a key; an unexpected exception with its request id and traceback; a vendor
failure with the request id."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3

import httpx
import pytest

from tests.conftest import openai_channel
from tests.services.test_routing import _free_port
from tests.test_serve import _start_anywhere, _stop

ADMIN = "pg-logs-test-admin-key-0000000000000000"
GEN = "/v1/images/generations"


def _serve_and_fail(tmp_path, log_format: str, workers: int) -> tuple[str, dict]:
    """Serve, make one priced request with a named key, then break the database under the running
    gateway (its key table renamed) so that an unknown key's lookup raises; the output and what
    the client saw."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")},
           "PIXELGATE_ADMIN_KEY": ADMIN, "PIXELGATE_LOG_FORMAT": log_format, "PIXELGATE_DATA_DIR": str(tmp_path / "data")}
    proc, base, said = _start_anywhere(["serve", "--workers", str(workers)], tmp_path, env)
    seen: dict = {}
    try:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert httpx.post(base + "/admin/prices", headers=admin,
                          json={"model": "sandbox-image", "amount": "0.04"}).status_code == 201
        created = httpx.post(base + "/admin/keys", headers=admin, json={"name": "web app\nFAKE LINE"}).json()
        seen["key"], seen["key_id"] = created["key"], created["id"]
        resp = httpx.post(base + GEN, headers={"Authorization": f"Bearer {created['key']}"},
                          json={"model": "sandbox-image", "prompt": "x", "size": "16x16"}, timeout=30)
        assert resp.status_code == 200, resp.text
        seen["ok_id"] = resp.headers["x-request-id"]
        gemini = httpx.get(base + "/v1beta/models", params={"key": created["key"]}, timeout=30)  # logged without it
        assert gemini.status_code == 200, gemini.text
        seen["gemini_id"] = gemini.headers["x-request-id"]
        with sqlite3.connect(tmp_path / "data" / "pixelgate.db", timeout=30) as db:
            db.execute("ALTER TABLE api_keys RENAME TO api_keys_gone")
        broken = httpx.post(base + GEN, headers={"Authorization": "Bearer pg-never-seen-before-0000000000"},
                            json={"model": "sandbox-image", "prompt": "x"}, timeout=30)
        assert broken.status_code == 500, broken.text
        seen["error_id"] = broken.headers["x-request-id"]
        assert seen["error_id"] in broken.json()["error"]["message"]
        with httpx.Client(base_url=base, timeout=30) as browser:  # a console page lets it through
            nonce = browser.get("/console/login").cookies["pg_console_login"]
            page = browser.post("/console/login", data={"csrf": nonce, "key": "pg-never-seen-either-000000"})
        assert page.status_code == 500, page.text
        seen["console_id"] = re.search(r"request id (req_\w+)", page.json()["error"]["message"]).group(1)
    finally:
        out = said + _stop(proc)
    assert seen["key"] not in out and ADMIN not in out
    return out, seen


@pytest.mark.long(15)
def test_text_access_lines_and_an_error_with_its_traceback(tmp_path):
    out, seen = _serve_and_fail(tmp_path, "text", workers=1)
    line = next(line for line in out.splitlines() if seen["ok_id"] in line and "pixelgate.access" in line)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO pixelgate\.access POST /v1/images/generations 200 "
                    rf"request_id={seen['ok_id']} surface=openai key_id={seen['key_id']} "
                    r'key_name="web app\\nFAKE LINE" model=sandbox-image channel=sandbox images=1 cost=0.04 '
                    r"currency=USD ms=\d+\.\d$", line), line
    assert "\nFAKE LINE" not in out  # the name's newline is escaped, it forges no line
    assert any(f"GET /v1beta/models 200 request_id={seen['gemini_id']} surface=gemini" in line
               for line in out.splitlines())
    # the 500: an ERROR line naming the request, its traceback right after, and its access line
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if " ERROR " in line and f"request_id={seen['error_id']}" in line)
    assert lines[at + 1] == "Traceback (most recent call last):"
    assert any("OperationalError" in line and "api_keys" in line for line in lines[at:])
    assert any(f"POST /v1/images/generations 500 request_id={seen['error_id']} surface=openai" in line
               for line in lines)
    at = next(i for i, line in enumerate(lines) if " ERROR " in line and f"request_id={seen['console_id']}" in line)
    assert "unhandled error in POST /console/login" in lines[at] and lines[at + 1].startswith("Traceback")
    assert any(f"POST /console/login 500 request_id={seen['console_id']} surface=console" in line for line in lines)


@pytest.mark.long(20)
def test_json_access_lines_from_several_workers(tmp_path):
    out, seen = _serve_and_fail(tmp_path, "json", workers=2)
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert records and all(r["time"].endswith("Z") for r in records)
    ok = next(r for r in records if r.get("request_id") == seen["ok_id"] and r["logger"] == "pixelgate.access")
    assert ok == {**ok, "level": "info", "method": "POST", "path": GEN, "status": 200, "surface": "openai",
                  "key_id": seen["key_id"], "key_name": "web app\nFAKE LINE", "model": "sandbox-image",
                  "channel": "sandbox", "images": 1, "cost": "0.04", "currency": "USD"}
    assert isinstance(ok["ms"], float) and ok["ms"] >= 0
    error = next(r for r in records if r.get("request_id") == seen["error_id"] and r["level"] == "error")
    assert error["traceback"].startswith("Traceback (most recent call last):") and "OperationalError" in error["traceback"]
    failed = next(r for r in records if r.get("request_id") == seen["error_id"] and r["logger"] == "pixelgate.access")
    assert failed["status"] == 500 and failed["key_id"] is None
    console = [r for r in records if r.get("request_id") == seen["console_id"]]
    assert {r["level"] for r in console} == {"error", "info"} and "OperationalError" in console[0]["traceback"]


def test_a_vendor_failure_is_logged_with_the_request_id(make_gateway, caplog):
    closed = _free_port()  # nothing listens there: the channel refuses, the sandbox answers
    broken = openai_channel(f"http://127.0.0.1:{closed}/v1", "broken", priority=10, models=["sandbox-image"])
    gateway = make_gateway(channels=[{**broken, "provider": "openai-compatible"}])
    with caplog.at_level(logging.WARNING, logger="pixelgate"), gateway.http() as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "16x16"})
    assert resp.status_code == 200, resp.text
    warning = next(r for r in caplog.records if r.name == "pixelgate.engine")
    assert warning.request_id == resp.headers["x-request-id"]
    assert warning.getMessage().startswith("channel broken failed: upstream_unavailable: cannot connect")
