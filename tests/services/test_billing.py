"""Every image paid for exactly once: prices, holds under concurrency, settlement to what was
delivered, refunds (also across a restart), rate limits, usage."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from pixelgate.db.session import make_engine, migrate, sessionmaker
from pixelgate.domain.prices import DEFAULT_PRICES, Price
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.errors import NotPriced
from pixelgate.services.billing import Billing, request_dimensions
from tests.conftest import ADMIN_KEY, database, openai_channel, openai_error

GEN = "/v1/images/generations"


def _balance(gateway, account_id: int) -> dict:
    with gateway.http() as admin:
        return admin.get(f"/admin/accounts/{account_id}").json()


def test_fifty_concurrent_requests_race_for_a_balance_of_ten(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "1.5")
    account_id, key = gateway.paying_key("15")

    def one(i: int) -> int:
        with gateway.http(key=key) as client:
            return client.post(GEN, json={"model": "sandbox-image", "prompt": f"p{i}", "size": "16x16"}).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses.count(200) == 10 and statuses.count(402) == 40
    account = _balance(gateway, account_id)
    assert Decimal(account["balance"]) == 0 and Decimal(account["reserved"]) == 0
    assert Decimal(account["spent"]) == Decimal("15")


def test_partial_delivery_is_charged_for_what_arrived(make_gateway, openai_upstream):
    state, url = openai_upstream
    gateway = make_gateway(unpriced="refuse", currency="CNY", channels=[openai_channel(url)])
    account_id, key = gateway.paying_key("10")
    state.fail_next(500, count=2)  # dall-e-3 makes one image per call: 2 of the 4 calls fail
    with gateway.http(key=key) as client:
        resp = client.post("/models/openai/dall-e-3/predictions", json={"input": {"prompt": "x", "n": 4}})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["output"]) == 2
    account = _balance(gateway, account_id)
    assert Decimal(account["balance"]) == Decimal("10") - Decimal("0.56")  # 2 x 0.28 CNY, exactly
    assert Decimal(account["reserved"]) == 0


def test_failure_releases_the_hold(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "2")
    account_id, key = gateway.paying_key("5")
    with gateway.http(key=key) as client:
        resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "sandbox_fail": "server_error"})
        assert resp.status_code == 502
        too_many = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "n": 3})
        assert too_many.status_code == 402 and too_many.json()["error"]["code"] == "insufficient_balance"
    account = _balance(gateway, account_id)
    assert Decimal(account["balance"]) == 5 and Decimal(account["reserved"]) == 0


def test_unpriced_model_is_refused_before_any_upstream_call(make_gateway, openai_upstream):
    state, url = openai_upstream
    # every catalog model has a built-in price: a model only an OpenAI-compatible upstream knows has none
    gateway = make_gateway(unpriced="refuse", channels=[openai_channel(url, provider="openai-compatible",
                                                                      models=["house-model"])])
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "house-model", "prompt": "x"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "model_not_priced"
    assert state.requests == []


def test_spend_limit(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "1")
    account_id, key = gateway.paying_key(None, spend_limit="2")
    with gateway.http(key=key) as client:
        codes = [client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "16x16"}).status_code
                 for _ in range(3)]
    assert codes == [200, 200, 402]


def test_rate_limits(make_gateway):
    gateway = make_gateway()
    with gateway.http() as admin:
        rpm_key = admin.post("/admin/keys", json={"name": "rpm", "rate_limit_rpm": 2}).json()["key"]
        one_key = admin.post("/admin/keys", json={"name": "one", "max_concurrent": 1}).json()["key"]
    with gateway.http(key=rpm_key) as client:
        codes = [client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "16x16"}) for _ in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert 1 <= int(codes[2].headers["retry-after"]) <= 60
    body = {"model": "sandbox-image", "prompt": "x", "size": "16x16", "sandbox_delay_ms": 2000}
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(lambda: gateway.http(key=one_key).post(GEN, json=body).status_code)
        time.sleep(0.8)  # the first holds its slot by now, even on a loaded machine
        second = gateway.http(key=one_key).post(GEN, json=body)
        assert second.status_code == 429 and second.json()["error"]["code"] == "concurrency_limit_exceeded"
        assert slow.result() == 200
    assert gateway.http(key=one_key).post(GEN, json=body).status_code == 200  # the slot was released


def test_usage_reports_cost_and_images(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "0.25")
    account_id, key = gateway.paying_key("100")
    with gateway.http(key=key) as client:
        for n in (1, 3):
            assert client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "n": n, "size": "16x16"}).status_code == 200
        mine = client.get("/v1/usage").json()
    assert mine["data"] == [{"model": "sandbox-image", "cost": "1", "images": 4, "requests": 2, "failed": 0}]
    with gateway.http() as admin:
        by_key = admin.get("/admin/usage", params={"group_by": "key"}).json()
        assert admin.get("/admin/usage", params={"group_by": "nope"}).status_code == 400
    assert Decimal(by_key["total_cost"]) == 1


# ---- prices ----

@pytest.fixture
def billing(tmp_path):
    async def make(currency="USD", configured=(), unpriced="refuse"):
        db = make_engine(f"sqlite+aiosqlite:///{tmp_path}/b.db")
        await migrate(db)
        billing = Billing(sessionmaker(db), currency, {"CNY": Decimal("0.14")}, unpriced, list(configured), 0)
        billing.db = db  # disposed by _quote, inside the loop that made it
        return billing
    return make


def _req(model: str, operation: str = "generate", **fields) -> ImageRequest:
    extras = {"rendering_speed": fields.pop("speed")} if "speed" in fields else {}
    return ImageRequest(operation=Operation(operation) if operation in Operation._value2member_map_ else Operation.GENERATE,
                        model=model, extras=extras, **fields)


@pytest.mark.parametrize("model,fields,currency,expected", [
    ("dall-e-3", {}, "CNY", "0.28"),
    ("dall-e-3", {"size": "1024x1024"}, "CNY", "0.28"),
    ("dall-e-3", {"size": "1024x1792"}, "CNY", "0.42"),
    ("dall-e-2", {"size": "1024x1024"}, "CNY", "0.14"),
    ("midjourney", {}, "CNY", "0.35"),
    ("V3", {"speed": "TURBO"}, "USD", "0.03"),
    ("V3", {"speed": "QUALITY"}, "USD", "0.09"),
    ("V3", {}, "USD", "0.06"),
    ("V3", {"speed": "TURBO", "operation": "edit"}, "USD", "0.06"),
    ("V_2", {"operation": "edit"}, "USD", "0.08"),
    ("V_2_TURBO", {"operation": "edit"}, "USD", "0.05"),
    ("V_2A_TURBO", {}, "USD", "0.025"),
    ("V_1_TURBO", {}, "USD", "0.02"),
    ("dall-e-3", {"size": "1024x1024"}, "USD", "0.0392"),  # 0.28 CNY at the configured 0.14
])
def test_source_document_prices(billing, model, fields, currency, expected):
    fields = dict(fields)
    op = fields.pop("operation", "generate")
    quote = asyncio.run(_quote(billing, currency, _req(model, op, **fields)))
    assert quote.unit_price == Decimal(expected)


async def _quote(make, currency, req, **kw):
    billing = await make(currency, **kw)
    try:
        return await billing.quote(req)
    finally:
        await billing.db.dispose()


def test_most_specific_price_wins_and_operator_beats_default(billing):
    configured = [Price("gpt-image-1", Decimal("0.04"), "USD"),
                  Price("gpt-image-1", Decimal("0.17"), "USD", dimensions={"quality": "high"}),
                  Price("gpt-image-1", Decimal("0.25"), "USD", dimensions={"quality": "high", "size": "1536x1024"}),
                  Price("gpt-image-1", Decimal("0.30"), "USD", dimensions={"tier": "2K"}),
                  Price("dall-e-3", Decimal("0.05"), "USD")]
    cases = [({}, "0.04"), ({"quality": "high"}, "0.17"), ({"quality": "high", "size": "1536x1024"}, "0.25"),
             ({"size": "2048x2048"}, "0.30"), ({"quality": "low"}, "0.04")]
    for fields, expected in cases:
        assert asyncio.run(_quote(billing, "USD", _req("gpt-image-1", **fields), configured=configured)).unit_price \
            == Decimal(expected)
    assert asyncio.run(_quote(billing, "USD", _req("dall-e-3"), configured=configured)).unit_price == Decimal("0.05")
    # an operator's flat price beats the built-in ones even where those are more detailed (the
    # dall-e-3 1024x1792 row, FLUX.2's size tiers)
    assert asyncio.run(_quote(billing, "USD", _req("dall-e-3", size="1024x1792"),
                              configured=configured)).unit_price == Decimal("0.05")
    flat = [Price("flux-2-pro", Decimal("1"), "USD")]
    assert asyncio.run(_quote(billing, "USD", _req("flux-2-pro", size="2048x2048"), configured=flat)).unit_price == 1
    assert asyncio.run(_quote(billing, "USD", _req("flux-2-pro", size="2048x2048"))).unit_price == Decimal("0.075")


def test_unpriced_is_refused_or_free_by_setting(billing):
    with pytest.raises(NotPriced):
        asyncio.run(_quote(billing, "USD", _req("house-model")))
    assert asyncio.run(_quote(billing, "USD", _req("house-model"), unpriced="free")).unit_price == 0


def test_every_default_price_names_its_source():
    assert all(p.source for p in DEFAULT_PRICES)


# ---- an asynchronous task that fails after a restart is refunded once ----

def test_failed_task_after_restart_is_refunded_once(backend, tmp_path):
    import httpx

    from tests.test_serve import _start_anywhere, _stop

    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with database(backend, tmp_path) as url:
        env = {**os.environ, "PIXELGATE_DATABASE_URL": url, "PIXELGATE_ADMIN_KEY": ADMIN_KEY,
               "PIXELGATE_SANDBOX": "true",  # a database server: the sandbox is off unless asked for
               "PIXELGATE_DATA_DIR": str(tmp_path / "data"), "PIXELGATE_POLL_INTERVAL_SECONDS": "0.1",
               "PIXELGATE_TASK_LEASE_SECONDS": "1",
               "PIXELGATE_PRICES": '[{"model": "sandbox-async", "amount": "0.5"}]'}
        proc, base, _ = _start_anywhere(["serve"], tmp_path, env)
        try:
            account = httpx.post(base + "/admin/accounts", headers=headers, json={"name": "a", "balance": "2"}).json()
            key = httpx.post(base + "/admin/keys", headers=headers,
                             json={"name": "k", "account_id": account["id"]}).json()["key"]
            resp = httpx.post(base + "/models/sandbox/sandbox-async/predictions", headers={"Authorization": f"Bearer {key}"},
                              json={"input": {"prompt": "x", "n": 2, "sandbox_fail": "job_failed", "sandbox_job_seconds": 2}})
            assert resp.status_code == 201, resp.text
            task_id = resp.json()["id"]
            held = httpx.get(f"{base}/admin/accounts/{account['id']}", headers=headers).json()
            assert Decimal(held["reserved"]) == 1 and Decimal(held["available"]) == 1
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc, _, _ = _start_anywhere(["serve"], tmp_path, env, port=int(base.rsplit(":", 1)[1]))
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                task = httpx.get(f"{base}/tasks/{task_id}", headers={"Authorization": f"Bearer {key}"}).json()
                if task["status"] != "running":
                    break
                time.sleep(0.1)
            assert task["status"] == "failed"
            time.sleep(0.5)
            after = httpx.get(f"{base}/admin/accounts/{account['id']}", headers=headers).json()
        finally:
            _stop(proc)
    assert Decimal(after["balance"]) == 2 and Decimal(after["reserved"]) == 0 and Decimal(after["spent"]) == 0


def test_a_vendors_own_resolution_tier_prices_the_request_and_a_size_does_not():
    def dims(size, resolution):
        return request_dimensions(ImageRequest(Operation.GENERATE, "m", "x", size=size,
                                               extras={"resolution": resolution}))
    assert dims("1024x1024", "4k")["tier"] == "4K"  # FLUX 3's resolution names the tier it is billed at
    assert dims("1024x1024", "768sq")["tier"] == "768sq"
    assert dims("2560x1440", "1312x736")["tier"] == "2K"  # Ideogram's resolution is a size: the size's tier


# ---- a request whose hold the sweeper released is paid or not answered ----

def _ledger(gateway, request_id: str | None = None) -> list[tuple[str, str, Decimal]]:
    from sqlalchemy import select

    from pixelgate.db.models import LedgerEntry

    async def rows():
        async with gateway.services.sessions() as session:
            query = select(LedgerEntry).where(LedgerEntry.kind != "topup").order_by(LedgerEntry.id)
            if request_id is not None:
                query = query.where(LedgerEntry.request_id == request_id)
            return [(e.request_id, e.kind, Decimal(e.amount)) for e in (await session.execute(query)).scalars()]

    return gateway.run(rows())


def _release_when_held(gateway) -> str:
    """Release the request's hold as the sweeper would (its real function), as soon as it exists;
    the request is then in its sandbox delay. A negative grace takes the live lease for lapsed."""
    deadline = time.monotonic() + 20
    while True:
        rows = _ledger(gateway)
        if open_holds := {r for r, kind, _ in rows if kind == "hold"} - {r for r, kind, _ in rows if kind == "settle"}:
            break
        assert time.monotonic() < deadline, "no hold"
        time.sleep(0.05)
    assert gateway.run(gateway.services.engine.billing.release_abandoned(grace_seconds=-3600)) == 1
    return open_holds.pop()


def test_a_request_whose_hold_was_released_is_charged_again_or_refused(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "0.25")
    account_id, key = gateway.paying_key("1")
    body = {"model": "sandbox-image", "prompt": "x", "size": "16x16", "response_format": "url",
            "sandbox_delay_ms": 1500}
    with gateway.http(key=key) as client, ThreadPoolExecutor(1) as pool:
        answer = pool.submit(client.post, GEN, json=body)
        request_id = _release_when_held(gateway)
        resp = answer.result()
        assert resp.status_code == 200, resp.text
        assert client.get(resp.json()["data"][0]["url"]).content.startswith(b"\x89PNG")
        assert resp.headers["x-request-id"] == request_id and resp.headers["x-pixelgate-cost"] == "0.25"
        assert Decimal(gateway.log_row(request_id)["cost"]) == Decimal("0.25")
        assert [(k, a) for _, k, a in _ledger(gateway, request_id)] == [
            ("hold", Decimal("0.25")), ("settle", 0), ("charge", Decimal("0.25"))]
        account = _balance(gateway, account_id)
        assert (Decimal(account["balance"]), Decimal(account["spent"]), Decimal(account["reserved"])) == (
            Decimal("0.75"), Decimal("0.25"), 0)

        # released, then the balance is spent elsewhere: the images are not handed out unpaid
        answer = pool.submit(client.post, GEN, json=body)
        request_id = _release_when_held(gateway)
        with gateway.http() as admin:
            assert admin.post(f"/admin/accounts/{account_id}/topup", json={"amount": "-0.70"}).status_code == 200
        resp = answer.result()
        openai_error(resp, 402, code="insufficient_balance")
        assert resp.headers["x-pixelgate-cost"] == "0" and "data" not in resp.json()
        assert Decimal(gateway.log_row(request_id)["cost"]) == 0
        assert [(k, a) for _, k, a in _ledger(gateway, request_id)] == [("hold", Decimal("0.25")), ("settle", 0)]
        account = _balance(gateway, account_id)
        assert (Decimal(account["balance"]), Decimal(account["spent"]), Decimal(account["reserved"])) == (
            Decimal("0.05"), Decimal("0.25"), 0)
