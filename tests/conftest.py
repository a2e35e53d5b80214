"""Fixtures: a real gateway on loopback (uvicorn in a thread, lifespan on), on SQLite and on
PostgreSQL, plus strict vendor emulators. Nothing here reaches beyond 127.0.0.1."""

from __future__ import annotations

import asyncio
import atexit
import functools
import base64
import io
import os
import secrets
import shutil
import tempfile
from datetime import date
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest
import uvicorn
from PIL import Image

from pixelgate.app import create_app
from pixelgate.config import Settings
from pixelgate.simulators.openai_images import OpenAIEmulatorState
from pixelgate.simulators.openai_images import create_app as create_openai_emulator
from tests.emulators.server import ABANDONED, run_in_thread, serve

pytest_plugins = ["tests.s3server"]  # S3 servers on loopback: s3_store (moto), seaweed_store

PG_DSN = os.environ.get("PIXELGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("PIXELGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
"""The servers the tests use for real; another machine names its own in these variables."""
ADMIN_KEY = "pg-test-admin-key-000000000000000000000000"

for _name in [n for n in os.environ if n.startswith("PIXELGATE_")]:
    del os.environ[_name]  # the tests configure the gateway explicitly


def _pg(sql: str, database: str = "test") -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(f"{PG_DSN}/{database}")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run_apart(run())


def _run_apart(coro) -> None:
    """asyncio.run, in a thread of its own when the caller is inside an event loop (Playwright's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def pytest_collection_modifyitems(items) -> None:
    """Tests marked long go first, longest first: xdist hands tests out in this order, so the
    processes start the minute-long ones together instead of one process ending the run alone."""
    def seconds(item) -> float:
        mark = item.get_closest_marker("long")
        return 0 if mark is None else (mark.args[0] if mark.args else 10)
    items.sort(key=seconds, reverse=True)  # stable: each group keeps its order


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


_POOL: list[str] = []
"""PostgreSQL databases of this test process, emptied and ready again. Creating and dropping a
database costs PostgreSQL a checkpoint (about a second together); emptying one, milliseconds."""


def _empty(name: str) -> None:
    """Every table emptied and every sequence reset, as a new database would be (the schema stays
    at the newest migration, which the gateway's start-up then finds up to date)."""
    _pg(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
        "AND pid <> pg_backend_pid()")
    _pg("DO $$ DECLARE t text; BEGIN FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename <> 'alembic_version' LOOP EXECUTE format('TRUNCATE %I RESTART IDENTITY CASCADE', t); "
        "END LOOP; END $$", database=name)


@atexit.register
def _drop_pool() -> None:
    for name in _POOL:
        try:
            _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:  # the server may be gone already; the names are random
            pass


@functools.cache
def _sqlite_template() -> Path:
    """An SQLite database migrated once per test process, copied for each gateway (a copy is a
    millisecond; migrating, 50). PostgreSQL's are pooled instead (see _POOL)."""
    from pixelgate.db.session import make_engine, migrate

    path = Path(tempfile.mkdtemp(prefix="pixelgate-template-")) / "gateway.db"
    atexit.register(shutil.rmtree, path.parent, True)

    async def run() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    _run_apart(run())
    return path


@contextmanager
def database(backend: str, tmp_path) -> Iterator[str]:
    if backend == "sqlite":
        shutil.copyfile(_sqlite_template(), tmp_path / "gateway.db")
        yield f"sqlite+aiosqlite:///{tmp_path}/gateway.db"
        return
    abandoned = len(ABANDONED)
    if _POOL:
        name = _POOL.pop()
    else:
        name = "pixelgate_" + secrets.token_hex(6)
        _pg(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://{PG_DSN.split('://', 1)[1]}/{name}"
    finally:
        try:
            if len(ABANDONED) > abandoned:  # a gateway left running may still write here
                raise RuntimeError("not to be reused")
            _empty(name)
            _POOL.append(name)
        except Exception:
            _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Gateway:
    base_url: str
    settings: Settings
    app: Any

    @property
    def services(self):
        return self.app.state.services

    def run(self, coro, timeout: float = 30):
        """Await `coro` on the gateway's own event loop (its database pool lives there)."""
        loop = self.services.tasks.worker.loop_task.get_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def http(self, key: str | None = ADMIN_KEY, headers: dict | None = None, **kwargs) -> httpx.Client:
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers={**auth, **(headers or {})}, timeout=60, **kwargs)

    def sdk(self, key: str = ADMIN_KEY, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=key, max_retries=0, **kwargs)

    def create_key(self, **fields) -> str:
        with self.http() as client:
            resp = client.post("/admin/keys", json={"name": "test", **fields})
            assert resp.status_code == 201, resp.text
            return resp.json()["key"]

    def set_price(self, model: str, amount: str, **fields) -> None:
        with self.http() as admin:
            assert admin.post("/admin/prices", json={"model": model, "amount": amount, **fields}).status_code in (200, 201)

    def paying_key(self, balance: str | None, **fields) -> tuple[int, str]:
        """A new account with this balance, and a key that pays from it: (account id, key)."""
        with self.http() as admin:
            account = admin.post("/admin/accounts", json={"name": "acct", "balance": balance, **fields}).json()
            key = admin.post("/admin/keys", json={"name": "payer", "account_id": account["id"]}).json()["key"]
        return account["id"], key

    def requests_log(self) -> list[dict]:
        with self.http() as client:
            return client.get("/admin/requests", params={"limit": 1000}).json()["data"]

    def log_row(self, request_id: str) -> dict:
        rows = [r for r in self.requests_log() if r["id"] == request_id]
        assert rows, f"no log row for {request_id}"
        return rows[0]


@contextmanager
def run_gateway(settings: Settings) -> Iterator[Gateway]:
    app = create_app(settings)
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    with run_in_thread(config, startup_timeout=30) as base:
        yield Gateway(base, settings, app)


@contextmanager
def gateway_factory(backend: str, tmp_path_factory):
    """make(channels=[...], **settings) -> a running Gateway on a fresh database, each stopped when
    the block ends."""
    with ExitStack() as stack:
        def make(**overrides) -> Gateway:
            tmp = tmp_path_factory.mktemp("gw")
            url = stack.enter_context(database(backend, tmp))
            # unpriced="free": most tests are not about money (tests/services/test_billing.py is)
            # retired_models "upstream": most tests exercise a model's own wire format, against
            # emulators whose calendar is LEGACY_DAY (tests/test_catalog.py is about retirement)
            fields: dict[str, Any] = dict(data_dir=tmp, database_url=url, admin_key=ADMIN_KEY,
                                          cache_seconds=0, poll_interval_seconds=0.05, unpriced="free",
                                          retired_models={"*": "upstream"})
            fields.update(overrides)
            return stack.enter_context(run_gateway(Settings(**fields)))
        yield make


@pytest.fixture
def make_gateway(backend, tmp_path_factory):
    """make_gateway(channels=[...], **settings) -> a running Gateway on a fresh database."""
    with gateway_factory(backend, tmp_path_factory) as make:
        yield make


@pytest.fixture(scope="module")
def make_module_gateway(backend, tmp_path_factory):
    """make_gateway for the tests of a module to share: for cases (many, parametrised) that are
    refused before any call and leave nothing behind, where a gateway each cost more than the test."""
    with gateway_factory(backend, tmp_path_factory) as make:
        yield make


@pytest.fixture
def gateway(make_gateway) -> Gateway:
    """A gateway with nothing but the sandbox."""
    return make_gateway()


@pytest.fixture(scope="module")
def module_gateway(make_module_gateway) -> Gateway:
    """A sandbox gateway shared by a module's cases that change nothing in it."""
    return make_module_gateway()


@pytest.fixture
def openai_upstream() -> Iterator[tuple[OpenAIEmulatorState, str]]:
    state = OpenAIEmulatorState(today=LEGACY_DAY)
    with serve(create_openai_emulator(state)) as base:
        yield state, base + "/v1"


OPENAI_MODELS = ["dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"]
LEGACY_DAY = date(2025, 10, 1)
"""A day before the vendors retired the models most tests use (imagen-3.0: 2025-11-10)."""


def openai_channel(base_url: str, name: str = "openai", **fields) -> dict:
    return {"name": name, "provider": "openai", "base_url": base_url, "api_key": "sk-emulator-key",
            "models": OPENAI_MODELS, **fields}


@pytest.fixture
def openai_gateway(make_gateway, openai_upstream) -> tuple[Gateway, OpenAIEmulatorState]:
    state, base = openai_upstream
    return make_gateway(channels=[openai_channel(base)]), state


@pytest.fixture(scope="module")
def module_openai_gateway(make_module_gateway) -> Iterator[tuple[Gateway, OpenAIEmulatorState]]:
    state = OpenAIEmulatorState(today=LEGACY_DAY)
    with serve(create_openai_emulator(state)) as base:
        yield make_module_gateway(channels=[openai_channel(base + "/v1")]), state


@pytest.fixture
def refusing_openai_gateway(module_openai_gateway) -> tuple[Gateway, OpenAIEmulatorState]:
    """openai_gateway shared by a module's refusal cases: the emulator's log starts empty for each."""
    gateway, state = module_openai_gateway
    state.requests.clear()
    return gateway, state


def openai_error(resp: httpx.Response, status: int, *, code: str | None = None, param: str | None = None) -> dict:
    """The error of an OpenAI-shaped answer, checked for status (and code and param, if given)."""
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    return err


def b64_images(resp: httpx.Response) -> list[Image.Image]:
    """The images of a 200 OpenAI-shaped answer with b64_json."""
    assert resp.status_code == 200, resp.text
    return [Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) for item in resp.json()["data"]]


def png(width: int = 64, height: int = 64, alpha: bool = False, colour=(200, 30, 30)) -> bytes:
    img = Image.new("RGBA" if alpha else "RGB", (width, height), colour + ((0,) if alpha else ()))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def mask_png(width: int = 64, height: int = 64) -> bytes:
    """An OpenAI mask: the left half transparent (edit), the right half opaque (keep)."""
    img = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()
