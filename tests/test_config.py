"""Configuration: file (TOML or YAML) plus environment, validated with the bad field named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pixelgate.config import ConfigError, load_settings


def test_defaults_need_no_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert (settings.host, settings.port, settings.sandbox) == ("127.0.0.1", 8080, True)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/data/pixelgate.db"
    assert settings.resolved_storage_dir == tmp_path / "data" / "images"


def test_toml_file_with_channels(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSTREAM_KEY", "sk-from-env")
    cfg = tmp_path / "pixelgate.toml"
    cfg.write_text('''
port = 9000
url_ttl_seconds = 60
[[channels]]
name = "openai"
provider = "openai"
api_key_env = "UPSTREAM_KEY"
models = ["dall-e-3", "gpt-image-1"]
priority = 5
[[channels]]
name = "other"
provider = "openai-compatible"
base_url = "http://127.0.0.1:1/v1"
api_key = "sk-literal"
models = ["flux"]
model_map = {flux = "FLUX.1-Kontext-pro"}
weight = 3
''')
    settings = load_settings(cfg)
    assert settings.port == 9000 and settings.url_ttl_seconds == 60
    assert [c.name for c in settings.channels] == ["openai", "other"]
    assert settings.channels[1].model_map == {"flux": "FLUX.1-Kontext-pro"}
    assert "sk-literal" not in repr(settings)  # keys never reach a log through repr


def test_yaml_file_and_environment_override(tmp_path, monkeypatch):
    cfg = tmp_path / "pixelgate.yaml"
    cfg.write_text("port: 9000\nsandbox: false\n")
    monkeypatch.setenv("PIXELGATE_PORT", "9100")
    monkeypatch.setenv("PIXELGATE_CONFIG", str(cfg))
    settings = load_settings()
    assert settings.port == 9100 and settings.sandbox is False


@pytest.mark.parametrize("file,overrides,sandbox", [
    (None, {}, True),  # a first try, make run
    ("port = 9000\n", {}, False),  # a config file: production
    ("sandbox = true\n", {}, True),
    (None, {"database_url": "postgresql+asyncpg://gw@db.internal/gw"}, False),
    (None, {"database_url": "sqlite+aiosqlite:////srv/gw.db"}, True),
    (None, {"storage_url": "s3://images/gw"}, False),
    (None, {"storage_url": "s3://images/gw", "sandbox": True}, True),
])
def test_the_sandbox_is_off_in_production_unless_asked_for(tmp_path, monkeypatch, file, overrides, sandbox):
    monkeypatch.chdir(tmp_path)
    if file is not None:
        (tmp_path / "gw.toml").write_text(file)
    assert load_settings(file and tmp_path / "gw.toml", **overrides).sandbox is sandbox
    monkeypatch.setenv("PIXELGATE_SANDBOX", "true")  # asked for through the environment
    assert load_settings(file and tmp_path / "gw.toml", **overrides).sandbox is True


@pytest.mark.parametrize("content,field", [
    ("port = 'eighty'", "port"),
    ("nonsense = 1", "nonsense"),
    ("[[channels]]\nname='a'\nprovider='dall-e'\nmodels=['x']", "channels.0.provider"),
    ("[[channels]]\nname='a'\nprovider='openai'\nmodels=[]", "channels.0.models"),
    ("[[channels]]\nname='a'\nprovider='openai'\nmodels=['x']\napi_key_env='PIXELGATE_TEST_UNSET_VAR'", "channels.0"),
    ("[[channels]]\nname='a'\nprovider='openai'\nmodels=['x']\nweight=0", "channels.0.weight"),
])
def test_bad_field_is_named(tmp_path, content, field):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert f": {field}:" in str(info.value) or f": {field} " in str(info.value) or f"{field}:" in str(info.value)


def test_serve_refuses_bad_config_with_the_field_named(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("port = 'eighty'\n")
    proc = subprocess.run([sys.executable, "-m", "pixelgate", "--config", str(cfg), "serve"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0
    assert "port" in proc.stderr and "invalid configuration" in proc.stderr


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_unknown_variables_are_named_with_a_guess():
    from pixelgate.config import unknown_variables

    found = unknown_variables({"PIXELGATE_PORTT": "1", "PIXELGATE_SIMULATE_VENDOR": "true", "PIXELGATE_PORT": "1",
                               "PIXELGATE_CHANNELS__0__NAME": "x", "PIXELGATE_CONFIG": "f", "OTHER": "y"})
    assert found == ["PIXELGATE_PORTT is not a pixelgate setting; did you mean PIXELGATE_PORT?",
                     "PIXELGATE_SIMULATE_VENDOR is not a pixelgate setting; did you mean PIXELGATE_SIMULATE_VENDORS?"]


def test_channel_options_are_the_providers_own_and_refused_where_it_takes_none():
    from pixelgate.config import ChannelConfig
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="takes no options"):
        ChannelConfig(name="s", provider="sandbox", models=["sandbox-image"], options={"region": "x"})
    assert ChannelConfig(name="s", provider="sandbox", models=["sandbox-image"]).options == {}
