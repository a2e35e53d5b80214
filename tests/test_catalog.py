"""The catalog (pixelgate/catalog.toml): lifecycle, retired models served by their successor or
refused, the new models, prices for every model with token prices settled to the vendor's
usage, markups, the cost on every surface, and the README tables generated from it.

The vendor emulators here run on today's calendar (no LEGACY_DAY): a retired model's id is
refused by them as by the real API, so whatever reaches them went through the successor path.
"""

from __future__ import annotations

import base64
import importlib
import io
import time
from contextlib import ExitStack
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from pixelgate.config import Settings
from pixelgate.domain.catalog import catalog, load
from pixelgate.domain.prices import DEFAULT_PRICES, TokenUsage, token_cost
from pixelgate.providers import REGISTRY
from pixelgate.services import lifecycle
from pixelgate.simulators.google import GoogleEmulatorState
from pixelgate.simulators.google import create_app as create_google
from pixelgate.simulators.openai_images import OpenAIEmulatorState
from pixelgate.simulators.openai_images import create_app as create_openai
from tests.conftest import ADMIN_KEY, database, openai_channel, run_gateway
from tests.emulators.server import serve

GEN, EDIT = "/v1/images/generations", "/v1/images/edits"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def openai_today():
    """The OpenAI emulator on today's calendar: dall-e-* and gpt-image-1* answer 404."""
    state = OpenAIEmulatorState()
    with serve(create_openai(state)) as base:
        yield state, base + "/v1"


def _gateway(make_gateway, base: str, **settings):
    """The shipped defaults: retired models served by their successor, unpriced refused."""
    return make_gateway(channels=[openai_channel(base)], **{"retired_models": {}, "unpriced": "refuse", **settings})


# ---- the catalog as data ----

def test_every_model_a_provider_makes_is_in_the_catalog_with_a_price():
    cat = catalog()
    for provider in REGISTRY.values():
        for model in provider.models:
            entry = cat.get(model)
            assert entry is not None, f"{provider.name}'s {model} is not in catalog.toml"
            assert entry.prices, f"{model} has no price"
    assert all(p.source and p.date for p in DEFAULT_PRICES)


def test_price_as_bills_a_model_at_anothers_prices_and_says_so(tmp_path):
    flare, sunburst = catalog().get("gpt-image-2.5-flare"), catalog().get("gpt-image-2.6-sunburst")
    assert [p.tokens for p in flare.prices] == [p.tokens for p in sunburst.prices]
    assert flare.prices[0].source == "priced as gpt-image-2.6-sunburst (no vendor price page found for 2.5)"
    assert flare.prices[0].date == sunburst.prices[0].date
    (tmp_path / "bad.toml").write_text('[models.a]\nvendor = "x"\nname = "A"\nprice_as = "b"\n'
                                       '[models.b]\nvendor = "x"\nname = "B"\nprice_as = "a"\n')
    with pytest.raises(ValueError, match="price_as 'b' must name a model with prices of its own"):
        load(tmp_path / "bad.toml")


def test_status_follows_the_dates_and_successors_chain_to_a_live_model():
    cat = catalog()
    dalle3 = cat.get("dall-e-3")
    assert dalle3.status(date(2026, 5, 11)) == "current" and dalle3.status(date(2026, 5, 12)) == "retired"
    assert cat.get("gpt-image-1-mini").status(date(2026, 7, 1)) == "deprecated"
    # imagen-3.0 -> imagen-4.0-generate-001 (itself retired) -> gemini-nano-banana-2.1
    assert cat.successor("imagen-3.0-generate-002", date(2026, 12, 5)) == "gemini-nano-banana-2.1"
    assert cat.successor("imagen-3.0-generate-002", date(2026, 1, 1)) == "imagen-4.0-generate-001"


# ---- retired models ----

