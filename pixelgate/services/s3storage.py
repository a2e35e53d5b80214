"""Images in any S3-compatible store (AWS S3, Cloudflare R2, Aliyun OSS, MinIO, SeaweedFS), so
that every instance of a fleet serves every image.

Keys are `{prefix}/{YYYY-MM-DD}/{id}`: retention deletes whole days by listing a day's prefix,
and an image's 32-hex id begins with its day (4 hex digits of days since 2020-01-01), so `get`
finds its key without a lookup. Links stay the gateway's own signed `/files` URLs; with
`presigned_urls`, `/files` answers with a redirect to a short-lived presigned store URL, so the
bytes flow from the store and not through the gateway.

The client is obstore (Rust's object_store, async, pooled), chosen by measurement against
SeaweedFS on loopback (bench/s3_clients.py): 4 KB put/get 1.6/1.2 ms against aiobotocore's
2.6/2.1 ms, 1.5 MB put 14.2 ms against 17.5 ms, and 1,587 against 605 concurrent 4 KB puts a
second. It also sends no flexible-checksum trailers, which botocore adds by default and several
S3-compatible stores refuse.

Every call is bounded by `timeout` (storage_timeout_seconds, plus a second per 2 MB carried):
obstore's own retries would otherwise keep a request waiting for minutes on a store that is down
(up to 10 retries in 3 minutes). Past the bound the request fails with StorageUnavailable (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import time
from datetime import date, timedelta
from urllib.parse import urlsplit

import obstore
from obstore.store import S3Store

from pixelgate.domain.images import sniff_mime
from pixelgate.errors import StorageUnavailable
from pixelgate.services.imagestore import PENDING_BYTES
from pixelgate.services.supervisor import supervise

_SERVER_FAILURE = re.compile(r"status(?: code)?:? 5\d\d|Server error")

log = logging.getLogger("pixelgate.storage")

EPOCH = date(2020, 1, 1)
BYTES_PER_SECOND = 2_000_000
"""The slowest transfer the time bound allows for: a large image gets longer than a small one."""


def day_of(image_id: str) -> date | None:
    try:
        return EPOCH + timedelta(days=int(image_id[:4], 16))
    except ValueError:
        return None


class StorageUnreachable(StorageUnavailable):
    """The store did not answer, or answered with its own failure (5xx): an outage, which a
    restart cannot mend, unlike a wrong bucket, endpoint or key (its 4xx answers)."""


def _outage(exc: Exception) -> bool:
    text = str(exc)
    return isinstance(exc, TimeoutError) or "error sending request" in text or bool(_SERVER_FAILURE.search(text))


class S3Storage:
    def __init__(self, url: str, endpoint: str | None = None, region: str | None = None,
                 addressing_style: str = "auto", timeout: float = 5) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"storage_url must look like s3://bucket/prefix, not {url!r}")
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        self.endpoint = endpoint
        config: dict[str, object] = {"region": region or os.environ.get("AWS_REGION")
                                     or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
        if endpoint:
            config["endpoint"] = endpoint
        # Path style (bucket in the path) is what MinIO, SeaweedFS and most self-hosted stores
        # expect; AWS itself, R2 and OSS take virtual hosts (bucket in the host name).
        config["virtual_hosted_style_request"] = (addressing_style == "virtual"
                                                  or (addressing_style == "auto" and not endpoint))
        for setting, variable in (("access_key_id", "AWS_ACCESS_KEY_ID"),
                                  ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                                  ("session_token", "AWS_SESSION_TOKEN")):
            if os.environ.get(variable):
                config[setting] = os.environ[variable]
        self.timeout = timeout
        # retries (a dropped connection, a 5xx) only while the caller's bound allows them
        retry = {"max_retries": 3, "retry_timeout": timedelta(seconds=timeout),
                 "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(seconds=1)}}
        self._store = S3Store(self.bucket, prefix=self.prefix or None, config=config, retry_config=retry,
                              client_options={"allow_http": bool(endpoint and endpoint.startswith("http://")),
                                              "timeout": "300s", "connect_timeout": f"{timeout}s"})
        self._pending: set[asyncio.Task] = set()
        self._pending_bytes = 0
        self._sweeper: asyncio.Task | None = None

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint}" if self.endpoint else "")

    @contextlib.asynccontextmanager
    async def _bounded(self, what: str, size: int = 0):
        """Within the time bound, or StorageUnavailable; the details go to the log (and to the
        operator, for `check`), never to clients."""
        try:
            async with asyncio.timeout(self.timeout + size / BYTES_PER_SECOND):
                yield
        except FileNotFoundError:
            raise
        except Exception as exc:  # obstore raises assorted types; all mean "not usable"
            if "<Code>NoSuchBucket</Code>" in str(exc):  # the store's answer, quoted past the first line
                raise StorageUnavailable(f"image storage: the bucket {self.bucket!r} does not exist"
                                         + (f" at {self.endpoint}" if self.endpoint else "")
                                         + ": create it, or correct storage_url") from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            if isinstance(exc, TimeoutError):
                first = f"no answer in {self.timeout + size / BYTES_PER_SECOND:g} s"
            problem = f"image storage {self.where} is not usable ({what}): {first}"
            log.warning("%s", problem)
            if what == "check":
                raise (StorageUnreachable if _outage(exc) else StorageUnavailable)(problem) from None
            raise StorageUnavailable("The image store is unavailable; nothing was charged. Try again shortly.") from None

    async def check(self) -> None:
        """Fail fast, with one line, when the bucket is unreachable or the credentials are wrong."""
        async with self._bounded("check"):
            async for _ in obstore.list(self._store, chunk_size=1):
                break

    @staticmethod
    def _new_id() -> str:
        return f"{(date.today() - EPOCH).days:04x}" + secrets.token_hex(14)

    @staticmethod
    def _key(image_id: str) -> str | None:
        day = day_of(image_id) if len(image_id) == 32 and all(c in "0123456789abcdef" for c in image_id) else None
        return f"{day.isoformat()}/{image_id}" if day else None

    async def put(self, data: bytes) -> str:
        image_id = self._new_id()
        await self._upload(image_id, data)
        return image_id

    async def _upload(self, image_id: str, data: bytes) -> None:
        async with self._bounded("put", len(data)):
            await obstore.put_async(self._store, self._key(image_id), data,
                                    attributes={"Content-Type": sniff_mime(data)})

    async def put_soon(self, data: bytes) -> str:
        """Upload in the background (the client has the bytes in its answer); past PENDING_BYTES
        waiting, the answer waits after all, so memory stays bounded."""
        if self._pending_bytes + len(data) > PENDING_BYTES:
            return await self.put(data)
        image_id = self._new_id()
        self._pending_bytes += len(data)
        job = asyncio.ensure_future(self._upload(image_id, data))
        self._pending.add(job)
        job.add_done_callback(lambda j, size=len(data): self._written(j, size))
        return image_id

    def _written(self, job: asyncio.Task, size: int) -> None:
        self._pending.discard(job)
        self._pending_bytes -= size
        if not job.cancelled() and job.exception() is not None:
            log.warning("background image upload failed: %s", job.exception())

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def get(self, image_id: str) -> bytes | None:
        key = self._key(image_id)
        if key is None:
            return None
        try:
            async with self._bounded("get"):
                found = await obstore.get_async(self._store, key)
            async with self._bounded("get", found.meta["size"]):
                return bytes(await found.bytes_async())
        except FileNotFoundError:
            return None

    async def presigned_url(self, image_id: str, ttl_seconds: int) -> str | None:
        key = self._key(image_id)
        if key is None:
            return None
        async with self._bounded("sign"):  # may fetch credentials (an instance role)
            return await obstore.sign_async(self._store, "GET", key, timedelta(seconds=max(1, ttl_seconds)))

    async def forget_older_than(self, days: float) -> int:
        """Delete the days (key prefixes) wholly older than `days`; returns how many images."""
        cutoff = date.fromtimestamp(time.time() - days * 86400)
        listing = await obstore.list_with_delimiter_async(self._store)
        removed = 0
        for prefix in listing["common_prefixes"]:
            name = prefix.rstrip("/").rsplit("/", 1)[-1]
            try:
                day = date.fromisoformat(name)
            except ValueError:
                continue  # not ours
            if day >= cutoff:
                continue
            async for batch in obstore.list(self._store, name + "/", chunk_size=1000):
                paths = [entry["path"] for entry in batch]
                if paths:
                    await obstore.delete_async(self._store, paths)
                    removed += len(paths)
        return removed

    def keep_for(self, days: float, every_seconds: float = 3600) -> None:
        async def sweep() -> None:
            await self.forget_older_than(days)
            await asyncio.sleep(every_seconds)

        self._sweeper = supervise("retention", sweep)

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.drain()

