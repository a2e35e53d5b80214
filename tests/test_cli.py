"""The command line manages keys and channels on the same database as the server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import httpx
import pytest

from pixelgate import simulators

from tests.cli import Ran, pixelgate
from tests.conftest import _pg, database
from tests.test_serve import _start, _stop, _wait_up


@pytest.fixture
def cli(backend, tmp_path):
    with database(backend, tmp_path) as url:
        env = {**os.environ, "PIXELGATE_DATABASE_URL": url, "PIXELGATE_DATA_DIR": str(tmp_path / "data")}

        def run(*args: str, ok: bool = True) -> Ran:
            proc = pixelgate(*args, cwd=tmp_path, env=env)
            if ok:
                assert proc.returncode == 0, proc.stderr
            return proc

        run.env = env
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


def _channels(cli, *args: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(cli("channels", "list", *args).stdout)}


HOUSE = ('[[channels]]\nname = "house"\nprovider = "openai-compatible"\nbase_url = "https://gw.example/v1"\n'
         'api_key = "k"\nmodels = ["house-model"]\n')


def test_management_commands_change_only_what_they_name(cli, tmp_path):
    # migrate makes the schema and nothing else: no admin key, no channel (serve makes those)
    assert "created admin key" not in cli.migrated.stderr
    assert json.loads(cli("keys", "list").stdout) == [] and _channels(cli) == {}
    (tmp_path / "gw.toml").write_text(HOUSE)
    applied = cli("config", "apply", "--config", "gw.toml").stdout
    # a config file is a production set-up: the free sandbox models stay off unless it says so
    assert "channel 'house': added" in applied and "sandbox" not in applied
    before = _channels(cli)
    # a second terminal without the gateway's configuration: the channels it declares stay
    created = cli("keys", "create", "--name", "me")
    assert created.stdout.startswith("id ") and "channel" not in created.stderr
    listed = cli("keys", "list")
    assert [k["name"] for k in json.loads(listed.stdout)] == ["me"] and "channel" not in listed.stderr
    cli("usage", "--by", "model")
    assert _channels(cli) == before and before["house"]["enabled"] and before["house"]["source"] == "config"


def test_config_apply_reports_what_it_changes_and_removes_only_with_prune(cli, tmp_path):
    config = tmp_path / "gw.toml"
    config.write_text("sandbox = true\n" + HOUSE + HOUSE.replace('"house"', '"old"') + HOUSE.replace('"house"', '"mine"'))
    cli("channels", "add", "--name", "mine", "--provider", "sandbox", "--models", "sandbox-image")  # made at run time
    first = cli("config", "apply", "--config", "gw.toml").stdout
    assert "'house': added" in first and "'old': added" in first and "'mine': added" not in first
    assert "channel 'mine': the configuration's is not applied" in first  # the run-time channel wins
    assert _channels(cli)["mine"]["provider"] == "sandbox"
    # house changes, old is dropped, new is declared
    config.write_text("sandbox = true\n" + HOUSE.replace('"k"', '"k2"') + "priority = 5\n" + HOUSE.replace('"house"', '"new"'))
    dry = cli("config", "apply", "--config", "gw.toml", "--dry-run").stdout
    assert "channel 'house': would change (api_key, priority)" in dry and "channel 'new': would add" in dry
    assert "k2" not in dry  # a changed key is named, never shown
    assert "channel 'old' is no longer in the configuration but still serves" in dry
    assert _channels(cli)["house"]["priority"] == 0 and "new" not in _channels(cli)
    applied = cli("config", "apply", "--config", "gw.toml").stdout
    assert "channel 'house': changed (api_key, priority)" in applied and "channel 'new': added" in applied
    assert "`pixelgate config apply --prune` (or `pixelgate channels remove old`) removes it" in applied
    assert _channels(cli)["house"]["priority"] == 5 and _channels(cli)["old"]["enabled"]
    pruned = cli("config", "apply", "--config", "gw.toml", "--prune").stdout
    assert pruned.strip() == "pixelgate: channel 'old': removed (not in the configuration)"
    assert set(_channels(cli)) == {"house", "new", "mine", "sandbox"}  # the run-time channel stays
    assert "match the configuration" in cli("config", "apply", "--config", "gw.toml").stdout
    # a switch turned off disables its built-in channel: it is not removed until --prune
    off = pixelgate("config", "apply", "--config", "gw.toml", cwd=tmp_path, env={**cli.env, "PIXELGATE_SANDBOX": "false"})
    assert "channel 'sandbox': disabled (sandbox is off" in off.stdout and not _channels(cli)["sandbox"]["enabled"]


def test_accounts(cli):
    created = json.loads(cli("accounts", "create", "--name", "acme", "--balance", "10", "--markup", "1.2").stdout)
    assert created["name"] == "acme" and created["balance"] == "10" and created["markup"] == "1.2"
    account = str(created["id"])
    topped = json.loads(cli("accounts", "topup", account, "2.5", "--reference", "inv-1").stdout)
    assert topped["balance"] == "12.5" and topped["available"] == "12.5"
    again = cli("accounts", "topup", account, "2.5", "--reference", "inv-1", ok=False)
    assert again.returncode != 0 and "Top-up 'inv-1' was already applied" in again.stderr
    assert json.loads(cli("accounts", "show", account).stdout)["balance"] == "12.5"
    [entry] = json.loads(cli("accounts", "ledger", account).stdout)
    assert entry["kind"] == "topup" and entry["amount"] == "2.5" and entry["request_id"] == "inv-1"
    key = cli("keys", "create", "--name", "payer", "--account", account, "--rpm", "30", "--max-concurrent", "2",
              "--group", "resellers")
    [mine] = [k for k in json.loads(cli("keys", "list").stdout) if k["name"] == "payer"]
    assert key.returncode == 0 and (mine["account_id"], mine["rate_limit_rpm"], mine["max_concurrent"],
                                     mine["group"]) == (created["id"], 30, 2, "resellers")
    # refused as the admin API refuses them, naming the option
    for args, says in ((("accounts", "show", "999"), "No account with id 999"),
                       (("accounts", "ledger", "999"), "No account with id 999"),
                       (("keys", "create", "--name", "x", "--account", "999"), "No account with id 999"),
                       (("keys", "create", "--name", "x", "--max-concurrent", "0"), "--max-concurrent"),
                       (("accounts", "create", "--name", "x", "--balance", "lots"), "--balance"),
                       (("accounts", "create", "--name", "x", "--markup", "0"), "--markup"),
                       (("accounts", "topup", account, "ten"), "AMOUNT")):
        refused = cli(*args, ok=False)
        assert refused.returncode != 0 and says in refused.stderr, (args, refused.stderr)
    assert [k["name"] for k in json.loads(cli("keys", "list").stdout)] == ["payer"]


def test_usage_by_key_names_the_keys(make_gateway):
    gateway = make_gateway()
    key = gateway.create_key(name="alice")
    with gateway.http(key) as client:
        assert client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "p",
                                                            "size": "32x32"}).status_code == 200
    [row] = [r for r in gateway.requests_log() if r["status"] == 200]  # written to the database now
    env = _clean_env(PIXELGATE_DATABASE_URL=gateway.settings.database_url,
                     PIXELGATE_DATA_DIR=str(gateway.settings.data_dir))
    out = pixelgate("usage", "--by", "key", cwd=gateway.settings.data_dir, env=env).stdout
    assert f"alice (id {row['key_id']})" in out.splitlines()[1]


def test_every_command_says_what_it_does():
    from pixelgate.cli import main

    def walk(group, path=()):
        for name, command in group.commands.items():
            yield (*path, name), command
            if hasattr(command, "commands"):
                yield from walk(command, (*path, name))

    undocumented = [" ".join(p) for p, c in walk(main) if not (c.help or "").strip()]
    assert undocumented == []


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
    assert bad.returncode != 0 and "'--provider': 'nope' is not one of 'a" in bad.stderr and "'bfl'" in bad.stderr
    cli("channels", "remove", "up")
    assert "up" not in [c["name"] for c in json.loads(cli("channels", "list").stdout)]


def test_usage(cli):
    out = cli("usage", "--by", "model").stdout
    assert out.splitlines()[0].split()[:3] == ["model", "requests", "images"]
    assert out.splitlines()[-1].split()[0] == "total"
    assert cli("usage", "--by", "nonsense", ok=False).returncode != 0


def _pixelgate(*args: str, cwd, env: dict | None = None) -> Ran:
    return pixelgate(*args, cwd=cwd, env=_clean_env(**(env or {})))


def _process(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m pixelgate *args` as a process of its own: what a user's shell sees."""
    return subprocess.run([sys.executable, "-m", "pixelgate", *args], capture_output=True, text=True,
                          env=_clean_env(**(env or {})), cwd=cwd, timeout=60)