def test_dalle3_with_hd_and_style_is_served_by_its_successor(make_gateway, openai_today):
    state, base = openai_today
    gateway = _gateway(make_gateway, base)
    img = gateway.sdk().images.generate(model="dall-e-3", prompt="a red fox", size="1792x1024", quality="hd",
                                        style="natural")
    sent = state.requests[-1].fields
    assert sent["model"] == "gpt-image-2.5-sunburst" and sent["quality"] == "high" and sent["size"] == "1792x1024"
    assert "style" not in sent and "response_format" not in sent
    assert img.data[0].url  # dall-e-3's default answer is a URL, whoever made the image
    assert state.requests and len(state.requests) == 1


def test_source_document_002_dalle_examples_keep_working(make_gateway, openai_today):
    """Source document 002's DALL·E examples, as written, against today's OpenAI."""
    state, base = openai_today
    client = _gateway(make_gateway, base, unpriced="free").sdk()
    made = client.images.generate(model="dall-e-3", prompt="一只可爱的橘猫坐在窗台上看日落,油画风格", n=1,
                                  size="1024x1024", quality="hd")
    assert made.data[0].url
    square = Image.new("RGBA", (256, 256), (200, 40, 40, 255))
    buf = io.BytesIO()
    square.save(buf, "PNG")
    edited = client.images.edit(model="dall-e-2", image=("original.png", buf.getvalue(), "image/png"),
                                mask=("mask.png", buf.getvalue(), "image/png"), prompt="在图片中添加一只蝴蝶", n=1,
                                size="1024x1024")
    assert edited.data[0].url
    varied = client.images.create_variation(image=("original.png", buf.getvalue(), "image/png"), n=2,
                                            size="1024x1024")
    assert len(varied.data) == 2 and all(d.url for d in varied.data)
    paths = [(r.path, r.fields.get("model")) for r in state.requests]
    assert paths == [("/v1/images/generations", "gpt-image-2.5-sunburst"),
                     ("/v1/images/edits", "gpt-image-2.5-sunburst"), ("/v1/images/edits", "gpt-image-2.5-sunburst")]
    assert state.requests[-1].fields["prompt"] == catalog().get("dall-e-2").translate.variation_prompt


def test_a_retired_model_keeps_its_own_rules_and_price(make_gateway, openai_today):
    state, base = openai_today
    gateway = _gateway(make_gateway, base, currency="CNY")
    with gateway.http() as client:
        too_many = client.post(GEN, json={"model": "dall-e-3", "prompt": "x", "n": 2})
        made = client.post(GEN, json={"model": "dall-e-3", "prompt": "x", "size": "1024x1792"})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"
    assert made.status_code == 200 and made.headers["x-pixelgate-cost"] == "0.42"  # dall-e-3's price
    assert made.headers["x-pixelgate-currency"] == "CNY"
    assert len(state.requests) == 1


def test_the_operator_may_refuse_a_retired_model_naming_its_successor(make_gateway, openai_today):
    state, base = openai_today
    gateway = make_gateway(channels=[openai_channel(base)], retired_models={"dall-e-3": "refuse"})
    with gateway.http() as client:
        refused = client.post(GEN, json={"model": "dall-e-3", "prompt": "x"})
        other = client.post(GEN, json={"model": "dall-e-2", "prompt": "x"})  # still served by its successor
    err = refused.json()["error"]
    assert refused.status_code == 410 and err["code"] == "model_retired" and err["param"] == "model"
    assert "2026-05-12" in err["message"] and "gpt-image-2.5-sunburst" in err["message"]
    assert other.status_code == 200
    assert [r.fields["model"] for r in state.requests] == ["gpt-image-2.5-sunburst"]


def test_upstream_policy_sends_the_name_as_it_is(make_gateway, openai_today):
    state, base = openai_today
    gateway = make_gateway(channels=[openai_channel(base)], retired_models={"*": "upstream"})
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "dall-e-3", "prompt": "x"})
    assert resp.status_code == 502  # today's OpenAI no longer has it: the operator chose to ask
    assert state.requests[-1].fields["model"] == "dall-e-3"


