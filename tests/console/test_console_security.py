"""The console's defences: sign-in throttled like the APIs' key checks, sessions that end when
signed out or when the key is disabled (on every instance), framing and type headers on every
answer, amounts checked as the admin API checks them, and hostile form values answered with a
4xx page naming the field, never a 5xx."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.console.test_console import csrf, sign_in


def _login_form(client: httpx.Client) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text).group(1)


def test_sign_in_is_throttled_by_the_apis_count_of_failed_keys(make_gateway):
    gateway = make_gateway(auth_failures_per_minute=10)
    sign_in(gateway)  # the admin key is proven good from this address
    unproven = gateway.create_key()
    client = httpx.Client(base_url=gateway.base_url, timeout=30)
    token = _login_form(client)
    statuses = [client.post("/console/login", data={"csrf": token, "key": f"pg-guess-{i}"}).status_code
                for i in range(25)]
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}, statuses
    refused = client.post("/console/login", data={"csrf": token, "key": "pg-one-more-guess"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "Too many" in refused.text
    # the same count as the APIs: they refuse this address's unknown keys too; a key that verifies
    # is never throttled, not even one this address never used before
    with gateway.http("pg-another-guess") as api:
        assert api.get("/v1/models").status_code == 429
    assert client.post("/console/login", data={"csrf": token, "key": unproven}).status_code == 303


def _cookie(client: httpx.Client) -> str:
    return client.cookies["pg_console"]


def _with_cookie(base_url: str, cookie: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, cookies={"pg_console": cookie}, timeout=30)


def test_signing_out_ends_the_session_on_every_instance(make_gateway):
    first = make_gateway()
    second = make_gateway(database_url=first.settings.database_url, data_dir=first.settings.data_dir)
    client = sign_in(first)
    cookie = _cookie(client)
    assert _with_cookie(second.base_url, cookie).get("/console/overview").status_code == 200  # one session, any instance
    other = sign_in(first)  # another browser of the same key keeps its own session
    resp = client.post("/console/logout", data={"csrf": csrf(client)})
    assert resp.status_code == 303 and resp.headers["location"] == "/console/login"
    for base in (first.base_url, second.base_url):
        stale = _with_cookie(base, cookie).get("/console/overview")
        assert stale.status_code == 303 and stale.headers["location"] == "/console/login"
    assert other.get("/console/overview").status_code == 200


def test_a_disabled_key_stays_signed_out_when_enabled_again(gateway):
    key = gateway.create_key()
    client = sign_in(gateway, key)
    cookie = _cookie(client)
    key_id = [k for k in gateway.http().get("/admin/keys").json()["data"] if k["prefix"] == key[:8]][0]["id"]
    with gateway.http() as admin:
        admin.patch(f"/admin/keys/{key_id}", json={"enabled": False})
        assert _with_cookie(gateway.base_url, cookie).get("/console/overview").status_code == 303
        admin.patch(f"/admin/keys/{key_id}", json={"enabled": True})
    assert _with_cookie(gateway.base_url, cookie).get("/console/overview").status_code == 303
    assert sign_in(gateway, key).get("/console/overview").status_code == 200  # signing in again works


HEADERS = {"x-frame-options": "DENY", "x-content-type-options": "nosniff"}


def test_every_console_answer_forbids_framing_and_sniffing(gateway):
    client = sign_in(gateway)
    anonymous = httpx.Client(base_url=gateway.base_url)
    answers = [anonymous.get("/console/login"), anonymous.get("/console/overview"),
               *(client.get(f"/console/{page}") for page in ("overview", "channels", "keys", "accounts", "prices",
                                                              "requests", "tasks", "playground", "gallery")),
               client.get("/console/requests/nope"), client.get("/console/overview?days=abc"),
               client.post("/console/accounts", data={"csrf": csrf(client), "name": "a", "balance": "NaN"}),
               client.get("/console/playground", headers={"hx-request": "true"})]
    for resp in answers:
        for name, value in HEADERS.items():
            assert resp.headers.get(name) == value, (resp.request.url, name)
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
        assert resp.headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize("path, field, value", [
    ("/console/accounts", "balance", "NaN"), ("/console/accounts", "balance", "-Infinity"),
    ("/console/accounts", "spend_limit", "1e30"), ("/console/accounts", "balance", "-5"),
    ("/console/accounts/1/topup", "amount", "NaN"), ("/console/accounts/1/topup", "amount", "1e30"),
    ("/console/prices", "amount", "-Infinity"), ("/console/prices", "amount", "NaN"),
    ("/console/keys", "rate_limit_rpm", "abc"), ("/console/keys", "account_id", "99999999999999"),
    ("/console/keys", "expires_at", "tomorrow"), ("/console/channels", "priority", "1e30"),
])
def test_amounts_and_numbers_are_checked_as_the_admin_api_checks_them(module_gateway, path, field, value):
    client = sign_in(module_gateway)
    with module_gateway.http() as admin:
        if not admin.get("/admin/accounts/1").status_code == 200:
            admin.post("/admin/accounts", json={"name": "first", "balance": "10"})
        before = admin.get("/admin/accounts/1").json()
    form = {"csrf": csrf(client), "name": "fuzzed", "model": "sandbox-image", "amount": "1", "provider": "sandbox",
            "models": "sandbox-image", field: value}
    resp = client.post(path, data=form)
    assert resp.status_code == 400, resp.text
    assert f"<code>{field}</code>" in resp.text
    with module_gateway.http() as admin:
        assert admin.get("/admin/accounts/1").json() == before
        assert not [a for a in admin.get("/admin/keys").json()["data"] if a["name"] == "fuzzed"]
