"""The console's rules, over plain HTTP: sign-in by key into an HttpOnly, SameSite cookie that
holds no key, CSRF on every form, admin pages for admin keys only, every page renders."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import ADMIN_KEY

PAGES = ["overview", "channels", "keys", "accounts", "prices", "requests", "tasks", "playground", "gallery"]


def sign_in(gateway, key: str = ADMIN_KEY) -> httpx.Client:
    client = httpx.Client(base_url=gateway.base_url, timeout=30)
    page = client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    resp = client.post("/console/login", data={"csrf": token, "key": key})
    assert resp.status_code == 303 and resp.headers["location"] == "/console/overview", resp.text
    return client


def csrf(client: httpx.Client, page: str = "/console/overview") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(page).text).group(1)


def test_pages_need_a_session_and_the_root_leads_to_the_console(gateway):
    with httpx.Client(base_url=gateway.base_url) as anonymous:
        assert anonymous.get("/").headers["location"] == "/console/overview"
        for page in PAGES:
            resp = anonymous.get(f"/console/{page}")
            assert resp.status_code == 303 and resp.headers["location"] == "/console/login"


def test_the_session_cookie_is_httponly_strict_and_holds_no_key(gateway):
    client = sign_in(gateway)
    login = httpx.Client(base_url=gateway.base_url)
    token = re.search(r'name="csrf" value="([^"]+)"', login.get("/console/login").text).group(1)
    resp = login.post("/console/login", data={"csrf": token, "key": ADMIN_KEY})
    cookie = [h for h in resp.headers.get_list("set-cookie") if h.startswith("pg_console=")][0]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert ADMIN_KEY not in cookie and ADMIN_KEY[3:20] not in cookie
    for page in PAGES:
        assert client.get(f"/console/{page}").status_code == 200, page


def test_a_wrong_key_is_refused_at_sign_in(gateway):
    client = httpx.Client(base_url=gateway.base_url)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text).group(1)
    resp = client.post("/console/login", data={"csrf": token, "key": "pg-wrong"})
    assert resp.status_code == 401 and "pg_console=" not in resp.headers.get("set-cookie", "")


def test_forms_without_the_csrf_token_are_refused(gateway):
    client = sign_in(gateway)
    before = len(gateway.http().get("/admin/keys").json()["data"])
    assert client.post("/console/keys", data={"name": "sneaky"}).status_code == 403
    assert client.post("/console/keys", data={"name": "sneaky", "csrf": "0" * 64}).status_code == 403
    assert len(gateway.http().get("/admin/keys").json()["data"]) == before
    # a sign-in form posted from elsewhere (no matching cookie) is refused too
    other = httpx.Client(base_url=gateway.base_url)
    assert other.post("/console/login", data={"csrf": "x", "key": ADMIN_KEY}).status_code == 403
    # with the token it works
    assert client.post("/console/keys", data={"name": "fine", "csrf": csrf(client)}).status_code == 200
    assert len(gateway.http().get("/admin/keys").json()["data"]) == before + 1


def test_a_client_key_sees_only_its_own_pages_and_data(gateway):
    own = gateway.create_key()
    other = gateway.create_key()
    for key, prompt in ((own, "mine"), (other, "theirs")):
        with gateway.http(key) as api:
            assert api.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": prompt,
                                                            "size": "32x32", "response_format": "url"}).status_code == 200
    client = sign_in(gateway, own)
    for page in ("channels", "keys", "accounts", "prices", "requests"):
        assert client.get(f"/console/{page}").status_code == 403, page
    for page in ("overview", "tasks", "playground", "gallery"):
        assert client.get(f"/console/{page}").status_code == 200, page
    overview = client.get("/console/overview").text
    assert "this key only" in overview
    gallery = client.get("/console/gallery").text
    assert gallery.count('class="thumb"') == 1


def test_a_disabled_key_loses_its_session(gateway):
    key = gateway.create_key()
    client = sign_in(gateway, key)
    key_id = [k for k in gateway.http().get("/admin/keys").json()["data"] if k["prefix"] == key[:8]][0]["id"]
    gateway.http().patch(f"/admin/keys/{key_id}", json={"enabled": False})
    assert client.get("/console/overview").status_code == 303
