"""A gateway killed with SIGKILL in the middle of a task loses nothing: after a restart the task
is polled to its end, its images stored, and its outcome (and webhook) recorded exactly once."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import database
from tests.emulators.server import serve
from tests.test_serve import _start_anywhere, _stop

KEY = "pg-restart-test-admin-key"


@pytest.mark.long
def test_task_survives_kill_9(backend, tmp_path):
    calls: list[bytes] = []

    async def hook(request):
        calls.append(await request.body())
        return Response(status_code=204)

    headers = {"Authorization": f"Bearer {KEY}"}
    with database(backend, tmp_path) as url, serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as rx:
        env = {**os.environ, "PIXELGATE_DATABASE_URL": url, "PIXELGATE_ADMIN_KEY": KEY,
               "PIXELGATE_SANDBOX": "true",  # a database server: the sandbox is off unless asked for
               "PIXELGATE_DATA_DIR": str(tmp_path / "data"), "PIXELGATE_POLL_INTERVAL_SECONDS": "0.1",
               "PIXELGATE_TASK_LEASE_SECONDS": "1", "PIXELGATE_FETCH_ALLOW_HOSTS": '["127.0.0.1"]'}
        proc, base, _ = _start_anywhere(["serve"], tmp_path, env)
        try:
            resp = httpx.post(base + "/models/sandbox/sandbox-async/predictions", headers=headers, json={
                "input": {"prompt": "survive", "size": "32x32", "sandbox_job_seconds": 2}, "webhook": rx + "/hook"})
            assert resp.status_code == 201, resp.text
            task_id = resp.json()["id"]
            time.sleep(0.5)  # the poller has claimed and polled it at least once
            assert httpx.get(f"{base}/tasks/{task_id}", headers=headers).json()["status"] == "running"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc, _, _ = _start_anywhere(["serve"], tmp_path, env, port=int(base.rsplit(":", 1)[1]))  # its links name it
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                task = httpx.get(f"{base}/tasks/{task_id}", headers=headers).json()
                if task["status"] != "running":
                    break
                time.sleep(0.1)
            assert task["status"] == "succeeded", task
            assert httpx.get(task["output"][0]["url"]).content.startswith(b"\x89PNG")
            time.sleep(1.0)
        finally:
            _stop(proc)
    assert len(calls) == 1  # the outcome was recorded, and announced, once