def test_models_list_shows_status_successor_and_shutdown(make_gateway, openai_today):
    _, base = openai_today
    gateway = _gateway(make_gateway, base)
    with gateway.http() as client:
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        one = client.get("/v1/models/dall-e-3").json()
    assert models["dall-e-3"]["status"] == "retired" and models["dall-e-3"]["successor"] == "gpt-image-2.5-sunburst"
    assert models["dall-e-3"]["shutdown_date"] == "2026-05-12" and one == models["dall-e-3"]
    # the channel lists retired models only: it serves their successors, which the list shows
    current = models["gpt-image-2.6-sunburst"]
    assert current["status"] == "current" and current["successor"] is None and current["created"] > 0
    assert models["gpt-image-1-mini"]["successor"] == "gpt-image-2.6-sunburst"
    refused = make_gateway(channels=[openai_channel(base)], retired_models={"*": "refuse"})
    with refused.http() as client:
        ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert "dall-e-3" not in ids and "gpt-image-2.6-sunburst" in ids


def test_imagen_request_reaches_gemini(make_gateway):
    state = GoogleEmulatorState()
    with serve(create_google(state)) as base:
        gateway = make_gateway(retired_models={}, channels=[{
            "name": "google", "provider": "google", "base_url": base + "/v1beta", "api_key": state.api_key,
            "models": ["imagen-4.0-fast-generate-001"]}])
        with gateway.http() as client:
            resp = client.post("/models/google/imagen-4.0-fast-generate-001/predictions",
                               json={"input": {"prompt": "a deer", "numberOfImages": 2, "personGeneration": "allow_adult"}})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["output"]) == 2
    assert {r.path for r in state.requests} == {"/v1beta/models/gemini-nano-banana-2.1:generateContent"}


# ---- gpt-image-2 ----

def test_gpt_image_2_takes_any_valid_size_and_refuses_others_before_the_vendor(make_gateway, openai_today):
    state, base = openai_today
    gateway = make_gateway(channels=[openai_channel(base, models=["gpt-image-2", "gpt-image-2.6-sunburst"])])
    with gateway.http() as client:
        wide = client.post(GEN, json={"model": "gpt-image-2", "prompt": "x", "size": "2560x1440"})
        ratio = client.post(GEN, json={"model": "gpt-image-2", "prompt": "x", "size": "16:9"})
        bad = [client.post(GEN, json={"model": "gpt-image-2", "prompt": "x", "size": size})
               for size in ("1000x1000", "3200x800", "4096x2304", "512x512")]
        complexity = client.post(GEN, json={"model": "gpt-image-2.6-sunburst", "prompt": "x", "complexity": "low"})
        no_complexity = client.post(GEN, json={"model": "gpt-image-2", "prompt": "x", "complexity": "low"})
    assert wide.status_code == 200 and ratio.status_code == 200, (wide.text, ratio.text)
    assert [r.fields["size"] for r in state.requests[:2]] == ["2560x1440", "1360x768"]
    assert Image.open(io.BytesIO(base64.b64decode(wide.json()["data"][0]["b64_json"]))).size == (2560, 1440)
    assert all(r.status_code == 400 and r.json()["error"]["param"] == "size" for r in bad), [r.text for r in bad]
    assert complexity.status_code == 200 and state.requests[-1].fields["complexity"] == "low"
    assert no_complexity.status_code == 400 and no_complexity.json()["error"]["param"] == "complexity"
    assert len(state.requests) == 3


# ---- token prices, markups, the cost ----

def _ledger(gateway, account_id: int) -> dict:
    with gateway.http() as admin:
        return admin.get(f"/admin/accounts/{account_id}").json()


