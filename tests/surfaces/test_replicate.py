"""Replicate's wire shape, driven by the official `replicate` client pointed at the gateway."""

from __future__ import annotations

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError


@pytest.fixture
def client(gateway):
    return replicate.Client(api_token=gateway.create_key(), base_url=gateway.base_url)


def test_create_get_and_wait(client):
    prediction = client.models.predictions.create(
        model="sandbox/sandbox-async", input={"prompt": "a deer", "size": "64x64", "sandbox_job_seconds": 0.3})
    assert prediction.status in ("starting", "processing")
    again = client.predictions.get(prediction.id)
    assert again.id == prediction.id
    prediction.wait()
    assert prediction.status == "succeeded"
    assert httpx.get(prediction.output[0]).content.startswith(b"\x89PNG")
    assert prediction.metrics["predict_time"] >= 0


def test_sync_model_runs_as_a_prediction_too(client):
    prediction = client.models.predictions.create(model="sandbox/sandbox-image",
                                                  input={"prompt": "x", "size": "32x32", "n": 2}, wait=True)
    assert prediction.status == "succeeded" and len(prediction.output) == 2


def test_run(client):
    output = client.run("sandbox/sandbox-async", input={"prompt": "x", "size": "32x32",
                                                        "sandbox_job_seconds": 0.2}, use_file_output=False)
    assert isinstance(output, list) and output[0].startswith("http")


def test_cancel(client):
    prediction = client.models.predictions.create(
        model="sandbox/sandbox-async", input={"prompt": "x", "sandbox_job_seconds": 30})
    prediction.cancel()
    assert client.predictions.get(prediction.id).status == "canceled"


def test_errors_are_problem_details(client):
    with pytest.raises(ReplicateError) as info:
        client.models.predictions.create(model="sandbox/sandbox-image", input={"prompt": "x", "n": 99})
    assert info.value.status == 422 and "n" in info.value.detail
    with pytest.raises(ReplicateError) as info:
        client.predictions.get("task_unknown")
    assert info.value.status == 404
