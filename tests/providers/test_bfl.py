"""Black Forest Labs (FLUX) through the gateway, end to end against the strict emulator:
submit, poll the exact polling URL, every final status, sizes, options, edits and masks."""

from __future__ import annotations

import base64
import io
from decimal import Decimal

import httpx
import pytest
from PIL import Image

from pixelgate.domain.images import read_image
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.domain.result import Finished, Pending, Submitted
from pixelgate.errors import (UpstreamBadResponse, UpstreamContentFiltered, UpstreamError,
                              UpstreamRejected, UpstreamUnavailable)
from pixelgate.providers.base import Channel, UpstreamReply
from pixelgate.providers.bfl import BlackForestLabs
from tests.conftest import mask_png, openai_error, png
from pixelgate.simulators.bfl import BFLEmulatorState, create_app
from tests.emulators.server import emulated, serve

GEN, EDIT = "/v1/images/generations", "/v1/images/edits"
MODELS = list(BlackForestLabs.models)
DEER = ("A deer drinking in the lake, Sakura petals falling, green and clean water, japanese temple, "
        "dappled sunlight, cinematic lighting, expansive view, peace. reference style as the given image:")


def bfl_channel(base: str, name: str = "bfl", **fields) -> dict:
    return {"name": name, "provider": "bfl", "base_url": base, "api_key": "bfl-emulator-key",
            "models": MODELS, **fields}


@pytest.fixture
def upstream():
    with emulated(create_app, BFLEmulatorState(), "/v1") as up:
        yield up


@pytest.fixture
def gw(make_gateway, upstream):
    state, base = upstream
    return make_gateway(channels=[bfl_channel(base)]), state


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def _post(gateway, body: dict, path: str = GEN, **kwargs) -> httpx.Response:
    with gateway.http() as client:
        if path == EDIT:
            return client.post(path, data=body, **kwargs)
        return client.post(path, json=body, **kwargs)


def _ok(gateway, body: dict, path: str = GEN, **kwargs) -> list[Image.Image]:
    resp = _post(gateway, {"response_format": "b64_json", **body}, path, **kwargs)
    assert resp.status_code == 200, resp.text
    return [_image(base64.b64decode(item["b64_json"])) for item in resp.json()["data"]]


# -- the catalog --

# model -> (upstream endpoint, size made with no size asked: the documented 16:9 default)
GENERATE = {
    "flux-2-pro": ("flux-2-pro", (1360, 768)), "flux-2-max": ("flux-2-max", (1360, 768)),
    "flux-2-flex": ("flux-2-flex", (1360, 768)), "flux-2-klein-4b": ("flux-2-klein-4b", (1360, 768)),
    "flux-2-klein-9b": ("flux-2-klein-9b", (1360, 768)),
    "flux-kontext-pro": ("flux-kontext-pro", (1376, 768)), "FLUX.1-Kontext-pro": ("flux-kontext-pro", (1376, 768)),
    "flux-kontext-max": ("flux-kontext-max", (1376, 768)), "FLUX.1-Kontext-max": ("flux-kontext-max", (1376, 768)),
    "flux-pro-1.1": ("flux-pro-1.1", (1376, 768)),
    "flux-dev": ("flux-dev", (1376, 768)), "flux-pro-1.1-ultra": ("flux-pro-1.1-ultra", (2720, 1536)),
    "flux-3-image": ("flux-3-image", (1360, 768)),  # auto: the emulator's 16:9 at 1k
}


def test_catalog_is_what_the_tests_cover():
    assert set(MODELS) == set(GENERATE) | {"flux-pro-1.0-fill"}
    for model, caps in BlackForestLabs.models.items():
        assert caps.max_n == 10 and caps.n_per_call == 1 and caps.sizes is None and caps.fit_size


def test_every_model_submits_polls_and_delivers(gw):
    gateway, state = gw
    state.pending_seconds = 0.05
    for model, (endpoint, size) in GENERATE.items():
        before = len(state.requests)
        (img,) = _ok(gateway, {"model": model, "prompt": "a red fox"})
        assert img.size == size, model
        calls = state.requests[before:]
        submit, polls = calls[0], [c for c in calls if c.path == "/v1/get_result"]
        assert (submit.method, submit.path) == ("POST", f"/v1/{endpoint}")
        assert submit.headers["x-key"] == "bfl-emulator-key"
        assert submit.fields["safety_tolerance"] == 2 and submit.fields["prompt"] == "a red fox"
        assert polls and all(p.headers["x-key"] == "bfl-emulator-key" for p in polls)
        assert calls[-1].path.startswith("/results/")  # the gateway downloaded result.sample


