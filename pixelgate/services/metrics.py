"""Prometheus metrics, served at GET /metrics (and /admin/metrics) to the admin key or the
`metrics_token`.

Every request figure comes from the request's log row, so the metrics and the request log never
disagree. With several worker processes, prometheus_client's multiprocess mode keeps each
worker's counters in files of one shared directory, and whichever worker is scraped answers
for all of them: `pixelgate serve` sets that directory up (PROMETHEUS_MULTIPROC_DIR) before
the workers start. Several instances are scraped one by one, as Prometheus does anyway.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

CONTENT_TYPE = CONTENT_TYPE_LATEST
_DIR = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("pixelgate_requests", "Requests answered, by outcome.",
                   ["surface", "operation", "model", "channel", "status"])
SECONDS = Histogram("pixelgate_request_seconds", "Time from a request's arrival to its answer.",
                    ["surface", "model"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
IMAGES = Counter("pixelgate_images_delivered", "Images handed to clients.", ["model", "channel"])
BACKGROUND_ERRORS = Counter("pixelgate_background_errors", "Rounds of a background loop (retention, tasks, "
                            "webhooks, ...) that failed; the loop goes on (services/supervisor.py).", ["loop"])
ATTEMPTS = Counter("pixelgate_upstream_attempts", "Calls to upstream channels, by their error code "
                   "('ok' when the call succeeded).", ["channel", "result"])


def observe(row: dict[str, Any]) -> None:
    """Count one finished request from its log row."""
    # A model name counts only once a channel serves it: names clients invent stay out of the
    # label set, which would otherwise grow without bound.
    model = row["model"] if row.get("channel") else "-"
    surface, channel = row["surface"], row.get("channel") or "-"
    REQUESTS.labels(surface, row.get("operation") or "-", model, channel, str(row["status"])).inc()
    SECONDS.labels(surface, model).observe(row["latency_ms"] / 1000)
    if row.get("images_delivered"):
        IMAGES.labels(model, channel).inc(row["images_delivered"])
    for attempt in row.get("attempts") or ():
        ATTEMPTS.labels(attempt["channel"], attempt.get("error", "ok")).inc()


def render() -> bytes:
    if os.environ.get(_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def prepare_shared_directory(path: Path) -> None:
    """For `serve`, before any worker starts: a clean directory for the workers' counters (the
    last run's would count twice)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[_DIR] = str(path)
