"""The README's quick start, as a user runs it: the gateway in one terminal with the vendors
simulated, and `pixelgate keys create` in a second terminal that has none of its environment."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest

from tests.test_cli import _clean_env
from tests.test_serve import _start_anywhere, _stop


def _second_terminal(*args: str, cwd) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pixelgate", *args], capture_output=True, text=True,
                          env=_clean_env(), cwd=cwd, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.long(20)
def test_a_client_key_made_in_a_second_terminal_reaches_the_simulated_vendors(tmp_path):
    gateway, base, said = _start_anywhere(["serve"], tmp_path, _clean_env(PIXELGATE_SIMULATE_VENDORS="true"))
    try:
        admin_key = re.search(r"created admin key \(shown once, keep it\): (pg-\S+)", said).group(1)
        token = _second_terminal("keys", "create", "--name", "me", cwd=tmp_path).stdout.strip().split(": ")[-1]
        listed = json.loads(_second_terminal("keys", "list", cwd=tmp_path).stdout)
        assert "me" in [k["name"] for k in listed]
        channels = httpx.get(base + "/admin/channels", headers={"Authorization": f"Bearer {admin_key}"}).json()["data"]
        assert {c["name"] for c in channels if c["enabled"]} >= {"simulated-openai", "simulated-bfl", "sandbox"}
        resp = httpx.post(base + "/v1/images/generations", headers={"Authorization": f"Bearer {token}"},
                          json={"model": "gpt-image-2", "prompt": "a lighthouse", "size": "1024x1024"}, timeout=60)
        assert resp.status_code == 200, resp.text
    finally:
        _stop(gateway)