def test_url_delivery_serves_the_stored_image(gw):
    gateway, _ = gw
    resp = _post(gateway, {"model": "flux-2-pro", "prompt": "a fox", "size": "1024x1024"})
    assert resp.status_code == 200, resp.text
    url = resp.json()["data"][0]["url"]
    assert url.startswith(gateway.base_url + "/files/")
    assert _image(httpx.get(url).content).size == (1024, 1024)


# -- the source document's examples --

def test_source_doc_one_step_kontext_pro_example(gw):
    gateway, state = gw
    body = {"model": "FLUX.1-Kontext-pro", "prompt": "a cat in the garden, cute cartoon", "safety_tolerance": 6}
    resp = _post(gateway, body)
    assert resp.status_code == 200, resp.text
    # the document pipes .data[0].b64_json without asking for it: the model's default delivery
    assert base64.b64decode(resp.json()["data"][0]["b64_json"]).startswith(b"\x89PNG")
    sent = state.submits()[-1]
    assert sent.path == "/v1/flux-kontext-pro"
    assert sent.fields == {"prompt": "a cat in the garden, cute cartoon", "aspect_ratio": "16:9",
                           "safety_tolerance": 6}
    (img,) = _ok(gateway, body)  # the document pipes data[0].b64_json
    assert img.format == "PNG" and img.size == (1376, 768)


def test_source_doc_async_kontext_max_example(gw):
    gateway, state = gw
    (img,) = _ok(gateway, {"model": "flux-kontext-max", "prompt": DEER, "aspect_ratio": "2:3",
                           "safety_tolerance": 6})
    sent = state.submits()[-1]
    assert sent.path == "/v1/flux-kontext-max"
    assert sent.fields["aspect_ratio"] == "2:3" and sent.fields["safety_tolerance"] == 6
    assert img.size == (832, 1248)


def test_source_doc_flux_fields_on_flux2(gw):
    gateway, state = gw
    (img,) = _ok(gateway, {"model": "flux-2-pro", "prompt": "a deer", "safety_tolerance": 6, "seed": 42,
                           "aspect_ratio": "4:3", "raw": True, "quality": "high"})
    sent = state.submits()[-1].fields
    # FLUX.2 stops at 5; raw (Ultra only) and quality (nothing upstream) are accepted and left out
    assert sent == {"prompt": "a deer", "seed": 42, "width": 1184, "height": 880, "safety_tolerance": 5}
    assert img.size == (1184, 880)


def test_raw_reaches_ultra(gw):
    gateway, state = gw
    _ok(gateway, {"model": "flux-pro-1.1-ultra", "prompt": "a deer", "raw": True, "size": "1:1"})
    sent = state.submits()[-1].fields
    assert sent["raw"] is True and sent["aspect_ratio"] == "1:1"
    _ok(gateway, {"model": "flux-pro-1.1-ultra", "prompt": "a deer"})
    assert state.submits()[-1].fields["raw"] is False  # the documented default, sent explicitly


# -- sizes --

SIZES = [
    ("flux-2-pro", "1024x768", {"width": 1024, "height": 768}),
    ("flux-2-pro", "1000x700", {"width": 992, "height": 704}),  # onto the 16-pixel grid
    ("flux-2-pro", "16:9", {"width": 1360, "height": 768}),
    ("flux-2-pro", "1K", {"width": 1360, "height": 768}),  # a tier at the default 16:9
    ("flux-2-pro", "2K", {"width": 2720, "height": 1536}),
    ("flux-2-pro", "4K", {"width": 2720, "height": 1536}),  # nearest within 4 MP
    ("flux-2-pro", "4096x4096", {"width": 2048, "height": 2048}),
    ("flux-2-flex", "ASPECT_9_16", {"width": 768, "height": 1360}),
    ("flux-kontext-pro", "1024x1024", {"aspect_ratio": "1:1"}),
    ("flux-kontext-pro", "1792x1024", {"aspect_ratio": "7:4"}),
    ("flux-kontext-pro", "16x9", {"aspect_ratio": "16:9"}),
    ("flux-kontext-pro", "3:1", {"aspect_ratio": "21:9"}),  # nearest allowed ratio
    ("flux-kontext-max", "2K", {"aspect_ratio": "16:9"}),
    ("flux-pro-1.1", "2048x2048", {"width": 1440, "height": 1440}),
    ("flux-dev", "1024*1024", {"width": 1024, "height": 1024}),
    ("flux-pro-1.1-ultra", "9:16", {"aspect_ratio": "9:16"}),
]