def test_management_commands_refuse_to_invent_a_database_elsewhere(tmp_path):
    proc = _pixelgate("keys", "list", cwd=tmp_path)
    assert proc.returncode != 0 and "no gateway database at" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "data" / "pixelgate.db").exists()
    migrated = _pixelgate("migrate", cwd=tmp_path)
    assert migrated.returncode == 0 and f"pixelgate: database sqlite+aiosqlite:///{tmp_path}/data/pixelgate.db" in migrated.stderr
    listed = _pixelgate("keys", "list", cwd=tmp_path)
    assert listed.returncode == 0 and "pixelgate: database sqlite" in listed.stderr


def test_management_commands_refuse_a_database_without_the_gateways_tables(tmp_path):
    (tmp_path / "other.db").write_bytes(b"")  # a file is there, but it is not the gateway's
    sqlite = f"sqlite+aiosqlite:///{tmp_path}/other.db"
    with database("postgresql", tmp_path) as postgresql:  # emptied of every table: nobody migrated it
        _pg("DROP SCHEMA public CASCADE; CREATE SCHEMA public", database=postgresql.rsplit("/", 1)[1])
        for url in (sqlite, postgresql):
            proc = _pixelgate("channels", "list", cwd=tmp_path, env={"PIXELGATE_DATABASE_URL": url})
            assert proc.returncode != 0 and "has no pixelgate tables" in proc.stderr and "migrate" in proc.stderr
            assert "created admin key" not in proc.stderr
            assert _pixelgate("migrate", cwd=tmp_path, env={"PIXELGATE_DATABASE_URL": url}).returncode == 0
            assert _pixelgate("channels", "list", cwd=tmp_path, env={"PIXELGATE_DATABASE_URL": url}).returncode == 0


