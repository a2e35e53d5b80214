"""Background loops keep running through errors (services/supervisor.py): each failed round is
logged with its traceback and counted in pixelgate_background_errors_total{loop}."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest
from prometheus_client import REGISTRY

from pixelgate.services.supervisor import supervise
from tests.test_serve import metric

ERRORS = "pixelgate_background_errors_total"


def _errors(loop: str) -> float:
    return REGISTRY.get_sample_value(ERRORS, {"loop": loop}) or 0.0


@pytest.mark.long(5)
def test_a_round_that_raises_is_counted_logged_and_tried_again_until_cancelled(caplog):
    calls = []

    async def round() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            {}["missing"]  # a real KeyError, twice
        await asyncio.sleep(0.01)

    async def scenario() -> asyncio.Task:
        loop = supervise("test-supervisor", round)
        while len(calls) < 4:
            await asyncio.sleep(0.05)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        return loop

    before = _errors("test-supervisor")
    loop = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert loop.cancelled()
    assert _errors("test-supervisor") - before == 2
    assert calls[1] - calls[0] >= 0.9 and calls[2] - calls[1] >= 1.9  # paused 1 s, then 2 s
    failures = [r for r in caplog.records if r.name == "pixelgate.background"]
    assert len(failures) == 2 and failures[0].exc_info[0] is KeyError
    assert "background loop test-supervisor failed" in failures[0].getMessage()


@pytest.mark.long(10)
def test_retention_goes_on_after_a_sweep_fails(make_gateway, tmp_path, caplog):
    """A real fault on disk: a segment name that is a symlink to itself, so stat() fails (ELOOP)
    even for root. Retention used to end for the life of the process at the first error."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "loop.seg").symlink_to("loop.seg")
    token = "scrape-token-" + "5" * 20
    before = _errors("retention")
    gateway = make_gateway(storage_dir=images, image_retention_days=1, metrics_token=token)
    with gateway.http(key=token) as scraper:
        deadline = time.monotonic() + 20
        while metric(scraper.get("/metrics").text, ERRORS, loop="retention") <= before:
            assert time.monotonic() < deadline, "the failing sweep was not counted"
            time.sleep(0.1)
        (images / "loop.seg").unlink()  # the fault is gone; an old segment waits for the next sweep
        old = images / "old.seg"
        old.write_bytes(b"x")
        os.utime(old, (time.time() - 3 * 86400,) * 2)
        while old.exists():
            assert time.monotonic() < deadline + 40, "retention stopped after its error"
            time.sleep(0.1)
        assert metric(scraper.get("/metrics").text, ERRORS, loop="retention") > before
    failure = next(r for r in caplog.records if r.name == "pixelgate.background")
    assert "retention" in failure.getMessage() and isinstance(failure.exc_info[1], OSError)
