"""The image store failing after the vendor finished a task's images, for real: an S3 server
behind a switch that takes it down (connections closed) or hangs it (connections accepted, never
answered), and brings it back; a local storage directory that stops being one; an instance
killed (SIGKILL) in the middle of the outage.

The promise: never lose a finished image, never charge twice. A task whose vendor finished but
whose images cannot be stored stays running ("storing"), keeps what the vendor made on its row
(a vendor's URL is fetched at once: they expire), and is stored by whichever worker finds it
next, with backoff, until task_store_retry_seconds; the vendor is not asked again, and the
charge is made once, when the images are stored. Past the bound the task fails with a clear
error and its hold is released (nothing charged)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from pixelgate.errors import StorageUnavailable
from pixelgate.services.storage import LocalStorage
from pixelgate.simulators.bfl import BFLEmulatorState, create_app as create_bfl
from tests.conftest import database, openai_channel, openai_error, png
from tests.emulators.server import serve
from tests.test_serve import _start_anywhere

GEN = "/v1/images/generations"


class StoreSwitch:
    """A TCP proxy in front of an S3 server: `up` passes bytes both ways, `down` closes every
    connection (and each new one at once: a store that is gone), `hung` accepts connections and
    answers nothing (a store that stopped in the middle)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self._target = (host, int(port))
        self.mode = "up"
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.05)
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def set(self, mode: str) -> None:
        assert mode in ("up", "down", "hung")
        self.mode = mode
        if mode == "down":
            with self._lock:
                for conn in self._open:
                    _close(conn)
                self._open.clear()

    def close(self) -> None:
        self._stop.set()
        self.set("down")
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client = self._listener.accept()[0]
            except (TimeoutError, OSError):
                continue
            if self.mode == "down":
                _close(client)
                continue
            with self._lock:
                self._open.append(client)
            if self.mode == "hung":
                continue  # held open, never read
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.append(upstream)
            thread = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            thread.start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        pair = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(list(pair), [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.mode == "up":
                        pair[sock].sendall(data)
                    # hung: swallowed, never answered
        except (OSError, ValueError):  # closed by set("down")
            return
        finally:
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def store_switch(s3_store):
    switch = StoreSwitch(s3_store.endpoint)
    try:
        yield switch, {**s3_store.settings(), "s3_endpoint_url": switch.endpoint}
    finally:
        switch.close()


@pytest.fixture
def bfl():
    state = BFLEmulatorState(pending_seconds=0.5, url_ttl=1.5)  # its result URL is gone 1.5 s after it is made
    with serve(create_bfl(state)) as base:
        yield state, {"name": "bfl", "provider": "bfl", "base_url": base + "/v1", "api_key": "bfl-emulator-key",
                      "models": ["flux-2-pro"]}


def _account(gateway, account_id: int) -> dict:
    with gateway.http() as admin:
        return admin.get(f"/admin/accounts/{account_id}").json()


def _ledger(gateway, request_id: str) -> list:
    from sqlalchemy import select

    from pixelgate.db.models import LedgerEntry

    async def rows():
        async with gateway.services.sessions() as session:
            return list((await session.execute(
                select(LedgerEntry.kind, LedgerEntry.amount).where(LedgerEntry.request_id == request_id))).all())

    return gateway.run(rows())


def _task(gateway, task_id: str):
    return gateway.run(gateway.services.tasks.store.load(task_id))


def _wait(predicate, seconds: float, step: float = 0.05):
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_async_task_whose_store_is_down_when_the_vendor_finishes_is_stored_once_it_is_back(
        make_gateway, store_switch, bfl):
    switch, storage = store_switch
    state, channel = bfl
    gateway = make_gateway(channels=[channel], storage_timeout_seconds=0.5, unpriced="refuse", **storage)
    gateway.set_price("flux-2-pro", "1.5")
    account_id, key = gateway.paying_key("10")
    with gateway.http(key) as client:
        created = client.post("/v1/models/black-forest-labs/flux-2-pro/predictions",
                              json={"input": {"prompt": "a fox in the rain"}})
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        switch.set("down")
        # the vendor finishes (0.5 s), its URL expires (1.5 s later): the gateway has the bytes
        time.sleep(3.5)
        task = _task(gateway, task_id)
        assert task.status == "running", (task.status, task.error)
        assert (task.meta or {}).get("storing", {}).get("attempts", 0) >= 2, task.meta
        assert client.get(f"/v1/predictions/{task_id}").json()["status"] == "processing"
        held = _account(gateway, account_id)
        assert Decimal(held["reserved"]) == Decimal("1.5") and Decimal(held["spent"]) == 0

        switch.set("up")
        done = _wait(lambda: (t := client.get(f"/v1/predictions/{task_id}").json())["status"] != "processing" and t,
                     20)
        assert done and done["status"] == "succeeded", done
        image = httpx.get(done["output"][0], timeout=30)
        assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"  # the vendor's JPEG
    assert len(state.submits()) == 1  # one vendor job, never a second
    account = _account(gateway, account_id)
    assert Decimal(account["spent"]) == Decimal("1.5") and Decimal(account["reserved"]) == 0
    assert Decimal(account["balance"]) == Decimal("8.5")
    task = _task(gateway, task_id)
    assert "storing" not in (task.meta or {}) and all("made" not in j for j in task.jobs)  # the bytes left the row


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_synchronous_model_run_as_a_task_keeps_its_images_through_a_hung_store(make_gateway, store_switch,
                                                                                 openai_upstream):
    switch, storage = store_switch
    state, base = openai_upstream
    gateway = make_gateway(channels=[openai_channel(base)], storage_timeout_seconds=0.5, unpriced="refuse",
                           **storage)
    gateway.set_price("gpt-image-1", "0.5")
    account_id, key = gateway.paying_key("10")
    switch.set("hung")  # accepts, never answers: each try waits out storage_timeout_seconds
    with gateway.http(key) as client:
        created = client.post("/v1/models/openai/gpt-image-1/predictions",
                              json={"input": {"prompt": "a lighthouse", "size": "1024x1024", "quality": "low"}})
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        task = _wait(lambda: (t := _task(gateway, task_id)) and (t.meta or {}).get("storing", {}).get("attempts", 0) >= 2
                     and t, 15)
        assert task and task.status == "running", task and (task.status, task.error)
        assert task.jobs[0]["made"]["images"][0]["b64"]  # the vendor's bytes, on the row
        assert Decimal(_account(gateway, account_id)["reserved"]) == Decimal("0.5")  # held, not charged

        switch.set("up")
        done = _wait(lambda: (t := client.get(f"/v1/predictions/{task_id}").json())["status"] != "processing" and t,
                     20)
        assert done and done["status"] == "succeeded", done
        assert httpx.get(done["output"][0], timeout=30).content.startswith(b"\x89PNG")
    assert len([r for r in state.requests if r.path.endswith("/images/generations")]) == 1  # called once
    account = _account(gateway, account_id)
    assert Decimal(account["spent"]) == Decimal("0.5") and Decimal(account["reserved"]) == 0
    assert [kind for kind, _ in _ledger(gateway, _task(gateway, task_id).request_id)] == ["hold", "settle"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_store_down_past_the_bound_fails_the_task_clearly_and_charges_nothing(make_gateway, store_switch, bfl):
    switch, storage = store_switch
    state, channel = bfl
    gateway = make_gateway(channels=[channel], storage_timeout_seconds=0.5, unpriced="refuse",
                           task_store_retry_seconds=2, **storage)
    gateway.set_price("flux-2-pro", "1.5")
    account_id, key = gateway.paying_key("10")
    with gateway.http(key) as client:
        created = client.post("/v1/models/black-forest-labs/flux-2-pro/predictions",
                              json={"input": {"prompt": "a fox in the snow"}})
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        switch.set("down")
        done = _wait(lambda: (t := client.get(f"/v1/predictions/{task_id}").json())["status"] != "processing" and t,
                     20)
        assert done and done["status"] == "failed", done
        assert "image store was unavailable for 2 seconds" in done["error"] and "Nothing was charged" in done["error"]
    task = _task(gateway, task_id)
    assert task.error["code"] == "storage_unavailable" and task.cost == 0
    assert task.meta["storing"]["attempts"] >= 2
    assert all("made" not in j for j in task.jobs)  # a failed task keeps no image bytes
    assert len(state.submits()) == 1
    account = _account(gateway, account_id)
    assert Decimal(account["reserved"]) == 0 and Decimal(account["spent"]) == 0 and Decimal(account["balance"]) == 10


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_synchronous_client_of_an_async_vendor_gets_its_images_once_the_store_is_back(
        make_gateway, store_switch, bfl):
    """The OpenAI API waits on the task of an asynchronous vendor: a store outage shorter than
    async_wait_seconds costs that client time, not its images (once a 503, and a vendor job
    paid for and thrown away)."""
    switch, storage = store_switch
    state, channel = bfl
    gateway = make_gateway(channels=[channel], storage_timeout_seconds=0.5, unpriced="refuse", **storage)
    gateway.set_price("flux-2-pro", "1.5")
    account_id, key = gateway.paying_key("10")
    switch.set("down")
    with gateway.http(key) as client, ThreadPoolExecutor(1) as pool:
        answer = pool.submit(client.post, GEN, json={"model": "flux-2-pro", "prompt": "a heron", "response_format": "url"})
        time.sleep(3)  # the job is done (0.5 s) and its URL expired (1.5 s later); the store is still down
        assert not answer.done()
        switch.set("up")
        resp = answer.result(30)
    assert resp.status_code == 200, resp.text
    assert httpx.get(resp.json()["data"][0]["url"], timeout=30).content[:3] == b"\xff\xd8\xff"
    assert len(state.submits()) == 1
    account = _account(gateway, account_id)
    assert Decimal(account["spent"]) == Decimal("1.5") and Decimal(account["reserved"]) == 0


# -- the local disk failing (the tests run as root: a directory cannot be made unwritable, so the
#    storage directory is swapped for a file) --

def _break(root: Path) -> Path:
    saved = root.with_name(root.name + ".saved")
    root.rename(saved)
    root.write_bytes(b"not a directory")
    return saved


def _mend(root: Path, saved: Path) -> None:
    root.unlink()
    saved.rename(root)


def test_a_local_disk_that_refuses_is_storage_unavailable_and_corrupts_nothing(tmp_path):
    async def scenario() -> None:
        root = tmp_path / "images"
        store = LocalStorage(root)
        first = await store.put(png(8, 8))
        store._begun = 0.0  # a day has passed: the next put begins a new segment
        saved = _break(root)
        with pytest.raises(StorageUnavailable):
            await store.put(png(9, 9))
        _mend(root, saved)
        second = await store.put(png(10, 10))
        assert await store.get(first) == png(8, 8)  # not overwritten by a write meant for a new segment
        assert await store.get(second) == png(10, 10)
        store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_task_waits_out_a_local_disk_that_refuses(make_gateway):
    gateway = make_gateway(unpriced="refuse", task_lease_seconds=30)  # a crash-and-retry would wait 30 s
    gateway.set_price("sandbox-async", "1")
    gateway.set_price("sandbox-image", "0.25")
    account_id, key = gateway.paying_key("10")
    root = gateway.settings.resolved_storage_dir
    assert not list(root.glob("*.seg"))  # no segment open yet: the first put opens one
    saved = _break(root)
    try:
        with gateway.http(key) as client:
            created = client.post("/models/sandbox/sandbox-async/predictions",
                                  json={"input": {"prompt": "x", "size": "32x32", "sandbox_job_seconds": 0.2}})
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]
            task = _wait(lambda: (t := _task(gateway, task_id)) and (t.meta or {}).get("storing", {}).get("attempts", 0) >= 2
                         and t, 10)
            assert task and task.status == "running", task and (task.status, task.error, task.meta)
            resp = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "16x16",
                                          "response_format": "url"})
            openai_error(resp, 503, code="storage_unavailable")  # not a 500
            assert resp.headers["retry-after"]
            b64 = client.post(GEN, json={"model": "sandbox-image", "prompt": "x", "size": "16x16",
                                         "response_format": "b64_json"})
            assert b64.status_code == 200 and b64.json()["data"][0]["b64_json"]  # needs no store: answered
    finally:
        _mend(root, saved)
    with gateway.http(key) as client:
        done = _wait(lambda: (t := client.get(f"/tasks/{task_id}").json())["status"] != "running" and t, 10)
        assert done and done["status"] == "succeeded", done
        assert httpx.get(done["output"][0]["url"]).content.startswith(b"\x89PNG")
    account = _account(gateway, account_id)
    assert Decimal(account["spent"]) == Decimal("1.25") and Decimal(account["reserved"]) == 0