# Nothing listens on port 1, so none of these can touch a real database.
@pytest.mark.parametrize("url, says", [
    ("postgres://nobody@127.0.0.1:1/x", "names no driver pixelgate has: write postgresql+asyncpg://"),
    ("postgresql://nobody@127.0.0.1:1/x", "names no driver pixelgate has"),  # psycopg2's URL
    ("sqlite:///{tmp}/gw.db", "names no driver pixelgate has"),  # the blocking sqlite3
    ("mysql+aiomysql://nobody@127.0.0.1:1/x", "names no driver pixelgate has"),
    ("no-scheme-at-all", "is not valid"),
    ("postgresql+asyncpg://nobody@127.0.0.1:port/x", "is not valid"),
    ("postgresql+asyncpg://nobody@127.0.0.1:1/x?sslmode=require", "option the driver does not take: 'sslmode'"),
    ("postgresql+asyncpg://nobody@127.0.0.1:1/x", "cannot use the database"),  # nothing listens there
])
def test_database_mistakes_are_one_line(tmp_path, url, says):
    url = url.format(tmp=tmp_path)
    for args in (("migrate",), ("serve", "--port", "0")):
        proc = _pixelgate(*args, cwd=tmp_path, env={"PIXELGATE_DATABASE_URL": url})
        assert proc.returncode != 0 and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr  # the database line at most, no traceback


def test_the_installed_command_reports_a_mistake_in_one_line(tmp_path):
    # the tests above run the command in this process; this one is what a shell sees
    proc = _process("migrate", cwd=tmp_path, env={"PIXELGATE_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/x"})
    assert proc.returncode == 1 and "cannot use the database" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2 and "Traceback" not in proc.stderr, proc.stderr
    assert _process("--version", cwd=tmp_path).stdout.startswith("pixelgate, version ")