def test_sizes_are_translated_into_each_models_vocabulary(gw):
    gateway, state = gw
    state.pending_seconds = 0.02
    for model, size, expected in SIZES:
        _ok(gateway, {"model": model, "prompt": "a fox", "size": size})
        sent = state.submits()[-1].fields
        assert {k: sent.get(k) for k in expected} == expected, (model, size, sent)
        assert not {"width", "height", "aspect_ratio"} - set(expected) & set(sent), (model, size, sent)


def test_aspect_ratio_field_shapes_the_size_tier(gw):
    gateway, state = gw
    (img,) = _ok(gateway, {"model": "flux-2-pro", "prompt": "a fox", "size": "2K", "aspect_ratio": "1:1"})
    assert state.submits()[-1].fields["width"] == 2048 and img.size == (2048, 2048)


@pytest.mark.parametrize("model,size", [("flux-kontext-pro", "4:1"), ("flux-2-pro", "8192x16"),
                                        ("flux-pro-1.1", "3000x100"), ("flux-2-pro", "big")])
def test_impossible_size_is_refused_before_any_upstream_call(gw, model, size):
    gateway, state = gw
    err = openai_error(_post(gateway, {"model": model, "prompt": "a fox", "size": size}), 400, param="size")
    assert size in err["message"]
    assert state.requests == []


def test_impossible_aspect_ratio_is_refused_before_any_upstream_call(gw):
    gateway, state = gw
    resp = _post(gateway, {"model": "flux-kontext-max", "prompt": "a fox", "aspect_ratio": "5:1"})
    openai_error(resp, 400, param="aspect_ratio")
    assert state.requests == []


# -- n, options --

def test_n_fans_out_one_job_per_image(gw):
    gateway, state = gw
    images = _ok(gateway, {"model": "flux-2-pro", "prompt": "a fox", "n": 3, "seed": 7, "size": "512x512"})
    assert len(images) == 3 and all(img.size == (512, 512) for img in images)
    assert sorted(r.fields["seed"] for r in state.submits()) == [7, 8, 9]
    assert len({img.tobytes() for img in images}) == 3


@pytest.mark.parametrize("extra,param,code", [
    ({"foo": 1}, "foo", "unknown_parameter"),
    ({"safety_tolerance": 7}, "safety_tolerance", None),
    ({"safety_tolerance": -1}, "safety_tolerance", None),
    ({"steps": 20}, "steps", "unknown_parameter"),  # flex and dev only
    ({"aspect_ratio": "wide"}, "aspect_ratio", None),
    ({"raw": "very"}, "raw", None),
    ({"quality": "ultra"}, "quality", None),
    ({"webhook_url": "https://example.com/hook"}, "webhook_url", "unknown_parameter"),  # we poll
    ({"n": 11}, "n", None),
    ({"background": "transparent"}, "background", None),
])
def test_invalid_options_are_refused_before_any_upstream_call(gw, extra, param, code):
    gateway, state = gw
    openai_error(_post(gateway, {"model": "flux-2-pro", "prompt": "a fox", **extra}), 400, code=code, param=param)
    assert state.requests == []


def test_flex_steps_and_guidance_pass_through_within_their_ranges(gw):
    gateway, state = gw
    _ok(gateway, {"model": "flux-2-flex", "prompt": "a sign", "steps": 30, "guidance": 4.5,
                  "prompt_upsampling": False})
    sent = state.submits()[-1].fields
    assert (sent["steps"], sent["guidance"], sent["prompt_upsampling"]) == (30, 4.5, False)
    openai_error(_post(gateway, {"model": "flux-2-flex", "prompt": "a sign", "guidance": 11}), 400, param="guidance")
    openai_error(_post(gateway, {"model": "flux-dev", "prompt": "a sign", "guidance": 6}), 400, param="guidance")
    assert len(state.submits()) == 1


def test_output_format_jpeg_is_asked_and_webp_converted(gw):
    gateway, state = gw
    (img,) = _ok(gateway, {"model": "flux-kontext-pro", "prompt": "a fox", "output_format": "jpeg"})
    assert state.submits()[-1].fields["output_format"] == "jpeg" and img.format == "JPEG"
    (img,) = _ok(gateway, {"model": "flux-2-pro", "prompt": "a fox", "output_format": "webp"})
    assert state.submits()[-1].fields["output_format"] == "png" and img.format == "WEBP"


# -- edits --

def _jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 10)).save(out, "JPEG")
    return out.getvalue()


