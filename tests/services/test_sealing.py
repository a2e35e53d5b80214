"""Secrets at rest (services.sealing): channel keys, webhook secrets and the URL-signing secret
are sealed in the database, opened transparently, sealed at start-up when a row predates
sealing, resealed by `pixelgate secrets rotate`, and a wrong key stops the start, named."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import threading

import pytest
from sqlalchemy import text

from pixelgate.db import sealed
from pixelgate.db.sealed import PREFIX, Keyring, SealingError, key_id
from pixelgate.db.session import make_engine
from pixelgate.services import sealing
from tests.cli import Ran, pixelgate
from tests.conftest import database, openai_channel

KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()


def _raw(url: str, sql: str) -> list[tuple]:
    async def read():
        db = make_engine(url)
        try:
            async with db.connect() as conn:
                return [tuple(r) for r in (await conn.execute(text(sql))).all()]
        finally:
            await db.dispose()
    return asyncio.run(read())


def test_seal_and_open_round_trip_and_refuse_tampering():
    ring = Keyring()
    kid = ring.add(b"k" * 32, primary=True)
    sealed = ring.seal("sk-live-123")
    assert sealed.startswith(f"{PREFIX}{kid}:") and "sk-live" not in sealed
    assert ring.open(sealed) == "sk-live-123" and ring.open("plain-legacy") == "plain-legacy"
    assert ring.seal("x") != ring.seal("x")  # a fresh nonce each time
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SealingError, match="damaged"):
        ring.open(tampered)
    with pytest.raises(SealingError, match="does not have"):
        Keyring().open(sealed)
    with pytest.raises(SealingError, match="32 bytes"):
        ring.add(b"short")


def test_the_database_holds_no_secret_in_plain_text(make_gateway, openai_upstream):
    state, base = openai_upstream
    gateway = make_gateway(channels=[openai_channel(base)])  # api_key sk-emulator-key
    key = gateway.create_key(name="hooks")
    with gateway.http(key=key) as client:
        made = client.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x"})
        secret = client.get("/v1/webhooks/default/secret").json()["key"]
    assert made.status_code == 200 and state.requests[-1].headers["authorization"] == "Bearer sk-emulator-key"
    assert secret.startswith("whsec_")
    url = gateway.settings.database_url
    stored = [v for (v,) in _raw(url, "select api_key from channels where api_key is not null")]
    stored += [v for (v,) in _raw(url, "select webhook_secret from api_keys where webhook_secret is not null")]
    stored += [v for (v,) in _raw(url, "select value from meta")]
    assert len(stored) >= 3 and all(v.startswith(PREFIX) for v in stored), stored
    assert not any("sk-emulator-key" in v or secret in v for v in stored)


def _pixelgate(env: dict, cwd, *args: str) -> Ran:
    return pixelgate(*args, cwd=cwd, env=env)


def _process(env: dict, cwd, *args: str) -> subprocess.CompletedProcess:
    """A command in a process of its own, whose keyring holds only the keys it was given (the test
    process's keyring keeps every key the tests configured)."""
    return subprocess.run([sys.executable, "-m", "pixelgate", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=60)


def test_plain_rows_are_sealed_rotation_reseals_and_a_wrong_key_is_named(backend, tmp_path):
    with database(backend, tmp_path) as url:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")},
               "PIXELGATE_DATABASE_URL": url, "PIXELGATE_DATA_DIR": str(tmp_path / "data"),
               "PIXELGATE_ENCRYPTION_KEY": KEY_A}
        assert _pixelgate(env, tmp_path, "migrate").returncode == 0
        assert _pixelgate(env, tmp_path, "channels", "add", "--name", "up", "--provider", "openai",
                          "--api-key", "sk-first", "--models", "gpt-image-2").returncode == 0
        # a row as an older pixelgate left it: in plain text
        async def plant():
            db = make_engine(url)
            async with db.begin() as conn:
                await conn.execute(text("update channels set api_key = 'sk-legacy-plain' where name = 'up'"))
            await db.dispose()
        asyncio.run(plant())
        assert _pixelgate(env, tmp_path, "migrate").returncode == 0
        [(sealed,)] = _raw(url, "select api_key from channels where name = 'up'")
        assert sealed.startswith(f"{PREFIX}{key_id(b'A' * 32)}:")

        wrong = _process({**env, "PIXELGATE_ENCRYPTION_KEY": KEY_B}, tmp_path, "migrate")
        assert wrong.returncode != 0 and key_id(b"A" * 32) in wrong.stderr and "Traceback" not in wrong.stderr

        rotating = {**env, "PIXELGATE_ENCRYPTION_KEY": KEY_B, "PIXELGATE_ENCRYPTION_KEYS_PREVIOUS": f'["{KEY_A}"]'}
        rotated = _pixelgate(rotating, tmp_path, "secrets", "rotate")
        assert rotated.returncode == 0 and "resealed" in rotated.stdout, rotated.stderr
        values = [v for (v,) in _raw(url, "select api_key from channels where api_key is not null")]
        values += [v for (v,) in _raw(url, "select value from meta")]
        assert values and all(v.startswith(f"{PREFIX}{key_id(b'B' * 32)}:") for v in values), values
        after = _pixelgate({**env, "PIXELGATE_ENCRYPTION_KEY": KEY_B}, tmp_path, "channels", "list")
        assert after.returncode == 0, after.stderr
        old = _process(env, tmp_path, "channels", "list")
        assert old.returncode != 0 and key_id(b"B" * 32) in old.stderr


def test_without_a_key_one_is_made_in_the_data_dir_and_kept(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")},
           "PIXELGATE_DATA_DIR": str(tmp_path / "data")}
    assert _pixelgate(env, tmp_path, "migrate").returncode == 0
    assert _pixelgate(env, tmp_path, "channels", "add", "--name", "up", "--provider", "openai",
                      "--api-key", "sk-kept", "--models", "gpt-image-2").returncode == 0
    key_file = tmp_path / "data" / "encryption.key"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    listed = _process(env, tmp_path, "channels", "list")  # a second process opens what the first sealed
    assert listed.returncode == 0 and "sk-kept" not in listed.stdout, listed.stderr


def test_instances_starting_together_on_one_data_dir_make_one_key_file(tmp_path, monkeypatch):
    """Of instances (here threads) starting at once without a key, one makes the file and every
    one reads the same key from it, never a half-written file."""
    monkeypatch.setattr(sealed, "KEYRING", Keyring())  # not the one this process's gateways use
    for attempt in range(30):
        data_dir, barrier, ids = tmp_path / str(attempt), threading.Barrier(8), []

        def start() -> None:
            barrier.wait()
            try:
                ids.append(sealing.configure(None, None, data_dir))
            except SealingError as exc:
                ids.append(str(exc))

        threads = [threading.Thread(target=start) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(ids)) == 1 and len(ids[0]) == 8, ids
        assert [p.name for p in data_dir.iterdir()] == ["encryption.key"]  # no temporary file left
        assert oct((data_dir / "encryption.key").stat().st_mode & 0o777) == "0o600"


def test_instances_sealing_plain_rows_at_once_agree(backend, tmp_path, monkeypatch):
    """Start-up sealing on several instances at once: each value ends sealed once, and opens to
    what it was."""
    from pixelgate.db.models import ChannelRow
    from pixelgate.db.session import migrate, sessionmaker

    ring = Keyring()
    ring.add(b"C" * 32, primary=True)
    monkeypatch.setattr(sealed, "KEYRING", ring)
    plain = {f"ch{i}": f"sk-plain-{i:04d}-0123456789" for i in range(40)}
    with database(backend, tmp_path) as url:
        async def run() -> list[tuple]:
            db = make_engine(url)
            try:
                await migrate(db)
                async with sessionmaker(db)() as session, session.begin():
                    session.add_all([ChannelRow(name=name, provider="openai", models=[], source="admin")
                                     for name in plain])
                async with db.begin() as conn:  # keys as an older pixelgate left them: in plain text
                    for name, key in plain.items():
                        await conn.execute(text("update channels set api_key = :k where name = :n"),
                                           {"n": name, "k": key})
                engines = [make_engine(url) for _ in range(3)]
                try:
                    await asyncio.gather(*(sealing.reseal(sessionmaker(e)) for e in engines))
                finally:
                    for e in engines:
                        await e.dispose()
                async with db.connect() as conn:
                    return [tuple(r) for r in (await conn.execute(text("select name, api_key from channels"))).all()]
            finally:
                await db.dispose()
        rows = asyncio.run(run())
    assert len(rows) == len(plain)
    for name, stored in rows:
        assert stored.startswith(f"{PREFIX}{key_id(b'C' * 32)}:") and ring.open(stored) == plain[name]