def test_unknown_variables_are_reported_with_a_guess(tmp_path):
    proc = _pixelgate("migrate", cwd=tmp_path, env={"PIXELGATE_DATABSE_URL": "x"})
    assert "PIXELGATE_DATABSE_URL is not a pixelgate setting; did you mean PIXELGATE_DATABASE_URL?" in proc.stderr


def test_version_and_config_after_the_subcommand(tmp_path):
    version = _pixelgate("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("pixelgate, version ")
    (tmp_path / "bad.toml").write_text('port = 1\nworkers = 99\n')  # workers is at most 64: refused
    after = _pixelgate("serve", "--config", "bad.toml", cwd=tmp_path)
    assert after.returncode != 0 and "workers" in after.stderr and "bad.toml" in after.stderr
    # the file is read, wherever --config stands: serve listens where it says, and the
    # management commands use the database it names
    port = _free_port()
    (tmp_path / "gw.toml").write_text(f'port = {port}\ndata_dir = "gw-data"\nadmin_key = "pg-config-admin-key"\n')
    proc = _start(["serve", "--config", "gw.toml"], tmp_path, _clean_env())
    try:
        _wait_up(f"http://127.0.0.1:{port}", proc)
    finally:
        out = _stop(proc)
    assert f"listening on http://127.0.0.1:{port} " in out and str(tmp_path / "gw-data" / "pixelgate.db") in out
    assert "no channel is enabled, so no model answers" in out  # a config file: no sandbox unless asked
    for args in (("keys", "list", "--config", "gw.toml"), ("--config", "gw.toml", "keys", "list"),
                 ("channels", "list", "--config", "gw.toml"), ("usage", "--config", "gw.toml"),
                 ("migrate", "--config", "gw.toml")):
        proc = _pixelgate(*args, cwd=tmp_path)
        assert proc.returncode == 0 and str(tmp_path / "gw-data" / "pixelgate.db") in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "data").exists()  # nothing invented at the default place


def test_adding_a_channel_warns_of_a_missing_key_and_price(cli):
    added = cli("channels", "add", "--name", "fresh", "--provider", "openai-compatible", "--base-url",
                "https://gateway.example/v1", "--models", "house-model,flux-2-pro")
    # every catalog model is priced (flux-2-pro too); a name only the upstream knows is not
    assert "has no API key" in added.stderr and "no price for house-model" in added.stderr
    assert "flux-2-pro" not in added.stderr.split("no price for")[1]


def test_serve_warns_of_config_file_channels_that_cannot_serve(tmp_path):
    (tmp_path / "gw.toml").write_text('unpriced = "refuse"\n[[channels]]\nname = "flux"\nprovider = "bfl"\n'
                                      'models = ["flux-2-pro", "V3"]\n'
                                      '[[channels]]\nname = "house"\nprovider = "openai-compatible"\n'
                                      'base_url = "https://gateway.example/v1"\napi_key = "k"\nmodels = ["house-model"]\n')
    proc = _start(["serve", "--port", "0", "--config", "gw.toml"], tmp_path, _clean_env())
    try:
        said = _until_started(proc)
    finally:
        _stop(proc)
    assert "pixelgate: warning: channel 'flux' has no API key" in said
    assert "pixelgate: warning: channel 'house': no price for house-model" in said
    assert "channel 'flux': V3 belongs to ideogram" in said


def test_a_vendor_model_on_a_sandbox_channel_is_said_to_miss_the_vendors_own_api(cli):
    added = cli("channels", "add", "--name", "offline", "--provider", "sandbox", "--models", "V3,midjourney,dall-e-3")
    assert "V3 belongs to ideogram" in added.stderr and "the Ideogram API (/ideogram)" in added.stderr
    assert "midjourney belongs to midjourney" in added.stderr and "simulate_vendors" in added.stderr
    assert "dall-e-3 belongs" not in added.stderr  # OpenAI's own API reaches any channel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}, **extra}


