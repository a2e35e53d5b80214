"""A bounded fuzz of every surface: schemathesis walks /openapi.json and sends what it generates
from each operation's parameters and body to a gateway serving every simulated vendor (on
PostgreSQL, whose 32-bit integers and length limits are stricter than SQLite's). Whatever it
sends, no answer may be a 5xx. Derandomized (fixed examples every run) and capped per operation,
so that it stays within about two minutes on two cores."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from pixelgate.config import Settings
from tests.conftest import ADMIN_KEY, database, run_gateway

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 12))
"""Cases per operation; the /mj-fast, /mj-turbo and /mj-relax copies of /mj get COPY_EXAMPLES.
FUZZ_EXAMPLES=200 FUZZ_RANDOM=1 explores further (and longer) with fresh examples each run."""
RANDOM = bool(os.environ.get("FUZZ_RANDOM"))
COPY_EXAMPLES = 2
BUDGET_SECONDS = 240
"""About 30 s alone on two cores; the margin is for a loaded machine (make test runs four at once)."""
SPARED = {("DELETE", "/admin/keys/{key_id}"), ("PATCH", "/admin/keys/{key_id}")}
"""Left out: they could disable the one key the fuzzer holds, and every later case would be a
401 that proves nothing."""


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    with ExitStack() as stack:
        tmp = tmp_path_factory.mktemp("fuzz")
        url = stack.enter_context(database("postgresql", tmp))
        yield stack.enter_context(run_gateway(Settings(
            data_dir=tmp, database_url=url, admin_key=ADMIN_KEY, simulate_vendors=True, cache_seconds=0,
            poll_interval_seconds=0.05, async_wait_seconds=5, auth_failures_per_minute=0,
            max_body_bytes=4 * 1024 * 1024)))


@pytest.mark.long(40)
def test_no_input_gets_a_server_error(fuzzed):
    schema = schemathesis.openapi.from_url(fuzzed.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 90  # every surface is described, the /mj-* copies and /healthz too
    described = {(op.method.upper(), op.path) for op in operations}
    assert {("POST", "/images/generations"), ("POST", "/mj-relax/mj/submit/imagine"), ("GET", "/healthz"),
            ("POST", "/ideogram/v1/ideogram-v3/edit")} <= described
    assert all("requestBody" in op.definition.raw for op in operations
               if op.method.upper() == "POST" and op.path.split("/")[-1] in ("generations", "imagine", "predictions"))
    failures: list[str] = []
    statuses: dict[int, int] = {}
    started = time.monotonic()
    for operation in operations:
        if (operation.method.upper(), operation.path) in SPARED:
            continue
        copy = operation.path.startswith("/mj-")

        @given(case=operation.as_strategy())
        @settings(max_examples=COPY_EXAMPLES if copy else EXAMPLES, derandomize=not RANDOM, deadline=None,
                  database=None, suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def one(case) -> None:
            response = case.call(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500 and len(failures) < 50:
                failures.append(f"{case.method} {case.formatted_path} {response.status_code}: "
                                f"{response.text[:300]}\n  {case.as_curl_command()[:600]}")

        one()
    took = time.monotonic() - started
    assert not failures, "\n".join(failures)
    assert statuses.get(200, 0) > 150, statuses  # the cases reach the handlers, not only the validators
    assert RANDOM or took < BUDGET_SECONDS, f"the fuzz took {took:.0f} s"


def test_docs_work_offline_and_the_document_describes_auth_and_bodies(gateway):
    with gateway.http(key=None) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text
        assert "cdn" not in page.text.lower()
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            assert client.get(f"/docs/static/{asset}").status_code == 200
        doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    assert {"bearer": []} in doc["security"]
    generations = doc["paths"]["/v1/images/generations"]["post"]["requestBody"]["content"]["application/json"]
    assert {"prompt", "model", "n", "size"} <= set(generations["schema"]["properties"])
    edit = doc["paths"]["/ideogram/v1/ideogram-v3/edit"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert edit["schema"]["properties"]["mask"] == {"type": "string", "format": "binary"}
    assert set(edit["schema"]["required"]) == {"prompt", "image", "mask"}
    imagine = doc["paths"]["/mj/submit/imagine"]["post"]["requestBody"]["content"]["application/json"]
    assert "prompt" in imagine["schema"]["required"]
