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

        run.migrated = run("migrate")  # the gateway's database exists, as `pixelgate serve` leaves it
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
    assert "created admin key" in cli.migrated.stderr
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


def _pixelgate(*args: str, cwd, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
    return subprocess.run([sys.executable, "-m", "pixelgate", *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, cwd=cwd, timeout=timeout)


def test_management_commands_refuse_to_invent_a_database_elsewhere(tmp_path):
    proc = _pixelgate("keys", "list", cwd=tmp_path)
    assert proc.returncode != 0 and "no gateway database at" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "data" / "pixelgate.db").exists()
    assert _pixelgate("migrate", cwd=tmp_path).returncode == 0
    listed = _pixelgate("keys", "list", cwd=tmp_path)
    assert listed.returncode == 0 and "pixelgate: database sqlite" in listed.stderr


@pytest.mark.parametrize("url, says", [
    ("postgres://nobody@127.0.0.1:1/x", "not valid"),  # no async driver named
    ("postgresql+asyncpg://nobody@127.0.0.1:1/x", "cannot use the database"),  # nothing listens there
])
def test_database_mistakes_are_one_line(tmp_path, url, says):
    for args in (("migrate",), ("serve", "--port", "0")):
        proc = _pixelgate(*args, cwd=tmp_path, env={"PIXELGATE_DATABASE_URL": url})
        assert proc.returncode != 0 and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr  # a warning line at most, no traceback


def test_unknown_variables_are_reported_with_a_guess(tmp_path):
    proc = _pixelgate("migrate", cwd=tmp_path, env={"PIXELGATE_DATABSE_URL": "x"})
    assert "PIXELGATE_DATABSE_URL is not a pixelgate setting; did you mean PIXELGATE_DATABASE_URL?" in proc.stderr


def test_version_and_config_after_the_subcommand(tmp_path):
    version = _pixelgate("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("pixelgate, version ")
    (tmp_path / "gw.toml").write_text('port = 1\nworkers = 99\n')  # workers is at most 64: refused
    after = _pixelgate("serve", "--config", "gw.toml", cwd=tmp_path)
    assert after.returncode != 0 and "workers" in after.stderr and "gw.toml" in after.stderr


def test_adding_a_channel_warns_of_a_missing_key_and_price(cli):
    added = cli("channels", "add", "--name", "fresh", "--provider", "bfl", "--models", "flux-2-pro")
    assert "has no API key" in added.stderr and "no price for flux-2-pro" in added.stderr


def test_a_taken_port_is_one_line_and_nothing_claims_to_listen(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _pixelgate("serve", "--port", str(taken.getsockname()[1]), cwd=tmp_path)
    assert proc.returncode != 0 and "cannot listen on 127.0.0.1" in proc.stderr
    assert "listening on" not in proc.stdout
