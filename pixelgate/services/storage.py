"""Where delivered images live, and the signed, expiring URLs that serve them.

Every image is written here before the client is answered, whatever the client asked for,
because vendor URLs expire and a client may lose a base64 answer. Local disk by default; the
interface (put / path) is what an S3-compatible store will implement.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from pathlib import Path

from pixelgate.domain.images import EXTENSION

INLINE_WRITE_BYTES = 256 * 1024
"""Smaller images are written on the event loop: into the page cache, that takes microseconds."""


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._folders: set[Path] = set()
        self._pending: set[asyncio.Future] = set()

    def path(self, name: str) -> Path:
        """`name` is "<id>.<ext>"; ids are hex, so the first two characters fan out folders."""
        return self.root / name[:2] / name

    def put_soon(self, name: str, data: bytes) -> None:
        """Write in the background: for images whose bytes the client receives in the answer
        itself, so the answer need not wait for the gateway's own copy. `drain` waits for them."""
        if len(data) <= INLINE_WRITE_BYTES:
            self._write(self.path(name), data)  # cheaper than the hop to a thread and back
            return
        job = asyncio.get_running_loop().run_in_executor(None, self._write, self.path(name), data)
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def put(self, name: str, data: bytes) -> None:
        if len(data) <= INLINE_WRITE_BYTES:
            self._write(self.path(name), data)  # cheaper than a hop to a thread
        else:
            await asyncio.to_thread(self._write, self.path(name), data)

    def _write(self, path: Path, data: bytes) -> None:
        # Names are fresh random ids, and a link to a file is handed out only after this returns,
        # so no reader can see it half-written: no temporary file and rename needed.
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


def file_name(image_id: str, fmt: str) -> str:
    return f"{image_id}.{EXTENSION[fmt]}"


class UrlSigner:
    """HMAC-signed links: whoever holds the link may fetch the image until it expires."""

    def __init__(self, secret: str, ttl_seconds: int, public_base_url: str | None = None) -> None:
        self._secret = secret.encode()
        self.ttl = ttl_seconds
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None

    def _sign(self, name: str, expires: int) -> str:
        return hmac.new(self._secret, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def url(self, request_base: str, name: str) -> str:
        expires = int(time.time()) + self.ttl
        base = self.public_base_url or request_base.rstrip("/")
        return f"{base}/files/{name}?exp={expires}&sig={self._sign(name, expires)}"

    def verify(self, name: str, expires: int, signature: str) -> bool:
        return expires >= time.time() and hmac.compare_digest(self._sign(name, expires), signature)