def test_token_priced_model_holds_its_most_and_charges_the_reported_usage(make_gateway, openai_today):
    state, base = openai_today
    gateway = make_gateway(channels=[openai_channel(base, models=["gpt-image-2"])], unpriced="refuse")
    account_id, key = gateway.paying_key("10")
    with gateway.http(key=key) as client:
        resp = client.post(GEN, json={"model": "gpt-image-2", "prompt": "a lighthouse at dusk", "n": 2,
                                      "quality": "low", "size": "1024x1024"})
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]
    rates = catalog().get("gpt-image-2").prices[0].tokens
    expected = token_cost(rates, TokenUsage(usage["input_tokens_details"]["text_tokens"],
                                            usage["input_tokens_details"]["image_tokens"], usage["output_tokens"]))
    assert Decimal(resp.headers["x-pixelgate-cost"]) == expected.quantize(Decimal("0.00000001"))
    account = _ledger(gateway, account_id)
    assert Decimal(account["spent"]) == expected.quantize(Decimal("0.00000001"))
    assert Decimal(account["reserved"]) == 0
    # the hold was the most two low 1024x1024 images can cost
    most = rates.most_output_tokens({"quality": "low", "size": "1024x1024"})
    assert most == 273 and usage["output_tokens"] <= 2 * most


def test_gemini_usage_metadata_is_what_is_charged(make_gateway):
    state = GoogleEmulatorState()
    with serve(create_google(state)) as base:
        gateway = make_gateway(unpriced="refuse", channels=[{
            "name": "google", "provider": "google", "base_url": base + "/v1beta", "api_key": state.api_key,
            "models": ["gemini-nano-banana-2.1"]}])
        account_id, key = gateway.paying_key("5")
        with gateway.http(key=key) as client:
            resp = client.post(GEN, json={"model": "gemini-nano-banana-2.1", "prompt": "a deer", "size": "4K"})
    assert resp.status_code == 200, resp.text
    charged = Decimal(resp.headers["x-pixelgate-cost"])
    # the emulator's usageMetadata for one 4K image: 12 prompt tokens, 2000 image tokens
    assert charged == (Decimal("1.50") * 12 + Decimal("30.00") * 2000) / 1_000_000
    assert Decimal(_ledger(gateway, account_id)["spent"]) == charged


def test_markups_of_account_and_key_group_multiply(make_gateway):
    gateway = make_gateway(unpriced="refuse", group_markups={"resellers": "2"}, currency="CNY")
    with gateway.http() as admin:
        account = admin.post("/admin/accounts", json={"name": "r", "balance": "100", "markup": "1.5"}).json()
        key = admin.post("/admin/keys", json={"name": "k", "account_id": account["id"], "group": "resellers"}).json()
        plain = admin.post("/admin/keys", json={"name": "p"}).json()["key"]
    gateway.set_price("sandbox-image", "0.1")
    with gateway.http(key=key["key"]) as client:
        marked = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "16x16"})
    with gateway.http(key=plain) as client:
        listed = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "16x16"})
    assert marked.headers["x-pixelgate-cost"] == "0.3" and listed.headers["x-pixelgate-cost"] == "0.1"
    with gateway.http() as admin:
        admin.patch(f"/admin/accounts/{account['id']}", json={"markup": "1"})
    with gateway.http(key=key["key"]) as client:
        assert client.post(GEN, json={"model": "sandbox-image", "prompt": "x",
                                      "size": "16x16"}).headers["x-pixelgate-cost"] == "0.2"


def test_every_surface_tells_the_cost(make_gateway):
    gateway = make_gateway(unpriced="refuse")
    gateway.set_price("sandbox-image", "0.01")
    gateway.set_price("sandbox-async", "0.02")
    with gateway.http() as client:
        sync = client.post("/models/sandbox/sandbox-image/predictions", json={"input": {"prompt": "x", "n": 2}})
        task = client.post("/models/sandbox/sandbox-async/predictions", json={"input": {"prompt": "x"}})
        assert task.headers["x-pixelgate-cost-limit"] == "0.02"
        task_id = task.json()["output"][0]["taskId"]
        for _ in range(200):
            done = client.get(f"/tasks/{task_id}").json()
            if done["status"] == "succeeded":
                break
            time.sleep(0.05)
        replicate = client.post("/v1/models/sandbox/sandbox-async/predictions", json={"input": {"prompt": "x"}},
                                headers={"Prefer": "wait=10"})
    assert sync.headers["x-pixelgate-cost"] == "0.02"
    assert done["metrics"]["cost"] == "0.02"
    assert replicate.json()["metrics"]["cost"] == "0.02", replicate.text


