"""/openapi.json tells the truth: every operation declares its success body and the error
statuses it answers, each in its API's own shape, grouped by API; and real answers of every
surface (successes and errors, through a real socket) conform to what it declares."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.conftest import png

ERROR_SHAPES = {"OpenAI Images": ("OpenAIError", "application/json"),
                "Predictions": ("OpenAIError", "application/json"),
                "Chat": ("OpenAIError", "application/json"),
                "Responses": ("OpenAIError", "application/json"),
                "Files": ("OpenAIError", "application/json"),
                "Admin": ("OpenAIError", "application/json"),
                "Replicate": ("ReplicateProblem", "application/problem+json"),
                "Ideogram": ("IdeogramError", "application/json"),
                "Stability": ("StabilityError", "application/json"),
                "Midjourney": ("MidjourneyResult", "application/json"),
                "Gemini": ("GeminiError", "application/json")}
"""Each API's error model and media type."""
REAL_422 = {"Replicate", "Ideogram"}
"""The APIs that answer 422 themselves (Replicate: invalid input; Ideogram: a safety refusal)."""


@pytest.fixture(scope="module")
def simulated(make_module_gateway, backend):
    if backend != "sqlite":
        pytest.skip("the document does not depend on the database; the answers are checked once")
    return make_module_gateway(simulate_vendors=True)


