"""Gemini's own API (pixelgate/surfaces/gemini.py) with the real google-genai client pointed at the
gateway by base_url: the sandbox, and simulated vendors behind it (FLUX through the BFL emulator,
gpt-image through OpenAI's, Gemini itself through Google's)."""

from __future__ import annotations

import base64
import io
import time
from decimal import Decimal

import httpx
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from pixelgate.simulators.bfl import BFLEmulatorState, create_app as create_bfl
from pixelgate.simulators.google import GoogleEmulatorState, create_app as create_google
from pixelgate.simulators.openai_images import OpenAIEmulatorState, create_app as create_openai
from tests.conftest import ADMIN_KEY, LEGACY_DAY, openai_channel, png
from tests.emulators.server import emulated

GEN = "/v1beta/models/{}:generateContent"


def client(gateway, key: str = ADMIN_KEY, version: str | None = None) -> genai.Client:
    """Keep the client in a variable: once collected, it closes its connections under `.models`."""
    options = types.HttpOptions(base_url=gateway.base_url, **({"api_version": version} if version else {}))
    return genai.Client(api_key=key, http_options=options)


def images(response) -> list[Image.Image]:
    return [Image.open(io.BytesIO(part.inline_data.data))
            for candidate in response.candidates for part in candidate.content.parts if part.inline_data]


def ratio(img: Image.Image) -> float:
    return img.width / img.height


@pytest.fixture(scope="module")
def vendors(make_module_gateway):
    """One gateway with the sandbox and three simulated vendors: (gateway, google, bfl, openai)."""
    with emulated(create_google, GoogleEmulatorState(today=LEGACY_DAY), "/v1beta") as (google, google_base), \
            emulated(create_bfl, BFLEmulatorState(), "/v1") as (bfl, bfl_base), \
            emulated(create_openai, OpenAIEmulatorState(today=LEGACY_DAY), "/v1") as (openai, openai_base):
        gateway = make_module_gateway(channels=[
            {"name": "google", "provider": "google", "base_url": google_base, "api_key": google.api_key,
             "models": ["gemini-2.5-flash-image", "gemini-3-pro-image-preview"]},
            {"name": "bfl", "provider": "bfl", "base_url": bfl_base, "api_key": bfl.api_key, "models": ["flux-2-pro"]},
            openai_channel(openai_base)], fetch_allow_hosts=["127.0.0.1"])
        yield gateway, google, bfl, openai


def test_sdk_generates_at_the_aspect_ratio_asked_for(vendors):
    gateway = vendors[0]
    sdk = client(gateway)
    response = sdk.models.generate_content(
        model="sandbox-image", contents="a fox",
        config=types.GenerateContentConfig(response_modalities=["IMAGE"],
                                           image_config=types.ImageConfig(aspect_ratio="16:9")))
    (candidate,) = response.candidates
    assert candidate.finish_reason == types.FinishReason.STOP and candidate.content.role == "model"
    assert candidate.content.parts[0].inline_data.mime_type == "image/png"
    (img,) = images(response)
    assert ratio(img) == pytest.approx(16 / 9, rel=0.02)
    assert response.model_version == "sandbox-image"
    row = gateway.log_row(response.response_id)
    assert row["surface"] == "gemini" and row["status"] == 200 and row["images_delivered"] == 1


def test_sdk_streams_the_image_as_one_event_and_the_array_form_without_alt_sse(vendors):
    gateway = vendors[0]
    sdk = client(gateway, version="v1beta")
    chunks = list(sdk.models.generate_content_stream(
        model="sandbox-image", contents="a fox",
        config=types.GenerateContentConfig(image_config=types.ImageConfig(aspect_ratio="9:16"))))
    assert len(chunks) == 1 and ratio(images(chunks[0])[0]) == pytest.approx(9 / 16, rel=0.02)
    with gateway.http(headers={"x-goog-api-key": ADMIN_KEY}) as http:
        sse = http.post(GEN.format("sandbox-image").replace("generateContent", "streamGenerateContent") + "?alt=sse",
                        json={"contents": [{"parts": [{"text": "a fox"}]}]})
        assert sse.headers["content-type"].startswith("text/event-stream")
        assert sse.text.startswith("data: {") and sse.text.endswith("\r\n\r\n")
        array = http.post(GEN.format("sandbox-image").replace("generateContent", "streamGenerateContent"),
                          json={"contents": [{"parts": [{"text": "a fox"}]}]})
    assert array.status_code == 200 and array.json()[0]["candidates"][0]["finishReason"] == "STOP"