def test_edit_sends_every_input_image_as_bare_base64(gw):
    gateway, state = gw
    files = [("image[]", ("a.png", png(96, 64), "image/png")), ("image[]", ("b.jpg", _jpeg(64, 64), "image/jpeg"))]
    (img,) = _ok(gateway, {"model": "flux-2-pro", "prompt": "put b into a"}, EDIT, files=files)
    sent = state.submits()[-1]
    assert sent.path == "/v1/flux-2-pro"
    assert sent.fields["input_image"]["width"] == 96 and sent.fields["input_image_2"]["format"] == "JPEG"
    assert "width" not in sent.fields  # no size asked: the model keeps the input's
    assert img.size == (96, 64)


def test_edit_with_a_size_tier_keeps_the_input_shape(gw):
    gateway, state = gw
    files = [("image", ("a.png", png(96, 64), "image/png"))]
    _ok(gateway, {"model": "flux-2-max", "prompt": "sharper", "size": "1K"}, EDIT, files=files)
    sent = state.submits()[-1].fields
    assert (sent["width"], sent["height"]) == (1248, 832)


def test_kontext_edit_lowers_safety_tolerance_to_its_edit_maximum(gw):
    gateway, state = gw
    files = [("image", ("a.png", png(120, 60), "image/png"))]
    (img,) = _ok(gateway, {"model": "flux-kontext-pro", "prompt": "make it blue", "safety_tolerance": 5},
                 EDIT, files=files)
    sent = state.submits()[-1].fields
    assert sent["safety_tolerance"] == 2 and "aspect_ratio" not in sent
    assert abs(img.width / img.height - 2) < 0.1


def test_too_many_input_images_are_refused(gw):
    gateway, state = gw
    files = [("image[]", (f"{i}.png", png(32, 32), "image/png")) for i in range(5)]
    openai_error(_post(gateway, {"model": "flux-kontext-max", "prompt": "merge"}, EDIT, files=files),
                 400, param="image")
    assert state.requests == []


def test_mask_edit_goes_to_fill_with_a_white_means_edit_mask(gw):
    gateway, state = gw
    files = [("image", ("a.png", png(64, 64), "image/png")), ("mask", ("m.png", mask_png(64, 64), "image/png"))]
    (img,) = _ok(gateway, {"model": "flux-2-pro", "prompt": "a hat", "safety_tolerance": 6}, EDIT, files=files)
    sent = state.submits()[-1]
    assert sent.path == "/v1/flux-pro-1.0-fill"
    assert set(sent.fields) == {"prompt", "image", "mask", "safety_tolerance"}
    mask = sent.images["mask"].convert("L")
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((60, 5)) == 0  # left half transparent = edit
    assert img.size == (64, 64)


def test_fill_model_uses_transparency_without_a_mask(gw):
    gateway, state = gw
    openai_error(_post(gateway, {"model": "flux-pro-1.0-fill", "prompt": "sky"}, EDIT,
                       files=[("image", ("a.png", png(64, 64), "image/png"))]), 400, param="image")
    assert state.requests == []
    _ok(gateway, {"model": "flux-pro-1.0-fill", "steps": 20, "guidance": 60}, EDIT,
        files=[("image", ("a.png", png(64, 64, alpha=True), "image/png"))])
    sent = state.submits()[-1].fields
    assert "mask" not in sent and (sent["steps"], sent["guidance"]) == (20, 60)


def test_mask_edit_with_several_images_is_refused(gw):
    gateway, state = gw
    files = [("image[]", ("a.png", png(64, 64), "image/png")), ("image[]", ("b.png", png(64, 64), "image/png")),
             ("mask", ("m.png", mask_png(64, 64), "image/png"))]
    openai_error(_post(gateway, {"model": "flux-2-pro", "prompt": "x"}, EDIT, files=files), 400, param="image")
    assert state.requests == []


def test_generate_only_models_refuse_edits(gw):
    gateway, state = gw
    resp = _post(gateway, {"model": "flux-pro-1.1", "prompt": "x"}, EDIT,
                 files=[("image", ("a.png", png(64, 64), "image/png"))])
    openai_error(resp, 400, param="model")
    assert state.requests == []


# -- the asynchronous flow --

def test_polls_the_exact_polling_url_until_ready(gw):
    gateway, state = gw
    state.pending_seconds = 1.0  # polled several times however loaded the machine is
    state.polling_path = "/us1/v1/get_result"  # another cluster: never rebuilt from the id
    _ok(gateway, {"model": "flux-2-pro", "prompt": "a fox"})
    polls = state.polls()
    job = state.tasks.popitem()[1].id
    assert len(polls) >= 3 and all(p.path == "/us1/v1/get_result" and p.query == f"id={job}" for p in polls)


