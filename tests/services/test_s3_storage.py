"""Both image stores keep one contract; the S3 one is tested against real servers on loopback:
moto's and SeaweedFS. Two gateways sharing a bucket serve each other's images."""

from __future__ import annotations

import asyncio
import os
from datetime import date, timedelta

import httpx
import obstore
import pytest

from pixelgate.config import Settings
from pixelgate.services.s3storage import EPOCH, S3Storage, StorageUnavailable
from pixelgate.services.storage import LocalStorage
from tests.cli import pixelgate
from tests.conftest import ADMIN_KEY, png, run_gateway
from tests.s3server import S3Bucket


@pytest.fixture(params=["local", "moto", "seaweedfs"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path)
    bucket = request.getfixturevalue("s3_store" if request.param == "moto" else "seaweed_store")
    return S3Storage(f"s3://{bucket.bucket}/imgs", bucket.endpoint, "us-east-1")


def test_the_store_contract(store):
    async def scenario():
        small, large = png(8, 8), os.urandom(1_500_000)
        ids = [await store.put(small), await store.put(large)]
        soon = [await store.put_soon(png(4, 4)) for _ in range(3)]
        await store.drain()
        assert await store.get(ids[0]) == small and await store.get(ids[1]) == large
        assert [await store.get(i) for i in soon] == [png(4, 4)] * 3
        assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids + soon) and len(set(ids + soon)) == 5
        missing = ("0" * 32) if isinstance(store, LocalStorage) else ids[0][:4] + "f" * 28
        assert await store.get(missing) is None
        assert await store.get("../../etc/passwd") is None
        await store.aclose()

    asyncio.run(scenario())


def test_unusable_bucket_fails_fast_with_one_line(s3_store):
    async def scenario():
        store = S3Storage(f"s3://no-such-bucket-{os.getpid()}/x", s3_store.endpoint, "us-east-1")
        with pytest.raises(StorageUnavailable) as info:
            await store.check()
        assert "no-such-bucket" in str(info.value) and "\n" not in str(info.value)

    asyncio.run(scenario())


@pytest.mark.parametrize("server", ["moto_server", "seaweed_server"])
def test_serve_names_a_missing_bucket_in_one_line(request, server, tmp_path):
    missing = S3Bucket(request.getfixturevalue(server), f"no-such-bucket-{os.getpid()}")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}, **missing.env()}
    proc = pixelgate("serve", "--port", "0", cwd=tmp_path, env=env)
    assert proc.returncode != 0 and "listening on" not in proc.stdout
    assert proc.stderr.strip() == (f"Error: image storage: the bucket '{missing.bucket}' does not exist at "
                                   f"{missing.endpoint}: create it, or correct storage_url"), proc.stderr


def test_retention_deletes_whole_old_days_on_seaweedfs(seaweed_store):
    async def scenario():
        store = S3Storage(f"s3://{seaweed_store.bucket}/imgs", seaweed_store.endpoint, "us-east-1")
        today = await store.put(png(4, 4))
        old_day = date.today() - timedelta(days=10)
        old_id = f"{(old_day - EPOCH).days:04x}" + "ab" * 14
        await obstore.put_async(store._store, f"{old_day.isoformat()}/{old_id}", png(4, 4))
        assert await store.get(old_id) == png(4, 4)
        assert await store.forget_older_than(5) == 1
        assert await store.get(old_id) is None and await store.get(today) == png(4, 4)

    asyncio.run(scenario())


def _gateway_settings(tmp_path, name: str, database_url: str, **extra) -> Settings:
    return Settings(data_dir=tmp_path / name, database_url=database_url, admin_key=ADMIN_KEY, cache_seconds=0,
                    poll_interval_seconds=0.05, unpriced="free", **extra)


@pytest.mark.parametrize("server", ["s3_store", "seaweed_store"])
def test_an_image_stored_through_one_gateway_is_served_by_another(request, server, tmp_path):
    bucket = request.getfixturevalue(server)
    url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    with run_gateway(_gateway_settings(tmp_path, "a", url, **bucket.settings())) as a, \
            run_gateway(_gateway_settings(tmp_path, "b", url, **bucket.settings())) as b, a.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x", "size": "32x32",
                                                           "response_format": "url"})
        link = resp.json()["data"][0]["url"]
        from_b = httpx.get(link.replace(a.base_url, b.base_url))
        assert from_b.status_code == 200 and from_b.content.startswith(b"\x89PNG")
        assert not list((tmp_path / "a").glob("images/*.seg"))  # nothing kept on A's own disk


def test_presigned_links_redirect_to_the_store(s3_store, tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/one.db"
    settings = _gateway_settings(tmp_path, "a", url, presigned_urls=True, **s3_store.settings())
    with run_gateway(settings) as gateway, gateway.http() as client:
        resp = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "x", "size": "32x32",
                                                           "response_format": "url"})
        link = resp.json()["data"][0]["url"]
        redirect = httpx.get(link)
        assert redirect.status_code == 307 and redirect.headers["location"].startswith(s3_store.endpoint)
        followed = httpx.get(link, follow_redirects=True)
        assert followed.status_code == 200 and followed.content.startswith(b"\x89PNG")
        assert followed.headers["content-type"] == "image/png"
        assert httpx.get(link.replace("sig=", "sig=0")).status_code == 403  # still the gateway's signature