def test_an_image_part_makes_an_edit_and_candidate_count_makes_several(vendors):
    gateway = vendors[0]
    sdk = client(gateway)
    response = sdk.models.generate_content(
        model="sandbox-image",
        contents=[types.Part.from_bytes(data=png(96, 64), mime_type="image/png"), "paint it blue"],
        config=types.GenerateContentConfig(candidate_count=2, seed=7))
    assert [c.index for c in response.candidates] == [0, 1] and len(images(response)) == 2
    row = gateway.log_row(response.response_id)
    assert row["operation"] == "edit" and row["images_requested"] == 2


def test_snake_case_bodies_and_both_image_config_fields(vendors):
    gateway = vendors[0]
    body = {"contents": [{"role": "user", "parts": [
                {"text": "a cat"}, {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(png(64, 64)).decode()}}]}],
            "generation_config": {"response_modalities": ["TEXT", "IMAGE"], "temperature": 0.4,
                                  "image_config": {"aspect_ratio": "3:2", "image_size": "1K"}}}
    with gateway.http(key=None) as http:
        resp = http.post(GEN.format("sandbox-image"), params={"key": ADMIN_KEY}, json=body)
    assert resp.status_code == 200, resp.text
    data = resp.json()["candidates"][0]["content"]["parts"][-1]["inlineData"]
    img = Image.open(io.BytesIO(base64.b64decode(data["data"])))
    assert (img.width, img.height) == (1248, 832)  # 3:2 at about a megapixel, in 16s
    assert gateway.log_row(resp.json()["responseId"])["operation"] == "edit"


@pytest.mark.long(6)
def test_file_data_parts_are_fetched_under_the_fetchers_guard(vendors):
    gateway = vendors[0]
    with gateway.http() as http:
        url = http.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "a fox", "size": "96x64",
                                                        "response_format": "url"}).json()["data"][0]["url"]
    with gateway.http(headers={"x-goog-api-key": ADMIN_KEY}) as http:
        def edit(uri: str) -> httpx.Response:
            return http.post(GEN.format("sandbox-image"), json={"contents": [{"parts": [
                {"text": "paint it blue"}, {"fileData": {"mimeType": "image/png", "fileUri": uri}}]}]})
        made = edit(url)
        assert made.status_code == 200, made.text
        assert gateway.log_row(made.json()["responseId"])["operation"] == "edit"
        for uri in ("http://10.1.2.3/fox.png", "gs://bucket/fox.png"):
            refused = edit(uri).json()["error"]
            assert refused["code"] == 400 and "contents[0].parts[1].fileData.fileUri" in refused["message"], refused


def test_multi_turn_edits_the_image_the_model_answered_last(vendors):
    gateway, google = vendors[0], vendors[1]
    google.requests.clear()
    earlier = base64.b64encode(png(96, 48)).decode()
    contents = [{"role": "user", "parts": [{"text": "a red square"}]},
                {"role": "model", "parts": [{"text": "Here it is."},
                                            {"inlineData": {"mimeType": "image/png", "data": earlier}}]},
                {"role": "user", "parts": [{"text": "now make it blue"}]}]
    with gateway.http(headers={"x-goog-api-key": ADMIN_KEY}) as http:
        resp = http.post(GEN.format("gemini-2.5-flash-image"), json={"contents": contents})
    assert resp.status_code == 200, resp.text
    (sent,) = google.requests
    parts = sent.body["contents"][-1]["parts"]
    assert parts[0] == {"text": "now make it blue"}
    assert parts[1]["inlineData"]["data"]["width"] == 96 and parts[1]["inlineData"]["data"]["height"] == 48


def test_gemini_through_the_google_provider_keeps_its_ratio_and_token_usage(vendors):
    gateway, google = vendors[0], vendors[1]
    google.requests.clear()
    sdk = client(gateway)
    response = sdk.models.generate_content(
        model="gemini-3-pro-image-preview", contents="a lighthouse",
        config=types.GenerateContentConfig(image_config=types.ImageConfig(aspect_ratio="21:9", image_size="2K")))
    sent = google.requests[-1].body["generationConfig"]["imageConfig"]
    assert sent == {"aspectRatio": "21:9", "imageSize": "2K"}
    assert response.usage_metadata.candidates_token_count > 0 and response.usage_metadata.total_token_count > 0