def test_a_port_held_by_another_gateway_is_refused(tmp_path):
    # Workers share their port with SO_REUSEPORT; a second gateway must not join them silently
    # (the kernel would split the clients between two databases).
    port = _free_port()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _start(["serve", "--port", str(port)], tmp_path / "a", _clean_env())
    try:
        _wait_up(f"http://127.0.0.1:{port}", first)
        for workers in ("1", "2"):
            second = _pixelgate("serve", "--port", str(port), "--workers", workers, cwd=tmp_path / "b")
            assert second.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in second.stderr, second.stderr
            assert "listening on" not in second.stdout
    finally:
        _stop(first)


def _until_started(proc: subprocess.Popen) -> str:
    """What serve printed up to uvicorn's start (read line by line: communicate() would skip
    what readline() buffered)."""
    lines = []
    while "Started server process" not in (line := proc.stdout.readline()):
        assert line, "serve ended before starting: " + "".join(lines)
        lines.append(line)
    return "".join(lines)


def test_serve_says_where_it_listens_and_how_to_reach_more_than_the_sandbox(tmp_path):
    proc = _start(["serve", "--port", "0"], tmp_path, _clean_env())
    try:
        said = _until_started(proc)
        port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+) ", said).group(1))
        assert port != 0
        _wait_up(f"http://127.0.0.1:{port}", proc)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
    finally:
        _stop(proc)
    assert "only the sandbox-* models answer" in said and "PIXELGATE_SIMULATE_VENDORS=true" in said
    proc = _start(["serve", "--port", "0"], tmp_path, _clean_env(PIXELGATE_SIMULATE_VENDORS="true"))
    try:
        said = _until_started(proc)
    finally:
        _stop(proc)
    assert "listening on" in said and "only the sandbox-* models answer" not in said


def test_a_taken_port_is_one_line_and_nothing_claims_to_listen(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _pixelgate("serve", "--port", str(taken.getsockname()[1]), cwd=tmp_path)
    assert proc.returncode != 0 and "cannot listen on 127.0.0.1" in proc.stderr
    assert "listening on" not in proc.stdout


def test_serve_on_a_taken_port_writes_nothing(tmp_path):
    (tmp_path / "gw.toml").write_text(HOUSE)
    assert _pixelgate("migrate", cwd=tmp_path).returncode == 0  # the gateway's database, empty
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _pixelgate("serve", "--port", str(taken.getsockname()[1]), "--config", "gw.toml", cwd=tmp_path,
                          env={"PIXELGATE_SIMULATE_VENDORS": "true"})
    assert proc.returncode != 0 and "cannot listen on 127.0.0.1" in proc.stderr
    assert "created admin key" not in proc.stdout + proc.stderr and "channel" not in proc.stderr
    assert json.loads(_pixelgate("keys", "list", cwd=tmp_path).stdout) == []
    assert json.loads(_pixelgate("channels", "list", cwd=tmp_path).stdout) == []


@pytest.mark.long(15)
def test_a_restart_without_a_channel_or_switch_reports_them_and_deletes_nothing(tmp_path):
    (tmp_path / "gw.toml").write_text(HOUSE)
    proc = _start(["serve", "--port", "0", "--config", "gw.toml"], tmp_path, _clean_env(PIXELGATE_SIMULATE_VENDORS="true"))
    try:
        said = _until_started(proc)
    finally:
        _stop(proc)
    assert "channel 'house': added" in said and "channel 'simulated-openai': added" in said
    proc = _start(["serve", "--port", "0"], tmp_path, _clean_env())  # neither the file nor the switch
    try:
        said = _until_started(proc)
    finally:
        _stop(proc)
    assert ("warning: channel 'house' is no longer in the configuration but still serves: "
            "`pixelgate config apply --prune` (or `pixelgate channels remove house`) removes it") in said
    assert "channel 'simulated-openai': disabled (simulate_vendors is off" in said
    channels = {c["name"]: c for c in json.loads(_pixelgate("channels", "list", cwd=tmp_path).stdout)}
    simulated = [c for name, c in channels.items() if name.startswith("simulated-")]
    assert channels["house"]["enabled"] and len(simulated) == len(simulators.VENDORS) and not any(c["enabled"] for c in simulated)