def operations(doc: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_every_operation_declares_its_answers_in_its_apis_shape(simulated):
    doc = httpx.get(simulated.base_url + "/openapi.json").json()
    assert "HTTPValidationError" not in str(doc)
    tags = {t["name"] for t in doc["tags"]}
    assert set(ERROR_SHAPES) | {"Health"} <= tags
    seen_tags, count = set(), 0
    for method, path, op in operations(doc):
        count += 1
        where = f"{method} {path}"
        assert op.get("tags") and set(op["tags"]) <= tags, where
        (tag,) = op["tags"]
        seen_tags.add(tag)
        successes = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        assert successes, where
        for status, answer in successes.items():
            if status == "204":
                assert "content" not in answer, where
                continue
            assert answer["content"], where
            assert all(media["schema"] not in ({}, None) for media in answer["content"].values()), where
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        assert "422" not in errors or tag in REAL_422, where
        if tag == "Health":
            continue
        assert errors, where
        model, media = ERROR_SHAPES[tag]
        for status, answer in errors.items():
            assert answer["content"] == {media: {"schema": {"$ref": f"#/components/schemas/{model}"}}}, (where, status)
    assert count > 90 and seen_tags == tags


def test_generating_operations_declare_the_refusals_a_client_must_handle(simulated):
    doc = httpx.get(simulated.base_url + "/openapi.json").json()
    for path in ("/v1/images/generations", "/models/{vendor}/{model}/predictions", "/ideogram/v1/ideogram-v3/edit",
                 "/v1/models/{owner}/{name}/predictions"):
        declared = set(doc["paths"][path]["post"]["responses"])
        assert {"400", "401", "402", "403", "404", "429", "502", "503", "504"} <= declared, path
    assert set(doc["paths"]["/mj/submit/imagine"]["post"]["responses"]) == {"200", "401"}  # outcomes are codes
    files = doc["paths"]["/files/{name}"]["get"]
    assert {"image/png", "image/jpeg", "image/webp"} <= set(files["responses"]["200"]["content"])
    assert files["security"] == []
    assert "text/event-stream" in doc["paths"]["/v1/images/generations"]["post"]["responses"]["200"]["content"]


class Conformance:
    """Checks an answer against the document: its status declared for the operation, its media
    type declared for that status, its JSON body valid against the declared schema."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.templates = [(re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", p) + "$"), p)
                          for p in sorted(doc["paths"], key=lambda p: p.count("{"))]  # literal paths first
        self.seen: list[tuple[str, int]] = []
        self.problems: list[str] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        method, path = response.request.method, urlsplit(str(response.request.url)).path
        template = next((p for rx, p in self.templates if rx.match(path)), None)
        where = f"{method} {path} -> {response.status_code}"
        op = self.doc["paths"].get(template, {}).get(method.lower())
        if op is None:
            return self.problems.append(f"{where}: no such operation")
        self.seen.append((op["tags"][0], response.status_code))
        answer = op["responses"].get(str(response.status_code))
        if answer is None:
            return self.problems.append(f"{where}: status not declared ({response.text[:200]})")
        if not response.content:
            return None if "content" not in answer else self.problems.append(f"{where}: no body")
        media = response.headers["content-type"].split(";")[0]
        if media not in answer.get("content", {}):
            return self.problems.append(f"{where}: {media} not declared")
        if media.endswith("json"):
            schema = {**answer["content"][media]["schema"], "components": self.doc["components"]}
            for error in Draft202012Validator(schema).iter_errors(response.json()):
                self.problems.append(f"{where}: {error.message} at {list(error.absolute_path)}")


@pytest.mark.long(5)
def test_real_answers_of_every_surface_conform_to_the_document(simulated):
    check = Conformance(httpx.get(simulated.base_url + "/openapi.json").json())
    hooks = {"response": [check]}
    admin = simulated.http(event_hooks=hooks)
    user_key = simulated.create_key()
    user = simulated.http(key=user_key, event_hooks=hooks)
    anonymous = simulated.http(key=None, event_hooks=hooks)

    # OpenAI Images, and Files through the URL it answers
    made = user.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "a fox", "response_format": "url"})
    assert made.status_code == 200, made.text
    url = made.json()["data"][0]["url"]
    user.post("/v1/images/generations", json={"model": "dall-e-2", "prompt": "a fox", "n": "many"})
    user.post("/v1/images/generations", json={"model": "no-such-model", "prompt": "a fox"})
    anonymous.post("/v1/images/generations", json={"prompt": "a fox"})
    with user.stream("POST", "/v1/images/generations",
                     json={"model": "sandbox-image", "prompt": "a fox", "stream": True}) as stream:
        stream.read()
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream"), stream.text
    for failure in ("server_error", "rate_limit"):  # the vendor's, as the gateway answers them
        user.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "a fox", "sandbox_fail": failure})
    user.post("/v1/images/variations", files={"image": ("a.png", png(256, 256))}, data={"model": "sandbox-image"})
    for path in ("/v1/models", "/v1/models/dall-e-2", "/v1/models/no-such-model", "/v1/usage", "/v1/usage?days=x"):
        user.get(path)
    anonymous.get(urlsplit(url).path + "?" + urlsplit(url).query)
    anonymous.get(urlsplit(url).path + "?exp=1&sig=forged")
    anonymous.get("/files/nothing.png")

    # Chat and Responses
    chat = {"model": "sandbox-image", "messages": [{"role": "user", "content": "a fox"}]}
    assert user.post("/v1/chat/completions", json=chat).status_code == 200
    user.post("/v1/chat/completions", json={**chat, "image_config": {"image_size": "9K"}})
    anonymous.post("/v1/chat/completions", json=chat)
    assert user.post("/v1/responses", json={"model": "sandbox-image", "input": "a fox"}).status_code == 200
    user.post("/v1/responses", json={"model": "sandbox-image", "input": "a fox", "tools": [{"type": "web_search"}]})

    # predictions
    user.post("/models/sandbox/sandbox-image/predictions", json={"input": {"prompt": "a fox"}})
    task = user.post("/models/sandbox/sandbox-image/predictions", headers={"Prefer": "respond-async"},
                     json={"input": {"prompt": "a fox"}}).json()
    user.get(f"/tasks/{task['id']}")
    user.post(f"/tasks/{task['id']}/cancel")
    user.get("/tasks/no-such-task")
    user.post("/models/sandbox/sandbox-image/predictions", json={"input": {"prompt": "a fox", "n": "two"}})

    # Replicate
    prediction = user.post("/v1/models/sandbox/sandbox-image/predictions", json={"input": {"prompt": "a fox"}}).json()
    user.get(f"/v1/predictions/{prediction['id']}")
    user.post(f"/v1/predictions/{prediction['id']}/cancel")
    user.get("/v1/predictions/no-such-prediction")
    user.post("/v1/models/sandbox/sandbox-image/predictions", json={"input": {"prompt": "a fox", "n": "two"}})
    user.post("/v1/models/sandbox/sandbox-image/predictions", content=b"{")
    user.get("/v1/webhooks/default/secret")
    anonymous.get("/v1/webhooks/default/secret")

    # Ideogram
    user.post("/ideogram/v1/ideogram-v3/generate", files={"prompt": (None, "a lighthouse")})
    user.post("/ideogram/v1/ideogram-v3/generate", files={"prompt": (None, "a lighthouse"), "num_images": (None, "9")})
    anonymous.post("/ideogram/v1/ideogram-v3/generate", files={"prompt": (None, "a lighthouse")})
    user.post("/ideogram/describe", files={"image_file": ("a.png", png(64, 64))})

    # Stability
    stability = "/stability/v2beta/stable-image/"
    user.post(stability + "generate/core", files={"none": ""}, data={"prompt": "a fox"})
    user.post(stability + "generate/core", headers={"accept": "application/json"}, files={"none": ""},
              data={"prompt": "a fox"})
    user.post(stability + "generate/core", files={"none": ""}, data={"prompt": "a fox", "aspect_ratio": "4:3"})
    user.post(stability + "generate/core", files={"none": ""}, data={"prompt": "a forbidden fox"})
    anonymous.post(stability + "generate/core", files={"none": ""}, data={"prompt": "a fox"})
    job = user.post(stability + "upscale/creative", files={"image": ("a.png", png(64, 64))}, data={"prompt": "x"})
    user.get(f"/stability/v2beta/results/{job.json()['id']}")
    user.get("/stability/v2beta/results/no-such-job")

    # Midjourney
    submitted = user.post("/mj/submit/imagine", json={"prompt": "a castle"}).json()
    user.post("/mj/submit/imagine", json={"prompt": "a castle --ar wide"})
    user.get(f"/mj/task/{submitted['result']}/fetch")
    user.get("/mj/task/no-such-task/fetch")
    user.get("/mj-relax/mj/task/list")
    user.post("/mj/task/list-by-condition", json={"ids": [submitted["result"], "no-such-task"]})
    anonymous.get("/mj/task/queue")

    # Gemini
    gen, stream = "/v1beta/models/sandbox-image:generateContent", "/v1beta/models/sandbox-image:streamGenerateContent"
    contents = {"contents": [{"parts": [{"text": "a fox"}]}]}
    user.post(gen, json=contents)
    user.post(gen, json={**contents, "generationConfig": {"imageConfig": {"aspectRatio": "7:3"}}})
    user.post("/v1beta/models/no-such-model:generateContent", json=contents)
    anonymous.post(gen, json=contents)
    user.post(stream, json=contents)
    user.post(stream + "?alt=sse", json=contents)
    operation = user.post(gen, headers={"Prefer": "respond-async"}, json=contents).json()
    user.get(f"/v1beta/{operation['name']}")
    user.get("/v1beta/operations/no-such-task")
    for path in ("/v1beta/models", "/v1beta/models?pageSize=0", "/v1beta/models/sandbox-image",
                 "/v1beta/models/no-such-model"):
        user.get(path)

    # Admin
    key = admin.post("/admin/keys", json={"name": "docs"}).json()
    admin.get(f"/admin/keys/{key['id']}")
    admin.patch(f"/admin/keys/{key['id']}", json={"name": "docs2"})
    admin.get("/admin/keys/not-a-number")
    admin.get("/admin/keys/999999")
    admin.delete(f"/admin/keys/{key['id']}")
    user.get("/admin/keys")
    admin.get("/admin/keys")
    admin.post("/admin/channels", json={"name": "extra", "provider": "sandbox", "models": ["sandbox-image"]})
    admin.patch("/admin/channels/extra", json={"priority": 3})
    admin.get("/admin/channels/extra")
    admin.get("/admin/channels")
    admin.delete("/admin/channels/extra")
    admin.get("/admin/channels/extra")
    account = admin.post("/admin/accounts", json={"name": "acme", "balance": "10"}).json()
    admin.get(f"/admin/accounts/{account['id']}")
    admin.patch(f"/admin/accounts/{account['id']}", json={"markup": "1.2"})
    admin.post(f"/admin/accounts/{account['id']}/topup", json={"amount": "5"})
    admin.post("/admin/accounts", json={"name": ""})
    price = admin.post("/admin/prices", json={"model": "sandbox-image", "amount": "0.02"}).json()
    admin.get("/admin/prices")
    admin.delete(f"/admin/prices/{price['id']}")
    admin.get("/admin/usage")
    admin.get("/admin/requests")
    admin.get("/admin/metrics")
    admin.get(f"/admin/tasks/{task['id']}")
    admin.get("/admin/tasks/no-such-task")
    anonymous.get("/healthz")

    for client in (admin, user, anonymous):
        client.close()
    assert not check.problems, "\n".join(check.problems)
    seen = set(check.seen)
    assert {("OpenAI Images", s) for s in (200, 400, 401, 404, 429, 502)} <= seen, seen
    assert {("Chat", 200), ("Chat", 400), ("Chat", 401), ("Responses", 200), ("Responses", 400)} <= seen, seen
    assert {("Files", 200), ("Files", 403), ("Files", 404), ("Predictions", 201), ("Predictions", 404),
            ("Replicate", 201), ("Replicate", 422), ("Replicate", 404), ("Replicate", 401), ("Ideogram", 200),
            ("Ideogram", 400), ("Ideogram", 401), ("Stability", 200), ("Stability", 202), ("Stability", 400),
            ("Stability", 401), ("Stability", 403), ("Stability", 404), ("Midjourney", 200), ("Midjourney", 401), ("Midjourney", 404),
            ("Gemini", 200), ("Gemini", 202), ("Gemini", 400), ("Gemini", 401), ("Gemini", 404),
            ("Admin", 201), ("Admin", 204), ("Admin", 400), ("Admin", 403), ("Admin", 404),
            ("Health", 200)} <= seen, seen


def test_a_path_no_route_serves_answers_in_its_apis_error_shape(make_gateway):
    """Not FastAPI's {"detail": "Not Found"}, which no client of these APIs reads."""
    gateway = make_gateway()
    with gateway.http() as client:
        openai_shape = client.get("/v1/no-such-thing")
        newline = client.get("/v1/models/%0Ax")
        wrong_method = client.delete("/v1/images/generations")
        ideogram_shape = client.post("/ideogram/v3/no-such-op")
        midjourney_shape = client.get("/mj/no/such")
    assert openai_shape.status_code == 404 and openai_shape.json()["error"]["code"] == "not_found"
    assert newline.status_code == 404 and "error" in newline.json()
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert ideogram_shape.status_code == 404 and isinstance(ideogram_shape.json()["error"], str)
    assert midjourney_shape.json()["result"] is None and "code" in midjourney_shape.json()