def test_polling_url_on_a_foreign_host_never_gets_the_key(gw):
    gateway, state = gw
    elsewhere = BFLEmulatorState()
    with serve(create_app(elsewhere)) as other:
        state.polling_base = other
        err = openai_error(_post(gateway, {"model": "flux-2-pro", "prompt": "a fox"}),
                           502, code="upstream_bad_response")
    assert "polling URL" in err["message"]
    assert elsewhere.requests == [] and len(state.submits()) == 1


@pytest.mark.parametrize("status,http,code", [
    ("Error", 502, "upstream_job_failed"), ("Task not found", 502, "upstream_job_failed"),
    ("Content Moderated", 400, "content_policy_violation"), ("Request Moderated", 400, "content_policy_violation"),
])
def test_failed_jobs_are_not_retried_elsewhere(make_gateway, upstream, status, http, code):
    state, base = upstream
    second = BFLEmulatorState()
    with serve(create_app(second)) as other:
        gateway = make_gateway(channels=[bfl_channel(base, "first", priority=10), bfl_channel(other + "/v1", "second")])
        state.finish_next(status, details={"Moderation Reasons": ["NSFW"]} if "Moderated" in status else None)
        resp = _post(gateway, {"model": "flux-2-pro", "prompt": "a fox"})
    err = openai_error(resp, http, code=code)
    if "Moderated" in status:
        assert "NSFW" in err["message"]
    assert second.requests == []  # the job was accepted: another channel would bill again


def test_moderated_prompt_is_a_content_policy_violation(gw):
    gateway, state = gw
    openai_error(_post(gateway, {"model": "flux-kontext-max", "prompt": "something forbidden"}),
                 400, code="content_policy_violation")
    assert len(state.submits()) == 1


def test_a_poll_hiccup_keeps_waiting(gw):
    gateway, state = gw
    state.fail_next(503, on="poll", count=2)
    assert len(_ok(gateway, {"model": "flux-2-pro", "prompt": "a fox"})) == 1
    assert not state.failures["poll"]


def test_a_job_that_never_finishes_times_out(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[bfl_channel(base)], async_wait_seconds=0.4)
    state.pending_seconds = 30
    openai_error(_post(gateway, {"model": "flux-2-pro", "prompt": "a fox"}), 504, code="job_deadline_exceeded")


# -- upstream errors --

@pytest.mark.parametrize("status,code", [(500, "upstream_unavailable"), (503, "upstream_unavailable"),
                                         (429, "upstream_rate_limited"), (402, "upstream_insufficient_credits")])
def test_refusals_before_a_job_fail_over(make_gateway, upstream, status, code):
    state, base = upstream
    second = BFLEmulatorState()
    with serve(create_app(second)) as other:
        gateway = make_gateway(channels=[bfl_channel(base, "first", priority=10), bfl_channel(other + "/v1", "second")])
        state.fail_next(status)
        resp = _post(gateway, {"model": "flux-2-pro", "prompt": "a fox", "response_format": "b64_json"})
        assert resp.status_code == 200, resp.text
        row = gateway.log_row(resp.headers["x-request-id"])
        assert [a["channel"] for a in row["attempts"]] == ["first", "second"]
        assert row["attempts"][0]["error"] == code
        state.fail_next(status)
        second.fail_next(status)
        resp = _post(gateway, {"model": "flux-2-pro", "prompt": "a fox"})
    assert resp.status_code == (429 if status == 429 else 502)


def test_bad_channel_key_fails_over(make_gateway, upstream):
    state, base = upstream
    gateway = make_gateway(channels=[bfl_channel(base, "wrong", priority=10, api_key="nope"), bfl_channel(base, "right")])
    resp = _post(gateway, {"model": "flux-2-pro", "prompt": "a fox"})
    assert resp.status_code == 200, resp.text
    row = gateway.log_row(resp.headers["x-request-id"])
    assert row["attempts"][0]["error"] == "upstream_auth_failed" and row["channel"] == "right"


def test_validation_error_names_the_clients_parameter(gw):
    gateway, state = gw
    state.fail_next(422, {"detail": [{"type": "multiple_of", "loc": ["body", "width"],
                                      "msg": "Input should be a multiple of 16", "input": 1000}]})
    err = openai_error(_post(gateway, {"model": "flux-2-pro", "prompt": "a fox"}),
                       400, code="upstream_rejected", param="size")
    assert "multiple of 16" in err["message"]


@pytest.mark.parametrize("body,http,code", [
    ({"detail": "Prompt could not be processed"}, 400, "upstream_rejected"),
    ({"id": "x", "status": "Request Moderated", "details": {"Moderation Reasons": ["Derivative Works Filter"]}},
     400, "content_policy_violation"),
    ({"status": "Error"}, 502, "upstream_job_failed"),
    ({"hello": "world"}, 502, "upstream_bad_response"),
])
def test_errors_inside_200_submit_replies(gw, body, http, code):
    gateway, state = gw
    state.fail_next(200, body)
    openai_error(_post(gateway, {"model": "flux-2-pro", "prompt": "a fox"}), http, code=code)


