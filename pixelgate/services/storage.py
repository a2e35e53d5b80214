"""Where delivered images live, and the signed, expiring URLs that serve them.

Images are appended to segment files rather than written one file each: creating a file costs
the file system an inode, a directory entry and journal work, which on the benchmark's ext4
disk took from 25 µs to over 1 ms per image (appending 4 KB: 4 µs). Each process appends to a
segment of its own, so workers never coordinate; a segment is closed at SEGMENT_BYTES and a new
one begun, and so is a new one each day. An image's id says where it is: 12 hex digits of
segment, 12 of offset, 8 of length. Retention deletes whole segments by age.

Two backends implement one interface (services/imagestore.py): these local segments, the
embedded default, and any S3-compatible store (services/s3storage.py), which every instance of a
fleet shares.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Callable

from pixelgate.domain.images import EXTENSION
from pixelgate.errors import StorageUnavailable
from pixelgate.services.imagestore import PENDING_BYTES, ImageStore
from pixelgate.services.supervisor import supervise

INLINE_WRITE_BYTES = 256 * 1024
"""Smaller images are written on the event loop: appending them takes microseconds."""
SEGMENT_BYTES = 1 << 30
SEGMENT_SECONDS = 86400
"""A segment holds at most a day of images, so that retention can drop a day at a time."""
_ID = re.compile(r"^([0-9a-f]{12})([0-9a-f]{12})([0-9a-f]{8})$")
log = logging.getLogger("pixelgate.storage")


async def open_storage(settings, outage: Callable[[str], None] | None = None) -> ImageStore:
    """The store the settings name: S3 for `storage_url = "s3://bucket/prefix"`, else local
    segments under storage_dir. Checked before serving, so a wrong bucket or key fails fast
    (StorageUnavailable). A store that does not answer is an outage, not a wrong setting: it is
    told to `outage` (default: the log) and the gateway starts, so that a restart during an
    outage still serves what needs no storage, /readyz says what is down, and stored work resumes
    when the store is back."""
    if settings.storage_url:
        from pixelgate.services.s3storage import S3Storage, StorageUnreachable

        store: ImageStore = S3Storage(settings.storage_url, settings.s3_endpoint_url, settings.s3_region,
                                      settings.s3_addressing_style, settings.storage_timeout_seconds)
        try:
            await store.check()
        except StorageUnreachable as exc:
            (outage or log.warning)(f"{exc}; starting anyway: requests that store images answer 503 "
                                    "storage_unavailable, and /readyz reports it, until it answers")
    else:
        store = LocalStorage(settings.resolved_storage_dir)
    if settings.image_retention_days:
        store.keep_for(settings.image_retention_days)
    return store


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._segment = ""
        self._end = 0
        self._pid = 0
        self._begun = 0.0
        self._sweeper: asyncio.Task | None = None
        self._pending: set[asyncio.Future] = set()
        self._pending_bytes = 0
        self._writes: dict[int, int] = {}
        """Writes under way per segment fd: a segment given up is closed after its last write."""

    def _reserve(self, size: int) -> tuple[int, str, int]:
        """Room for `size` bytes: (fd, segment, offset). Runs on the event loop only, so two
        reservations never overlap, and the writes themselves may then run in any thread."""
        if (self._fd is None or self._end + size > SEGMENT_BYTES or self._pid != os.getpid()
                or time.time() - self._begun > SEGMENT_SECONDS):
            if self._pid != os.getpid():  # after a fork: a child must not append to its parent's
                self._fd, self._writes = None, {}
            retired = self._fd
            segment = secrets.token_hex(6)
            # opened before anything changes: if it fails (a full or read-only disk), the next
            # put tries a new segment again, rather than writing the old one's fd at offset 0
            fd = os.open(self.root / f"{segment}.seg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            self._fd, self._segment, self._end, self._pid, self._begun = fd, segment, 0, os.getpid(), time.time()
            if retired is not None and not self._writes.get(retired):
                os.close(retired)
        offset, self._end = self._end, self._end + size
        return self._fd, self._segment, offset

    def _place(self, data: bytes) -> tuple[str, int, int]:
        fd, segment, offset = self._reserve(len(data))
        self._writes[fd] = self._writes.get(fd, 0) + 1
        return f"{segment}{offset:012x}{len(data):08x}", fd, offset

    def _done(self, fd: int) -> None:
        self._writes[fd] -= 1
        if not self._writes[fd]:
            del self._writes[fd]
            if fd != self._fd:  # a segment given up while this write was under way
                os.close(fd)

    async def put(self, data: bytes) -> str:
        """Store the image; returns its id once the bytes are written (readable by any worker).
        StorageUnavailable if the disk refuses (full, read-only, gone), as S3's store does."""
        try:
            image_id, fd, offset = self._place(data)
        except OSError as exc:
            raise self._unusable(exc) from None
        try:
            if len(data) <= INLINE_WRITE_BYTES:
                _write(fd, data, offset)  # cheaper than a hop to a thread
            else:
                await asyncio.to_thread(_write, fd, data, offset)
        except OSError as exc:
            raise self._unusable(exc) from None
        finally:
            self._done(fd)
        return image_id

    def _unusable(self, exc: OSError) -> StorageUnavailable:
        """The details for the log, never for clients."""
        log.warning("image storage %s is not usable (put): %s", self.root, exc)
        return StorageUnavailable("The image store is unavailable; nothing was charged. Try again shortly.")

    async def put_soon(self, data: bytes) -> str:
        """Store in the background, for images whose bytes the client receives in the answer
        itself, so the answer need not wait for the gateway's own copy. `drain` waits for them.
        When the disk falls behind by PENDING_BYTES, the answer waits after all: memory stays
        bounded, and the clients slow to the pace of the disk."""
        if len(data) <= INLINE_WRITE_BYTES or self._pending_bytes + len(data) > PENDING_BYTES:
            return await self.put(data)
        try:
            image_id, fd, offset = self._place(data)
        except OSError as exc:
            raise self._unusable(exc) from None
        job = asyncio.get_running_loop().run_in_executor(None, _write, fd, data, offset)
        self._pending.add(job)
        self._pending_bytes += len(data)
        job.add_done_callback(functools.partial(self._written, len(data), fd))
        return image_id

    def _written(self, size: int, fd: int, job: asyncio.Future) -> None:
        self._pending.discard(job)
        self._pending_bytes -= size
        self._done(fd)
        if not job.cancelled() and job.exception() is not None:
            log.warning("background image write failed: %s", job.exception())

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def get(self, image_id: str) -> bytes | None:
        """The image's bytes, or None if there is no such image."""
        found = _ID.match(image_id)
        if found is None:
            return None
        if int(found.group(3), 16) <= INLINE_WRITE_BYTES:
            return self.read(image_id)
        return await asyncio.to_thread(self.read, image_id)

    def read(self, image_id: str) -> bytes | None:
        found = _ID.match(image_id)
        if found is None:
            return None
        segment, offset, length = found.group(1), int(found.group(2), 16), int(found.group(3), 16)
        try:
            fd = os.open(self.root / f"{segment}.seg", os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        return data if len(data) == length else None  # short: never written (a crash mid-put)

    def forget_older_than(self, days: float) -> int:
        """Delete the segments last written more than `days` ago; returns how many. The one this
        process writes is not among them, and another worker's is younger than a day."""
        cutoff = time.time() - days * 86400
        removed = 0
        for path in self.root.glob("*.seg"):
            try:
                if path.stem != self._segment and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # another worker or instance removed it first
                pass
        return removed

    def keep_for(self, days: float, every_seconds: float = 3600) -> None:
        """Apply retention now and then every `every_seconds`, until close()."""
        async def sweep() -> None:
            await asyncio.to_thread(self.forget_older_than, days)
            await asyncio.sleep(every_seconds)

        self._sweeper = supervise("retention", sweep)

    async def presigned_url(self, image_id: str, ttl_seconds: int) -> str | None:
        return None  # the gateway serves local images itself

    async def check(self) -> None:
        if not (self.root.is_dir() and os.access(self.root, os.W_OK)):
            raise StorageUnavailable(f"image storage {self.root} is not a writable directory")

    async def aclose(self) -> None:
        await self.drain()
        self.close()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def file_name(image_id: str, fmt: str) -> str:
    return f"{image_id}.{EXTENSION[fmt]}"


class UrlSigner:
    """HMAC-signed links: whoever holds the link may fetch the image until it expires."""

    def __init__(self, secret: str, ttl_seconds: int, public_base_url: str | None = None) -> None:
        self._secret = secret.encode()
        self.ttl = ttl_seconds
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None

    def derive(self, purpose: str) -> bytes:
        """A secret of its own for another use (the console's sessions), from the shared one:
        every instance derives the same, and none can be turned back into the URL secret."""
        return hmac.new(self._secret, b"pixelgate:" + purpose.encode(), hashlib.sha256).digest()

    def _sign(self, name: str, expires: int) -> str:
        return hmac.new(self._secret, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def url(self, request_base: str, name: str) -> str:
        expires = int(time.time()) + self.ttl
        base = self.public_base_url or request_base.rstrip("/")
        return f"{base}/files/{name}?exp={expires}&sig={self._sign(name, expires)}"

    def verify(self, name: str, expires: int, signature: str) -> bool:
        # compare_digest refuses non-ASCII str (TypeError): such a signature is simply wrong
        return expires >= time.time() and signature.isascii() and hmac.compare_digest(self._sign(name, expires),
                                                                                      signature)