def test_reaches_flux_and_gpt_image_through_their_vendors(vendors):
    gateway, _, bfl, openai = vendors
    sdk = client(gateway)
    flux = sdk.models.generate_content(model="flux-2-pro", contents="a fox in snow",
                                       config=types.GenerateContentConfig(
                                           image_config=types.ImageConfig(aspect_ratio="4:3")))
    assert ratio(images(flux)[0]) == pytest.approx(4 / 3, rel=0.05)
    assert any(r.path == "/v1/flux-2-pro" for r in bfl.requests)
    gpt = sdk.models.generate_content(model="gpt-image-1", contents="a fox in snow")
    assert images(gpt) and openai.requests[-1].fields["model"] == "gpt-image-1"
    assert gpt.usage_metadata.candidates_token_count > 0  # OpenAI's usage, in Gemini's words


@pytest.mark.long(6)
def test_a_vendor_refusal_is_a_candidate_with_image_safety_and_costs_nothing(vendors):
    gateway = vendors[0]
    gateway.set_price("gemini-2.5-flash-image", "0.04")
    account_id, key = gateway.paying_key("1")
    sdk = client(gateway, key)
    response = sdk.models.generate_content(model="gemini-2.5-flash-image",
                                                             contents="something forbidden")
    (candidate,) = response.candidates
    assert candidate.finish_reason == types.FinishReason.IMAGE_SAFETY and not candidate.content.parts
    with gateway.http(key=None, headers={"x-goog-api-key": key}) as http:  # the SDK drops finishMessage
        raw = http.post(GEN.format("gemini-2.5-flash-image"),
                        json={"contents": [{"parts": [{"text": "something forbidden"}]}]}).json()
    assert "blocked the prompt" in raw["candidates"][0]["finishMessage"]
    row = gateway.log_row(response.response_id)
    assert row["error_code"] == "content_policy_violation" and Decimal(row["cost"] or 0) == 0
    account = gateway.http().get(f"/admin/accounts/{account_id}").json()
    assert Decimal(account["balance"]) == 1 and Decimal(account["reserved"]) == 0


@pytest.mark.parametrize("config, field, fragment", [
    ({"responseModalities": ["TEXT"]}, "generationConfig.responseModalities", "must include IMAGE"),
    ({"imageConfig": {"aspectRatio": "7:3"}}, "generationConfig.imageConfig.aspectRatio", "1:1"),
    ({"imageConfig": {"imageSize": "2k"}}, "generationConfig.imageConfig.imageSize", "upper-case"),
    ({"candidateCount": 50}, "generationConfig.candidateCount", "candidateCount"),
    ({"seed": "x"}, "generationConfig.seed", "TYPE_INT32"),
    ({"topQ": 1}, "generationConfig.topQ", "Unknown name"),
])
def test_invalid_fields_are_400s_in_googles_shape_naming_the_field(vendors, config, field, fragment):
    gateway = vendors[0]
    with gateway.http(headers={"x-goog-api-key": ADMIN_KEY}) as http:
        resp = http.post(GEN.format("sandbox-image"), json={"contents": [{"parts": [{"text": "a fox"}]}],
                                                            "generationConfig": config})
    err = resp.json()["error"]
    assert resp.status_code == 400 and err["code"] == 400 and err["status"] == "INVALID_ARGUMENT", err
    assert fragment in err["message"] and field in err["message"]
    violations = next(d for d in err["details"] if d["@type"].endswith("BadRequest"))["fieldViolations"]
    assert violations[0]["field"] == field