def test_unknown_poll_status_is_a_bad_response(gw):
    gateway, state = gw
    state.fail_next(200, {"id": "x", "status": "Exploded"}, on="poll")
    openai_error(_post(gateway, {"model": "flux-2-pro", "prompt": "a fox"}), 502, code="upstream_bad_response")


# -- the provider alone --

P = BlackForestLabs()


def _chan(base: str = "https://api.bfl.ai/v1") -> Channel:
    return Channel("c", "bfl", base, "k", ("flux-2-pro",), {})


def _reply(body, status: int = 200) -> UpstreamReply:
    return UpstreamReply(status, {}, payload=body)


def _req(**fields) -> ImageRequest:
    return ImageRequest(operation=Operation.GENERATE, model="flux-2-pro", prompt="a fox", **fields)


@pytest.mark.parametrize("url,trusted", [
    ("https://api.us1.bfl.ai/v1/get_result?id=1", True),
    ("https://api.bfl.ai/v1/get_result?id=1", True),
    ("https://bfl.ai.evil.example/v1/get_result?id=1", False),
    ("http://api.eu1.bfl.ai/v1/get_result?id=1", False),
    ("https://api.bfl.ai@evil.example/v1/get_result?id=1", False),
    ("https://user@api.eu1.bfl.ai/v1/get_result?id=1", False),
    ("https://evilbfl.ai/v1/get_result?id=1", False),
])
def test_polling_url_trust(url, trusted):
    job = Submitted("1", url)
    if trusted:
        call = P.build_poll(job, _chan())
        assert (call.method, call.url, call.headers) == ("GET", url, {"x-key": "k"})
    else:
        with pytest.raises(UpstreamBadResponse):
            P.build_poll(job, _chan())


def test_same_host_polling_and_missing_polling_url():
    chan = _chan("http://127.0.0.1:9000/v1")
    assert P.build_poll(Submitted("a", "http://127.0.0.1:9000/v1/get_result?id=a"), chan).url.endswith("id=a")
    with pytest.raises(UpstreamBadResponse):
        P.build_poll(Submitted("a", "http://127.0.0.1:9001/v1/get_result?id=a"), chan)
    assert P.build_poll(Submitted("a b"), _chan()).url == "https://api.bfl.ai/v1/get_result?id=a%20b"


def test_parse_and_parse_poll():
    assert P.parse(_req(), _reply({"id": "j", "polling_url": "https://api.bfl.ai/v1/get_result?id=j"})) == \
        Submitted("j", "https://api.bfl.ai/v1/get_result?id=j")
    assert P.parse_poll(_req(), _reply({"status": "Pending", "progress": 0.4})) == Pending(0.4)
    done = P.parse_poll(_req(), _reply({"status": "Ready", "result": {"sample": "https://d/x.jpg",
                                                                      "prompt": "a fox, detailed"}}))
    assert isinstance(done, Finished)
    assert (done.images[0].url, done.images[0].revised_prompt) == ("https://d/x.jpg", "a fox, detailed")
    with pytest.raises(UpstreamBadResponse):
        P.parse_poll(_req(), _reply({"status": "Ready", "result": None}))
    with pytest.raises(UpstreamContentFiltered):
        P.parse_poll(_req(), _reply({"status": "Content Moderated"}))


def test_parse_error_classes():
    assert isinstance(P.parse_error(_reply({"detail": "Not authenticated"}, 403)), UpstreamUnavailable)
    not_found = P.parse_error(_reply({"id": "j", "status": "Task not found"}, 404))
    assert type(not_found) is UpstreamError and not_found.code == "upstream_job_failed"
    rejected = P.parse_error(_reply({"detail": [{"loc": ["body", "input_image_2"], "msg": "bad"}]}, 422))
    assert isinstance(rejected, UpstreamRejected) and rejected.field == "image"
    assert P.parse_error(UpstreamReply(502, {}, b"<html>")).retry_elsewhere


def test_build_converts_an_alpha_mask_for_fill():
    image, mask = read_image(png(8, 8), "image"), read_image(mask_png(8, 8), "mask")
    req = ImageRequest(operation=Operation.EDIT, model="flux-kontext-pro", prompt="x", images=[image], mask=mask)
    call = P.build(req, "FLUX.1-Kontext-pro", _chan())
    assert call.url == "https://api.bfl.ai/v1/flux-pro-1.0-fill" and call.headers == {"x-key": "k"}
    white = _image(base64.b64decode(call.json["mask"])).convert("L")
    assert white.getpixel((0, 0)) == 255 and white.getpixel((7, 0)) == 0


