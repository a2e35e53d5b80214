"""The admin API: keys shown once and stored hashed; channels managed at run time; upstream keys
never returned."""

from __future__ import annotations

import hashlib

from tests.conftest import ADMIN_KEY, openai_channel

GEN = "/v1/images/generations"


def test_key_is_shown_once_and_stored_as_hash(gateway):
    with gateway.http() as admin:
        created = admin.post("/admin/keys", json={"name": "bob", "allowed_models": ["sandbox-image"]}).json()
        token = created["key"]
        listed = admin.get("/admin/keys").json()["data"]
        one = admin.get(f"/admin/keys/{created['id']}").json()
    assert token.startswith("pg-") and "key" not in one
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert token not in str(listed)
    digest = hashlib.sha256(token.encode()).hexdigest()

    import asyncio

    from sqlalchemy import text

    async def stored() -> list:
        async with gateway.services.db.connect() as conn:
            return list((await conn.execute(text("SELECT key_hash FROM api_keys"))).scalars())

    hashes = asyncio.run_coroutine_threadsafe(stored(), _loop(gateway)).result()
    assert digest in hashes and token not in hashes


def _loop(gateway):
    return gateway.services.records._task.get_loop()


def test_bad_admin_input_names_the_field(gateway):
    with gateway.http() as admin:
        resp = admin.post("/admin/keys", json={"name": ""})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "name"
        resp = admin.post("/admin/channels", json={"name": "x", "provider": "nope", "models": ["m"]})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "provider"
        resp = admin.post("/admin/channels", json={"name": "x", "provider": "openai-compatible", "models": ["m"]})
        assert resp.status_code == 400 and "base_url" in resp.json()["error"]["message"]
        resp = admin.patch("/admin/channels/sandbox", json={"weight": 0})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "weight"
        assert admin.get("/admin/channels/nope").status_code == 404


def test_channels_managed_at_run_time(gateway, openai_upstream):
    state, url = openai_upstream
    with gateway.http() as admin:
        resp = admin.post("/admin/channels", json={**openai_channel(url, "live"), "api_key": "sk-emulator-key"})
        assert resp.status_code == 201, resp.text
        view = resp.json()
        assert "api_key" not in view and view["has_api_key"] is True
        assert "sk-emulator-key" not in admin.get("/admin/channels").text
        ok = admin.post("/v1/images/generations", json={"model": "dall-e-2", "prompt": "x", "size": "256x256"})
        assert ok.status_code == 200 and len(state.requests) == 1
        assert admin.patch("/admin/channels/live", json={"enabled": False}).status_code == 200
        off = admin.post("/v1/images/generations", json={"model": "dall-e-2", "prompt": "x"})
        assert off.status_code == 503 and off.json()["error"]["code"] == "no_channel_available"
        assert admin.delete("/admin/channels/live").status_code == 204
        gone = admin.post("/v1/images/generations", json={"model": "dall-e-2", "prompt": "x"})
        assert gone.status_code == 404


def test_a_channel_key_is_shown_masked_by_the_admin_api_and_the_console(gateway, openai_upstream):
    from tests.console.test_console import sign_in

    _, url = openai_upstream
    key = "sk-proj-ChannelSecretKey-9f3c"
    with gateway.http() as admin:
        made = admin.post("/admin/channels", json={**openai_channel(url, "masked"), "api_key": key}).json()
        listed = admin.get("/admin/channels").text
        one = admin.get("/admin/channels/masked").json()
        edited = admin.patch("/admin/channels/masked", json={"priority": 3}).json()
        short = admin.post("/admin/channels", json={**openai_channel(url, "short"), "api_key": "sk-shortkey"}).json()
    assert made["api_key_hint"] == one["api_key_hint"] == edited["api_key_hint"] == "sk-...9f3c"
    assert short["api_key_hint"] == "..."  # too short to show any of it
    page = sign_in(gateway).get("/console/channels").text
    assert "key sk-...9f3c" in page
    for text in (listed, str(one), str(edited), page):
        assert key not in text and key[3:-4] not in text and "sk-shortkey" not in text


def test_model_mapping(gateway, openai_upstream):
    state, url = openai_upstream
    with gateway.http() as admin:
        admin.post("/admin/channels", json=openai_channel(url, "mapped", models=["house-style"],
                                                          model_map={"house-style": "dall-e-3"}))
        resp = admin.post("/v1/images/generations", json={"model": "house-style", "prompt": "x"})
    assert resp.status_code == 200, resp.text
    assert state.requests[-1].fields["model"] == "dall-e-3"


def test_admin_key_from_environment_setting(gateway):
    with gateway.http(key=ADMIN_KEY) as admin:
        assert admin.get("/admin/keys").json()["data"][0]["is_admin"] is True


def test_adding_a_channel_answers_what_will_stop_it(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    with gateway.http() as admin:
        resp = admin.post("/admin/channels", json={"name": "new", "provider": "openai-compatible",
                                                   "base_url": "https://gateway.example/v1",
                                                   "models": ["house-model", "dall-e-3"]})
    assert resp.status_code == 201
    warnings = resp.json()["warnings"]
    assert any("no API key" in w for w in warnings), warnings
    # every catalog model is priced (dall-e-3 too); a name only the upstream knows is not
    assert any("no price for house-model" in w and "dall-e-3" not in w for w in warnings), warnings


def test_failed_requests_keep_their_model_in_usage(gateway):
    with gateway.http() as client:
        assert client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x",
                                                           "sandbox_fail": "server_error"}).status_code >= 500
        assert client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x",
                                                           "size": "16x16"}).status_code == 200
        rows = client.get("/admin/usage", params={"group_by": "model"}).json()["data"]
    row = [r for r in rows if r["model"] == "sandbox-image"][0]
    assert row["requests"] == 2 and row["failed"] == 1 and row["images"] == 1