# ---- the README tables ----

def test_readme_tables_are_the_catalog():
    from pixelgate.catalog_docs import render_readme

    text = (ROOT / "README.md").read_text()
    assert render_readme(text) == text, "README tables differ from catalog.toml: run `pixelgate catalog --write-readme`"


# ---- the new models, through every surface that serves their vendor ----

NEW_MODELS = [("openai", "gpt-image-2"), ("openai", "gpt-image-2.5-sunburst"), ("openai", "gpt-image-2.6-flare"),
              ("google", "gemini-nano-banana-2.1"), ("google", "gemini-3-pro-image"),
              ("google", "gemini-3.1-flash-lite-image"), ("doubao", "doubao-seedream-5-0-pro-260628"),
              ("dashscope", "qwen-image-2.0-pro"), ("ideogram", "V4"), ("ideogram", "ideogram-v4"),
              ("doubao", "doubao-seedream-5-0-flash-260915"), ("dashscope", "wan2.7-image"),
              ("dashscope", "wan2.7-image-pro"), ("dashscope", "qwen-image-3.0"), ("dashscope", "qwen-image-3.0-pro"),
              ("bfl", "flux-3-image")]


@pytest.fixture(scope="module")
def simulated(backend, tmp_path_factory):
    """Every vendor simulated in-process on today's calendar, with the shipped defaults."""
    with ExitStack() as stack:
        tmp = tmp_path_factory.mktemp("simulated")
        url = stack.enter_context(database(backend, tmp))
        yield stack.enter_context(run_gateway(Settings(data_dir=tmp, database_url=url, admin_key=ADMIN_KEY,
                                                       simulate_vendors=True, cache_seconds=0,
                                                       poll_interval_seconds=0.05)))


@pytest.mark.parametrize("vendor,model", NEW_MODELS)
def test_new_model_through_openai_predictions_and_replicate(simulated, vendor, model):
    with simulated.http() as client:
        openai_api = client.post(GEN, json={"model": model, "prompt": "a lighthouse", "size": "1024x1024"})
        predictions = client.post(f"/models/{vendor}/{model}/predictions",
                                  json={"input": {"prompt": "a lighthouse", "size": "1024x1024"}})
        replicate = client.post(f"/v1/models/{vendor}/{model}/predictions",
                                json={"input": {"prompt": "a lighthouse", "size": "1024x1024"}},
                                headers={"Prefer": "wait=20"})
        if predictions.status_code == 201:  # an asynchronous model answers with a task to poll
            url, deadline = predictions.json()["output"][0]["polling_url"], time.monotonic() + 20
            while (predictions := client.get(url)).json()["status"] in ("starting", "pending", "running") \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
    assert openai_api.status_code == 200, openai_api.text
    assert Decimal(openai_api.headers["x-pixelgate-cost"]) > 0  # priced from the catalog, never refused
    assert predictions.status_code == 200 and predictions.json()["status"] == "succeeded", predictions.text
    assert replicate.status_code == 201 and replicate.json()["status"] == "succeeded", replicate.text
    assert Decimal(replicate.json()["metrics"]["cost"]) > 0


@pytest.mark.parametrize("vendor", ["ark", "dashscope"])
def test_emulators_shut_models_down_on_the_catalog_dates(vendor):
    """Each emulator refuses what the catalog says its vendor retired, from the same day; a model
    retired without a published date needs a date of the emulator's own."""
    emulator = importlib.import_module(f"pixelgate.simulators.{vendor}")
    retired = {e.id: e.shutdown for e in catalog().entries if e.vendor == vendor and (e.shutdown or e.retired)}
    aliases = {a: e.shutdown for e in catalog().entries for a in e.aliases if e.id in retired and a in emulator.MODELS}
    for model, day in {**retired, **aliases}.items():
        assert model in emulator.SHUTDOWN, model
        assert day is None or emulator.SHUTDOWN[model] == day, model
    assert set(emulator.SHUTDOWN) <= set(retired) | set(aliases)