# -- FLUX 3 Image --

F3 = "flux-3-image"


def test_flux3_generates_with_the_expanded_prompt_and_an_hour_long_sample(gw):
    gateway, state = gw
    resp = _post(gateway, {"model": F3, "prompt": "a lighthouse", "response_format": "b64_json"})
    assert resp.status_code == 200, resp.text
    item = resp.json()["data"][0]
    assert item["revised_prompt"].startswith("a lighthouse, ") and item["revised_prompt"] != "a lighthouse"
    assert _image(base64.b64decode(item["b64_json"])).size == (1360, 768)
    sent = state.submits()[-1]
    assert sent.path == "/v1/flux-3-image" and sent.fields == {"prompt": "a lighthouse", "safety_tolerance": 2}
    (task,) = state.tasks.values()
    assert "seed" not in _poll_result(state, task.id)
    (expiry,) = [e for _, _, e in state.files.values()]
    assert expiry - task.finish_at > 3000  # an hour, where FLUX.2's lives 10 minutes


def _poll_result(state, task_id: str) -> dict:
    with httpx.Client() as client:
        host = state.requests[0].headers["host"]
        return client.get(f"http://{host}/v1/get_result", params={"id": task_id},
                          headers={"x-key": state.api_key}).json()["result"]


def test_flux3_bounding_boxes_travel_in_the_prompt(gw):
    gateway, state = gw
    prompt = 'A fox <fox> under a tree <tree> [{"label": "fox", "box": [0.1, 0.5, 0.4, 0.9]}]'
    _ok(gateway, {"model": F3, "prompt": prompt})
    assert state.submits()[-1].fields["prompt"] == prompt


F3_SIZES = [
    ("1024x1024", {"aspect_ratio": "1:1", "resolution": "1k"}, (1024, 1024)),
    ("1792x1024", {"aspect_ratio": "16:9", "resolution": "2k"}, (2736, 1536)),  # 1.8 MP bills as 2K
    ("16:9", {"aspect_ratio": "16:9"}, (1360, 768)),
    ("1400x1000", {"aspect_ratio": "7:5", "resolution": "1k"}, (1216, 864)),
    ("3:1", {"aspect_ratio": "21:9"}, (1568, 672)),  # the nearest of the 15
    ("2K", {"resolution": "2k"}, (2736, 1536)),
    ("auto", {}, (1360, 768)),
]


@pytest.mark.parametrize("size,expected,made", F3_SIZES)
def test_flux3_size_becomes_aspect_ratio_and_resolution(gw, size, expected, made):
    gateway, state = gw
    (img,) = _ok(gateway, {"model": F3, "prompt": "a fox", "size": size})
    sent = state.submits()[-1].fields
    assert {k: sent[k] for k in ("aspect_ratio", "resolution") if k in sent} == expected
    assert img.size == made


def test_flux3_native_fields_win_and_safety_is_lowered_to_4(gw):
    gateway, state = gw
    resp = _post(gateway, {"model": F3, "prompt": "a fox", "size": "1024x1024", "aspect_ratio": "9:16",
                           "resolution": "768sq", "grounding": False, "safety_tolerance": 6,
                           "output_format": "webp", "response_format": "b64_json"})
    assert resp.status_code == 200, resp.text
    assert Decimal(resp.headers["x-pixelgate-cost"]) == Decimal("0.041")  # 768sq
    sent = state.submits()[-1].fields
    assert sent == {"prompt": "a fox", "aspect_ratio": "9:16", "resolution": "768sq", "grounding": False,
                    "safety_tolerance": 4}
    img = _image(base64.b64decode(resp.json()["data"][0]["b64_json"]))
    assert img.format == "WEBP" and img.size == (576, 1024)  # delivered JPEG, converted by the gateway


def test_flux3_price_follows_the_resolution(gw):
    gateway, _ = gw
    for body, cost in (({}, "0.048"), ({"size": "2K"}, "0.10"), ({"size": "4096x4096"}, "0.607"),
                       ({"size": "1024x1024", "resolution": "1.5k"}, "0.07")):
        resp = _post(gateway, {"model": F3, "prompt": "a fox", **body})
        assert resp.status_code == 200, resp.text
        assert Decimal(resp.headers["x-pixelgate-cost"]) == Decimal(cost), body


