"""The interface every image store implements (local segments: services/storage.py; S3:
services/s3storage.py), and what the backends share."""

from __future__ import annotations

from typing import Protocol

PENDING_BYTES = 32 * 1024 * 1024
"""Most bytes of one process waiting to be written in the background."""


class ImageStore(Protocol):
    """Where delivered images live. Ids are 32 lowercase hex digits (the `/files` links name them)."""

    async def put(self, data: bytes) -> str:
        """Store an image; once this returns, any worker of any instance sharing the store reads it."""

    async def put_soon(self, data: bytes) -> str:
        """Store in the background (for bytes the client already has); `drain` waits for them."""

    async def get(self, image_id: str) -> bytes | None:
        """The image's bytes, or None if there is no such image (or retention removed it)."""

    async def presigned_url(self, image_id: str, ttl_seconds: int) -> str | None:
        """A short-lived URL of the store itself, or None where the store has none (local)."""

    async def drain(self) -> None: ...

    async def check(self) -> None:
        """Raises StorageUnavailable unless the store can be used (start-up and /readyz)."""

    def keep_for(self, days: float, every_seconds: float = 3600) -> None:
        """Delete images older than `days`, now and every `every_seconds`."""

    async def aclose(self) -> None: ...