def test_midjourney_v8_flags_reach_the_proxy_as_written(simulated):
    with simulated.http() as client:
        resp = client.post("/mj/submit/imagine", json={"prompt": "a red fox --v 8.1 --hd --ar 16:9 --s 750"})
    assert resp.status_code == 200 and resp.json()["code"] == 1, resp.text


def test_a_retired_model_through_predictions_and_replicate(make_gateway, openai_today):
    state, base = openai_today
    gateway = _gateway(make_gateway, base, unpriced="free")
    with gateway.http() as client:
        sync = client.post("/models/openai/dall-e-3/predictions", json={"input": {"prompt": "x", "quality": "hd"}})
        replicate = client.post("/v1/models/openai/dall-e-3/predictions", json={"input": {"prompt": "x"}},
                                headers={"Prefer": "wait=20"})
    assert sync.status_code == 200 and sync.json()["model"] == "openai/dall-e-3", sync.text
    assert replicate.status_code == 201 and replicate.json()["status"] == "succeeded", replicate.text
    assert replicate.json()["model"] == "openai/dall-e-3"
    assert [r.fields["model"] for r in state.requests] == ["gpt-image-2.5-sunburst"] * 2
    assert state.requests[0].fields["quality"] == "high"


@pytest.mark.parametrize("size", ["256x256", "512x512"])
def test_a_retired_model_answers_in_the_size_the_client_asked_for(make_gateway, openai_today, size):
    """dall-e-2's small squares are made by its successor at 1024x1024 (its smallest square) and
    delivered scaled to what the client asked, at dall-e-2's price."""
    state, base = openai_today
    gateway = _gateway(make_gateway, base, currency="CNY")
    with gateway.http() as client:
        made = client.post(GEN, json={"model": "dall-e-2", "prompt": "x", "size": size, "response_format": "b64_json"})
        linked = client.post(GEN, json={"model": "dall-e-2", "prompt": "x", "size": size})
        assert made.status_code == 200 and linked.status_code == 200, made.text
        fetched = client.get(linked.json()["data"][0]["url"]).content
    side = int(size.split("x")[0])
    for data in (base64.b64decode(made.json()["data"][0]["b64_json"]), fetched):
        assert Image.open(io.BytesIO(data)).size == (side, side)
    assert made.json().get("size", size) == size
    assert [r.fields.get("size") for r in state.requests] == ["1024x1024", "1024x1024"]
    assert made.headers["x-pixelgate-cost"] == "0.14"  # dall-e-2's price, for every size


@pytest.mark.parametrize("size", ["7x7", "32x32", "1000x1000"])
def test_an_exact_size_a_model_cannot_make_is_refused_on_the_openai_api(make_gateway, openai_today, size):
    """WIDTHxHEIGHT is pixels, however small (only Ideogram's 15 ratios such as 16x9 are ratios):
    gpt-image-2 makes multiples of 16 of at least 655,360 pixels, so 7x7 is refused naming size,
    not read as a 1:1 ratio."""
    state, base = openai_today
    gateway = make_gateway(channels=[openai_channel(base, models=["gpt-image-2"])])
    with gateway.http() as client:
        resp = client.post(GEN, json={"model": "gpt-image-2", "prompt": "x", "size": size})
        ratio = client.post("/models/openai/gpt-image-2/predictions", json={"input": {"prompt": "x", "size": "16:9"}})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "size"
    assert ratio.status_code in (200, 201), ratio.text  # a ratio is still a ratio, made concrete
    assert len(state.requests) == 1 and state.requests[0].fields["size"] == "1360x768"