# -- a process killed during the outage: another instance stores what the vendor made --

@pytest.mark.long(30)
def test_an_instance_killed_during_the_outage_leaves_the_storing_to_another(tmp_path, store_switch, bfl):
    switch, storage = store_switch
    state, channel = bfl
    state.url_ttl = 1.0
    admin = {"Authorization": "Bearer pg-storage-outage-admin-key-000000"}
    with database("sqlite", tmp_path) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
        env.update({"PIXELGATE_DATABASE_URL": url, "PIXELGATE_ADMIN_KEY": admin["Authorization"][7:],
                    "PIXELGATE_POLL_INTERVAL_SECONDS": "0.1", "PIXELGATE_TASK_LEASE_SECONDS": "2",
                    "PIXELGATE_STORAGE_TIMEOUT_SECONDS": "1", "PIXELGATE_CHANNELS": json.dumps([channel]),
                    "PIXELGATE_PRICES": json.dumps([{"model": "flux-2-pro", "amount": "1.5"}]),
                    "PIXELGATE_STORAGE_URL": storage["storage_url"], "PIXELGATE_S3_ENDPOINT_URL": switch.endpoint,
                    "PIXELGATE_S3_REGION": "us-east-1",
                    # instances share the key that seals their secrets (each has its own data dir)
                    "PIXELGATE_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode()})
        instances = []

        def start(name: str) -> str:
            (tmp_path / name).mkdir()
            proc, base, _ = _start_anywhere(["serve"], tmp_path / name,
                                            {**env, "PIXELGATE_DATA_DIR": str(tmp_path / name / "data")})
            instances.append(proc)
            return base

        try:
            a = start("a")
            account = httpx.post(a + "/admin/accounts", headers=admin, json={"name": "x", "balance": "10"}).json()
            key = httpx.post(a + "/admin/keys", headers=admin, json={"name": "x", "account_id": account["id"]}).json()
            client = {"Authorization": f"Bearer {key['key']}"}
            created = httpx.post(a + "/v1/models/black-forest-labs/flux-2-pro/predictions", headers=client,
                                 json={"input": {"prompt": "a crane at dusk"}}, timeout=30)
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]
            switch.set("hung")  # A's tries hang, each holding the task's lease
            seen = _wait(lambda: (t := httpx.get(f"{a}/admin/tasks/{task_id}", headers=admin).json())
                         and any(j.get("made") for j in t["jobs"]) and t, 15)
            assert seen and seen["status"] == "running", seen
            time.sleep(1.5)  # the vendor's URL has expired: the bytes on the row are all there is
            os.killpg(instances[0].pid, signal.SIGKILL)  # in the middle of the outage (and likely of a try)
            instances[0].wait()
            switch.set("up")
            b = start("b")
            done = _wait(lambda: (t := httpx.get(f"{b}/tasks/{task_id}", headers=client).json())["status"] != "running"
                         and t, 30)
            assert done and done["status"] == "succeeded", done
            assert httpx.get(done["output"][0]["url"], timeout=30).content[:3] == b"\xff\xd8\xff"
            assert len(state.submits()) == 1  # B stored what A kept: the vendor was not asked again
            books = httpx.get(f"{b}/admin/accounts/{account['id']}", headers=admin).json()
            assert Decimal(books["spent"]) == Decimal("1.5") and Decimal(books["reserved"]) == 0
            assert Decimal(books["balance"]) == Decimal("8.5")
        finally:
            for proc in instances:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_vendor_that_answers_the_submission_at_once_leaves_its_images_to_the_worker(make_gateway, store_switch):
    """A task's vendor may finish in its answer to the submission (the sandbox's asynchronous
    model told to answer at once): the client gets its task, and the worker stores the images."""
    switch, storage = store_switch
    gateway = make_gateway(storage_timeout_seconds=0.5, unpriced="refuse", **storage)
    gateway.set_price("sandbox-async", "1")
    account_id, key = gateway.paying_key("10")
    switch.set("down")
    with gateway.http(key) as client:
        created = client.post("/models/sandbox/sandbox-async/predictions",
                              json={"input": {"prompt": "x", "size": "32x32", "sandbox_async": False}})
        assert created.status_code == 201, created.text  # was a 503, the vendor's images thrown away
        task_id = created.json()["id"]
        task = _task(gateway, task_id)
        assert task.status == "running" and task.jobs[0]["made"] and task.jobs[0]["id"] is None
        time.sleep(1)
        assert client.get(f"/tasks/{task_id}").json()["status"] == "running"
        switch.set("up")
        done = _wait(lambda: (t := client.get(f"/tasks/{task_id}").json())["status"] != "running" and t, 20)
        assert done and done["status"] == "succeeded", done
        assert httpx.get(done["output"][0]["url"]).content.startswith(b"\x89PNG")
    account = _account(gateway, account_id)
    assert Decimal(account["spent"]) == 1 and Decimal(account["reserved"]) == 0
