"""Every console form and query, as an admin and as a plain key, with hostile values in each field
one at a time (the others valid): no answer is a 5xx. On both databases, since PostgreSQL is the
stricter (NUL in text, integers past 32 bits)."""

from __future__ import annotations

import pytest

from tests.console.test_console import csrf, sign_in

HOSTILE = ["abc", "NaN", "1e30", "-Infinity", "", " ", "x" * 5000, "\u202e\U0001f600é漢字", "-1", "0",
           "99999999999999999999", "\x00", "1.5", "<script>alert(1)</script>", "2026-13-45T99:99"]

VALID = {"name": "fz", "provider": "sandbox", "models": "sandbox-image", "priority": "0", "weight": "1",
         "base_url": "", "api_key": "", "model": "sandbox-image", "amount": "1", "currency": "USD", "operation": "*",
         "quality": "", "size": "16x16", "tier": "", "speed": "", "balance": "5", "spend_limit": "", "reference": "",
         "allowed_models": "", "account_id": "", "expires_at": "", "rate_limit_rpm": "", "max_concurrent": "",
         "is_admin": "", "prompt": "a fox", "n": "1", "style": "", "background": "", "output_format": "", "seed": "",
         "custom_id": "MJ::JOB::upsample::1::x"}

FORMS = {  # path -> its fields
    "/console/channels": ["name", "provider", "base_url", "api_key", "models", "priority", "weight"],
    "/console/channels/sandbox/edit": ["base_url", "api_key", "models", "priority", "weight"],
    "/console/channels/sandbox/test": ["model"],
    "/console/keys": ["name", "allowed_models", "account_id", "expires_at", "rate_limit_rpm", "max_concurrent",
                      "is_admin"],
    "/console/accounts": ["name", "balance", "spend_limit"],
    "/console/accounts/1/topup": ["amount", "reference"],
    "/console/prices": ["model", "amount", "currency", "operation", "quality", "size", "tier", "speed"],
    "/console/playground": ["model", "prompt", "n", "size", "quality", "style", "background", "output_format",
                            "seed"],
    "/console/playground/stream": ["model", "prompt", "size"],
    "/console/playground/tasks/task_nope/action": ["custom_id"],
    "/console/tasks/task_nope/cancel": [],
}
PATHS = ["/console/keys/{}/toggle", "/console/accounts/{}/topup", "/console/tasks/{}/cancel",
         "/console/channels/{}/toggle", "/console/playground/tasks/{}/action"]
QUERIES = {"/console/overview": "days", "/console/accounts": "account", "/console/requests": "key",
           "/console/gallery": "page", "/console/playground": "model"}
GETS = ["/console/requests/{}", "/console/tasks/{}", "/console/playground/tasks/{}"]


@pytest.mark.long(90)
def test_no_console_input_gets_a_5xx(make_gateway):
    gateway = make_gateway()
    with gateway.http() as admin:
        admin.post("/admin/accounts", json={"name": "first", "balance": "10"})
    plain = gateway.create_key()
    failures, answered = [], 0
    for key in (None, plain):  # the admin, then a key that may use only its own pages
        client = sign_in(gateway) if key is None else sign_in(gateway, key)
        token = csrf(client)

        def check(resp, what) -> None:
            nonlocal answered
            answered += 1
            if resp.status_code >= 500:
                failures.append((what, resp.status_code, resp.text[:200]))

        for path, fields in FORMS.items():
            for field in fields:
                for value in HOSTILE:
                    form = {**{f: VALID[f] for f in fields}, "csrf": token, field: value}
                    check(client.post(path, data=form), (path, field, value))
        for template in PATHS:
            for value in ["abc", "99999999999999999999", "-1", "0", "%00", "x" * 300, "%F0%9F%98%80"]:
                check(client.post(template.format(value), data={"csrf": token}), (template, value))
        for path, name in QUERIES.items():
            for value in HOSTILE:
                check(client.get(path, params={name: value}), (path, name, value))
        for path in ("/console/requests",):
            for name in ("model", "status"):
                for value in HOSTILE:
                    check(client.get(path, params={name: value}), (path, name, value))
        for template in GETS:
            for value in ["abc", "%00", "x" * 300, "%F0%9F%98%80"]:
                check(client.get(template.format(value)), (template, value))
        for value in HOSTILE:  # a forged CSRF token of any shape is a 403, not a crash
            check(client.post("/console/keys", data={"csrf": value, "name": "x"}), ("csrf", value))
    anonymous = sign_in(gateway).__class__(base_url=gateway.base_url, timeout=30)
    login = anonymous.get("/console/login")
    token = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    for value in HOSTILE:
        for field in ("key", "csrf"):
            check(anonymous.post("/console/login", data={"csrf": token, "key": "pg-x", field: value}), ("login", field, value))
    assert answered > 1000
    assert not failures, failures[:10]