def test_flux3_edit_sends_every_reference_in_images(gw):
    gateway, state = gw
    files = [("image[]", (f"{i}.png", png(96, 64), "image/png")) for i in range(9)]
    files.append(("image[]", ("9.jpg", _jpeg(64, 64), "image/jpeg")))
    (img,) = _ok(gateway, {"model": F3, "prompt": "image 1 wearing the hat of image 10"}, EDIT, files=files)
    sent = state.submits()[-1].fields
    assert len(sent["images"]) == 10 and sent["images"][0]["width"] == 96 and sent["images"][9]["format"] == "JPEG"
    assert not {"input_image", "aspect_ratio", "resolution"} & set(sent)  # auto: the first image's shape
    assert img.size == (1248, 832)


def test_flux3_n_fans_out_one_job_per_image(gw):
    gateway, state = gw
    assert len(_ok(gateway, {"model": F3, "prompt": "a fox", "n": 3, "size": "1:1"})) == 3
    assert len(state.submits()) == 3 and all("seed" not in r.fields for r in state.submits())


@pytest.mark.parametrize("extra,param", [
    ({"seed": 7}, "seed"),
    ({"aspect_ratio": "7:3"}, "aspect_ratio"),
    ({"resolution": "8k"}, "resolution"),
    ({"resolution": "1K"}, "resolution"),
    ({"grounding": "very"}, "grounding"),
    ({"safety_tolerance": 7}, "safety_tolerance"),
    ({"raw": True}, "raw"),
    ({"steps": 20}, "steps"),
    ({"prompt_upsampling": True}, "prompt_upsampling"),
    ({"size": "4:1"}, "size"),
    ({"prompt": ""}, "prompt"),
])
def test_flux3_refusals_before_any_upstream_call(gw, extra, param):
    gateway, state = gw
    openai_error(_post(gateway, {"model": F3, "prompt": "a fox", **extra}), 400, param=param)
    assert state.requests == []


def test_flux3_an_eleventh_reference_is_refused_before_any_upstream_call(gw):
    gateway, state = gw
    files = [("image[]", (f"{i}.png", png(32, 32), "image/png")) for i in range(11)]
    err = openai_error(_post(gateway, {"model": F3, "prompt": "merge"}, EDIT, files=files), 400, param="image")
    assert "10" in err["message"]
    assert state.requests == []


# the emulator itself is as strict as the gateway: what it refuses, and how

@pytest.mark.parametrize("body,loc,kind", [
    ({"prompt": "x", "seed": 1}, ["body", "seed"], "extra_forbidden"),
    ({"prompt": "x", "width": 1024}, ["body", "width"], "extra_forbidden"),
    ({"prompt": "x", "output_format": "png"}, ["body", "output_format"], "extra_forbidden"),
    ({"prompt": "x", "input_image": "https://example.com/a.png"}, ["body", "input_image"], "extra_forbidden"),
    ({"prompt": "x", "images": ["https://example.com/a.png"] * 11}, ["body", "images"], "too_long"),
    ({"prompt": "x", "images": [1]}, ["body", "images", 0], "string_type"),
    ({"prompt": "x", "resolution": "1K"}, ["body", "resolution"], "literal_error"),
    ({"prompt": "x", "aspect_ratio": "1:3"}, ["body", "aspect_ratio"], "literal_error"),
    ({"prompt": "x", "safety_tolerance": 5}, ["body", "safety_tolerance"], "less_than_equal"),
    ({"images": ["https://example.com/a.png"]}, ["body", "prompt"], "missing"),
])
def test_flux3_emulator_refuses_what_the_api_does_not_take(upstream, body, loc, kind):
    state, base = upstream
    resp = httpx.post(f"{base}/flux-3-image", json=body, headers={"x-key": state.api_key})
    assert resp.status_code == 422, resp.text
    assert [(e["loc"], e["type"]) for e in resp.json()["detail"]] == [(loc, kind)]
    assert not state.tasks


def test_flux3_emulator_takes_ten_urls_and_base64(upstream):
    state, base = upstream
    images = [base64.b64encode(png(64, 32)).decode()] + ["https://example.com/a.png"] * 9
    resp = httpx.post(f"{base}/flux-3-image", headers={"x-key": state.api_key},
                      json={"prompt": "x", "images": images, "aspect_ratio": "auto", "resolution": "4k",
                            "grounding": True, "safety_tolerance": 4})
    assert resp.status_code == 200, resp.text
    assert state.tasks[resp.json()["id"]].size == (5792, 2896)  # the first image's 2:1 at 16.8 MP
    assert state.submits()[-1].fields["images"][0] == {"width": 64, "height": 32, "format": "PNG",
                                                       "bytes": len(images[0])}