def test_connection_errors_name_the_host(make_gateway):
    gateway = make_gateway(channels=[{"name": "gone", "provider": "openai-compatible", "api_key": "k",
                                      "base_url": "http://127.0.0.1:9/v1", "models": ["m"]}])
    with gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "m", "prompt": "x"})
    assert resp.status_code == 502 and "127.0.0.1:9" in resp.json()["error"]["message"]


def test_a_null_for_a_field_that_cannot_be_empty_is_a_400_naming_it(gateway):
    with gateway.http() as admin:
        key = admin.post("/admin/keys", json={"name": "nullable", "group": "g"}).json()
        account = admin.post("/admin/accounts", json={"name": "acct", "spend_limit": "5"}).json()
        for path, field in ((f"/admin/keys/{key['id']}", "name"), (f"/admin/keys/{key['id']}", "enabled"),
                            (f"/admin/accounts/{account['id']}", "name"),
                            (f"/admin/accounts/{account['id']}", "markup")):
            resp = admin.patch(path, json={field: None})
            assert resp.status_code == 400 and resp.json()["error"]["param"] == field, (path, resp.text)
        # where null means "none", it still clears the field
        assert admin.patch(f"/admin/keys/{key['id']}", json={"group": None}).json()["group"] is None
        assert admin.patch(f"/admin/accounts/{account['id']}", json={"spend_limit": None}).json()["spend_limit"] is None
        resp = admin.patch(f"/admin/keys/{key['id']}", json={"account_id": 999999})
        assert resp.status_code == 404 and resp.json()["error"]["param"] == "account_id"
        for field in ("provider", "models", "weight", "priority", "enabled", "base_url"):
            resp = admin.patch("/admin/channels/sandbox", json={field: None})
            assert resp.status_code in (200, 400), (field, resp.text)
            assert resp.status_code == 200 or resp.json()["error"]["param"] == field, (field, resp.text)
        assert admin.get("/admin/keys").status_code == 200 and admin.get("/admin/channels").status_code == 200


def test_a_second_price_for_the_same_entry_replaces_the_first(gateway):
    """The newest price wins, through the admin API and the console's form alike (one service)."""
    from tests.console.test_console import csrf, sign_in

    gen = {"model": "sandbox-image", "prompt": "x", "size": "16x16"}
    with gateway.http() as admin:
        first = admin.post("/admin/prices", json={"model": "sandbox-image", "amount": "0.10"})
        assert first.status_code == 201, first.text
        second = admin.post("/admin/prices", json={"model": "sandbox-image", "amount": "0.30"})
        assert second.status_code == 200 and second.json()["id"] == first.json()["id"], second.text
        assert admin.post(GEN, json=gen).headers["x-pixelgate-cost"] == "0.3"
        # another operation or dimension is another entry
        other = admin.post("/admin/prices", json={"model": "sandbox-image", "amount": "0.5",
                                                  "dimensions": {"quality": "high"}})
        assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
        console = sign_in(gateway)
        resp = console.post("/console/prices", data={"csrf": csrf(console, "/console/prices"),
                                                     "model": "sandbox-image", "amount": "0.07"})
        assert resp.status_code == 303, resp.text
        assert admin.post(GEN, json=gen).headers["x-pixelgate-cost"] == "0.07"
        admin_rows = [p for p in admin.get("/admin/prices").json()["data"]
                      if p["model"] == "sandbox-image" and p["origin"] == "admin"]
        assert sorted((p["amount"], tuple(p["dimensions"].items())) for p in admin_rows) == [
            ("0.07", ()), ("0.5", (("quality", "high"),))]
        again = admin.post("/admin/prices", json={"model": "sandbox-image", "amount": "0.2"})
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert admin.post(GEN, json=gen).headers["x-pixelgate-cost"] == "0.2"


def test_the_newest_of_equal_prices_wins_where_several_were_stored(gateway):
    """Databases from before prices were replaced may hold several rows for one entry."""
    from pixelgate.db.models import PriceRow

    async def add_twice() -> None:
        async with gateway.services.sessions() as session, session.begin():
            for amount in ("0.11", "0.22"):
                session.add(PriceRow(model="sandbox-image", operation="*", dimensions={}, amount=amount,
                                     currency="USD", source="admin"))
                await session.flush()
        gateway.services.engine.billing.forget()

    gateway.run(add_twice())
    with gateway.http() as admin:
        gen = {"model": "sandbox-image", "prompt": "x", "size": "16x16"}
        assert admin.post(GEN, json=gen).headers["x-pixelgate-cost"] == "0.22"
        assert admin.post("/admin/prices", json={"model": "sandbox-image", "amount": "0.33"}).status_code == 200
        assert admin.post(GEN, json=gen).headers["x-pixelgate-cost"] == "0.33"
        admin_rows = [p for p in admin.get("/admin/prices").json()["data"]
                      if p["model"] == "sandbox-image" and p["origin"] == "admin"]
        assert [p["amount"] for p in admin_rows] == ["0.33"]
