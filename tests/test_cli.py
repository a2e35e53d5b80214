"""The command line manages keys and channels on the same database as the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import database


@pytest.fixture
def cli(backend, tmp_path):
    with database(backend, tmp_path) as url:
        env = {**os.environ, "PIXELGATE_DATABASE_URL": url, "PIXELGATE_DATA_DIR": str(tmp_path / "data")}

        def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
            proc = subprocess.run([sys.executable, "-m", "pixelgate", *args], capture_output=True, text=True,
                                  env=env, cwd=tmp_path, timeout=60)
            if ok:
                assert proc.returncode == 0, proc.stderr
            return proc

        yield run


def test_keys(cli):
    created = cli("keys", "create", "--name", "ci", "--models", "sandbox-image,sandbox-slow",
                  "--expires", "2999-01-01")
    token = created.stdout.strip().split(": ")[-1]
    assert token.startswith("pg-")
    listed = json.loads(cli("keys", "list").stdout)
    mine = [k for k in listed if k["name"] == "ci"][0]
    assert mine["allowed_models"] == ["sandbox-image", "sandbox-slow"] and mine["expires_at"].startswith("2999")
    assert token not in json.dumps(listed)
    cli("keys", "disable", str(mine["id"]))
    assert [k for k in json.loads(cli("keys", "list").stdout) if k["name"] == "ci"][0]["enabled"] is False
    cli("keys", "delete", str(mine["id"]))
    assert cli("keys", "delete", str(mine["id"]), ok=False).returncode != 0


def test_first_run_prints_an_admin_key_once(cli):
    first = cli("keys", "list")
    assert "created admin key" in first.stderr
    second = cli("keys", "list")
    assert "created admin key" not in second.stderr


def test_channels(cli):
    cli("channels", "add", "--name", "up", "--provider", "openai-compatible", "--base-url", "http://127.0.0.1:9/v1",
        "--api-key", "sk-secret-value", "--models", "a,b", "--map", "a=upstream-a", "--priority", "3")
    listed = json.loads(cli("channels", "list").stdout)
    up = [c for c in listed if c["name"] == "up"][0]
    assert up["models"] == ["a", "b"] and up["model_map"] == {"a": "upstream-a"} and up["priority"] == 3
    assert "sk-secret-value" not in cli("channels", "list").stdout
    cli("channels", "disable", "up")
    assert [c for c in json.loads(cli("channels", "list").stdout) if c["name"] == "up"][0]["enabled"] is False
    bad = cli("channels", "add", "--name", "x", "--provider", "nope", "--models", "m", ok=False)
    assert bad.returncode != 0 and "provider" in bad.stderr
    cli("channels", "remove", "up")
    assert "up" not in [c["name"] for c in json.loads(cli("channels", "list").stdout)]


def test_usage(cli):
    out = cli("usage", "--by", "model").stdout
    assert out.splitlines()[0].split()[:3] == ["model", "requests", "images"]
    assert out.splitlines()[-1].split()[0] == "total"
    assert cli("usage", "--by", "nonsense", ok=False).returncode != 0