def test_sdk_raises_client_errors_with_googles_status(vendors):
    gateway = vendors[0]
    limited = gateway.create_key(allowed_models=["sandbox-image"])
    cases = [(client(gateway, "pg-not-a-key"), "sandbox-image", 401, "UNAUTHENTICATED"),
             (client(gateway, limited), "flux-2-pro", 403, "PERMISSION_DENIED"),
             (client(gateway), "no-such-model", 404, "NOT_FOUND")]
    for sdk, model, code, status in cases:
        with pytest.raises(errors.ClientError) as caught:
            sdk.models.generate_content(model=model, contents="a fox")
        assert caught.value.code == code and caught.value.status == status, caught.value
    bad = [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "not base64!"}}, {"text": "x"}]}]
    with gateway.http(headers={"x-goog-api-key": ADMIN_KEY}) as http:
        resp = http.post(GEN.format("sandbox-image"), json={"contents": bad})
        assert resp.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert "contents[0].parts[0].inlineData.data" in resp.json()["error"]["message"]
        tools = http.post(GEN.format("sandbox-image"), json={"contents": [{"parts": [{"text": "x"}]}], "tools": []})
        assert tools.status_code == 400 and "tools" in tools.json()["error"]["message"]
    with httpx.Client(base_url=gateway.base_url) as anonymous:
        missing = anonymous.post(GEN.format("sandbox-image"), json={"contents": []})
        # ?key= is Gemini's alone: no other API invites a key into its URLs
        openai = anonymous.post("/v1/images/generations", params={"key": ADMIN_KEY},
                                json={"model": "sandbox-image", "prompt": "a fox"})
    assert missing.status_code == 401 and missing.json()["error"]["status"] == "UNAUTHENTICATED"
    assert "'x-goog-api-key: <key>' or '?key=<key>'" in missing.json()["error"]["message"]
    assert openai.status_code == 401 and openai.json()["error"]["code"] == "missing_api_key"


@pytest.mark.long(10)
def test_a_paying_key_is_charged_once_and_told_the_cost(make_gateway):
    gateway = make_gateway()
    gateway.set_price("sandbox-image", "0.25")
    account_id, key = gateway.paying_key("10")
    sdk = client(gateway, key)
    response = sdk.models.generate_content(
        model="sandbox-image", contents="a fox",
        config=types.GenerateContentConfig(candidate_count=2))
    assert len(images(response)) == 2
    assert response.sdk_http_response.headers["x-pixelgate-cost"] == "0.5"
    account = gateway.http().get(f"/admin/accounts/{account_id}").json()
    assert Decimal(account["balance"]) == Decimal("9.5") and Decimal(account["reserved"]) == 0
    # an Idempotency-Key repeat answers the first images and charges nothing more
    with gateway.http(key=None, headers={"x-goog-api-key": key, "Idempotency-Key": "fox-1"}) as http:
        body = {"contents": [{"parts": [{"text": "a fox"}]}]}
        first, again = http.post(GEN.format("sandbox-image"), json=body), http.post(GEN.format("sandbox-image"), json=body)
    assert first.status_code == again.status_code == 200, first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json()["responseId"] == again.json()["responseId"]
    assert first.json()["candidates"][0]["content"] == again.json()["candidates"][0]["content"]
    account = gateway.http().get(f"/admin/accounts/{account_id}").json()
    assert Decimal(account["balance"]) == Decimal("9.25")


def test_respond_async_answers_an_operation_to_poll(vendors):
    gateway = vendors[0]
    with gateway.http(headers={"x-goog-api-key": ADMIN_KEY, "Prefer": "respond-async"}) as http:
        started = http.post(GEN.format("sandbox-async"), json={"contents": [{"parts": [{"text": "a fox"}]}]})
        assert started.status_code == 202, started.text
        name = started.json()["name"]
        assert name.startswith("operations/") and started.json()["done"] is False
        deadline = time.monotonic() + 30
        while not (op := http.get(f"/v1beta/{name}").json())["done"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert op["done"] and op["response"]["candidates"][0]["content"]["parts"][0]["inlineData"]["data"]
        assert http.get("/v1beta/operations/no-such-task").json()["error"]["status"] == "NOT_FOUND"


def test_models_are_listed_in_googles_shape_on_v1_and_v1beta_and_openais_list_stays(vendors):
    gateway = vendors[0]
    for version in ("v1", "v1beta"):
        sdk = client(gateway, version=version)
        names = [m.name for m in sdk.models.list(config={"page_size": 3})]
        assert {"models/sandbox-image", "models/flux-2-pro", "models/gemini-2.5-flash-image"} <= set(names)
        assert len(names) == len(set(names)) > 3  # every page, each model once
        model = sdk.models.get(model="flux-2-pro")
        assert model.name == "models/flux-2-pro" and model.supported_actions == ["generateContent"]
        with pytest.raises(errors.ClientError) as caught:
            sdk.models.get(model="no-such-model")
        assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
    with gateway.http() as http:  # a Bearer client is OpenAI's
        assert http.get("/v1/models").json()["object"] == "list"
