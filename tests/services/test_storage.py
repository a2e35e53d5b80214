"""Images are appended to per-process segment files; an image's id says where it lies."""

from __future__ import annotations

import asyncio
import os

import pytest

from pixelgate.services import storage as storage_module
from pixelgate.services.storage import LocalStorage


def test_images_written_by_one_worker_are_read_by_another(tmp_path):
    async def scenario():
        writer = LocalStorage(tmp_path)
        small, large = os.urandom(3000), os.urandom(storage_module.INLINE_WRITE_BYTES + 1)
        ids = [await writer.put(small), await writer.put(large)]
        reader = LocalStorage(tmp_path)  # another process would open the same segment
        assert [await reader.get(i) for i in ids] == [small, large]
        assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)
        writer.close()

    asyncio.run(scenario())


def test_concurrent_puts_get_their_own_room(tmp_path):
    async def scenario():
        store = LocalStorage(tmp_path)
        blobs = [os.urandom(size) for size in (10, 300_000, 5, 1_000_000, 4096) * 8]
        ids = await asyncio.gather(*(store.put(b) for b in blobs))
        soon = [await store.put_soon(b) for b in blobs]
        await store.drain()
        assert [store.read(i) for i in ids + soon] == blobs + blobs
        assert len(list(tmp_path.glob("*.seg"))) == 1  # one process, one segment
        store.close()

    asyncio.run(scenario())


def test_a_full_segment_is_followed_by_a_new_one(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_module, "SEGMENT_BYTES", 10_000)

    async def scenario():
        store = LocalStorage(tmp_path)
        blobs = [os.urandom(4000) for _ in range(5)]
        ids = [await store.put(b) for b in blobs]
        assert [store.read(i) for i in ids] == blobs
        assert len({i[:12] for i in ids}) == 3 and len(list(tmp_path.glob("*.seg"))) == 3
        store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("image_id", ["", "../../etc/passwd", "0" * 31, "z" * 32, "ab" * 16 + ".png"])
def test_malformed_ids_find_nothing(tmp_path, image_id):
    assert LocalStorage(tmp_path).read(image_id) is None


def test_an_id_past_what_was_written_finds_nothing(tmp_path):
    async def scenario():
        store = LocalStorage(tmp_path)
        image_id = await store.put(b"x" * 100)
        segment = image_id[:12]
        assert store.read(f"{segment}{0:012x}{200:08x}") is None  # longer than the segment
        assert store.read(f"{'0' * 12}{0:012x}{100:08x}") is None  # no such segment
        store.close()

    asyncio.run(scenario())


def test_background_writes_are_bounded_and_the_rest_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_module, "PENDING_BYTES", 2_000_000)
    started, release = [], __import__("threading").Event()
    real_write = storage_module._write

    def slow_disk(fd, data, offset):
        started.append(len(data))
        release.wait(5)
        real_write(fd, data, offset)

    monkeypatch.setattr(storage_module, "_write", slow_disk)

    async def scenario():
        store = LocalStorage(tmp_path)
        blob = os.urandom(900_000)
        ids = [await store.put_soon(blob), await store.put_soon(blob)]  # 1.8 MB: both in the background
        assert store._pending_bytes == 1_800_000
        third = asyncio.ensure_future(store.put_soon(blob))  # over the bound: waits for its write
        await asyncio.sleep(0.2)
        assert not third.done()
        release.set()
        ids.append(await third)
        await store.drain()
        assert store._pending_bytes == 0 and [store.read(i) for i in ids] == [blob] * 3
        store.close()

    asyncio.run(scenario())


def test_retention_deletes_whole_segments_by_age_but_never_the_one_being_written(tmp_path, monkeypatch):
    async def scenario():
        store = LocalStorage(tmp_path)
        old = await store.put(b"yesterday's image")
        old_segment = tmp_path / f"{old[:12]}.seg"
        monkeypatch.setattr(storage_module, "SEGMENT_SECONDS", 0)  # the day is over: a new segment
        new = await store.put(b"today's image")
        assert new[:12] != old[:12]
        three_days_ago = __import__("time").time() - 3 * 86400
        os.utime(old_segment, (three_days_ago, three_days_ago))
        assert store.forget_older_than(2) == 1
        assert store.read(old) is None and store.read(new) == b"today's image"
        os.utime(tmp_path / f"{new[:12]}.seg", (three_days_ago, three_days_ago))
        assert store.forget_older_than(2) == 0  # this process still writes it
        store.close()

    asyncio.run(scenario())


def test_retention_runs_in_the_gateway(make_gateway):
    gateway = make_gateway(image_retention_days=1)
    with gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x", "size": "16x16"})
    assert resp.status_code == 200
    sweeper = gateway.services.storage._sweeper
    assert sweeper is not None and not sweeper.done()


def test_a_segment_given_up_stays_open_until_its_last_background_write(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(storage_module, "SEGMENT_BYTES", 1_500_000)
    release = threading.Event()
    real_write = storage_module._write
    monkeypatch.setattr(storage_module, "_write", lambda *a: (release.wait(5), real_write(*a)))

    async def scenario():
        store = LocalStorage(tmp_path)
        first = await store.put_soon(os.urandom(1_000_000))  # pending in a thread
        old_fd = store._fd
        second = await store.put_soon(os.urandom(1_000_000))  # does not fit: a new segment
        assert store._fd != old_fd and first[:12] != second[:12]
        os.fstat(old_fd)  # still open: its write is under way
        release.set()
        await store.drain()
        with pytest.raises(OSError):
            os.fstat(old_fd)  # closed after its last write
        assert len(store.read(first)) == len(store.read(second)) == 1_000_000
        store.close()

    asyncio.run(scenario())
