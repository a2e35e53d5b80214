"""Idempotent submits: a client that sends `Idempotency-Key: <its own id>` with a generating
request, and sends it again (a retry after a timeout, a dropped connection, a crash of either
side), gets the first request's task, and so its images and its one charge, instead of a second
vendor job. The key lives on the task row (Task.idempotency_key, unique per API key), so the
repeat finds it on any instance, also while the first still runs and after a restart.

  same key, same request       the first task (waited for, or answered as it is)
  same key, another request    409 naming Idempotency-Key; nothing is done or charged
  key older than KEEP          forgotten: the request runs anew
  first one interrupted        (its submission died before the vendor answered: nothing charged)
                               forgotten too, so the retry can succeed

The request is compared by a fingerprint of what it asks for (the internal request, input
images by digest), so a client may re-encode the same JSON or multipart body differently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import datetime, timedelta, timezone

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.db.models import Task
from pixelgate.domain.request import ImageRequest
from pixelgate.errors import Conflict, InvalidRequest

HEADER = "Idempotency-Key"
KEEP = timedelta(hours=24)
"""How long a key names its task (Stripe keeps keys 24 h too)."""
_VALID = re.compile(r"[\x21-\x7e]{1,255}")
_IMAGE_FIELDS = ("images", "mask", "style_images")


def key_from(headers) -> str | None:
    """The request's Idempotency-Key, or None; 400 naming the header for one that cannot be kept."""
    value = headers.get(HEADER)
    if value is None:
        return None
    if not _VALID.fullmatch(value):
        raise InvalidRequest(f"'{HEADER}' must be 1 to 255 printable ASCII characters without spaces.",
                             field=HEADER, code="invalid_idempotency_key")
    return value


def fingerprint(req: ImageRequest, surface: str) -> str:
    """What the request asks for, as a digest: its fields and its input images' bytes."""
    fields = {}
    for f in dataclasses.fields(ImageRequest):
        value = getattr(req, f.name)
        if f.name in _IMAGE_FIELDS:
            many = value if isinstance(value, list) else [value] if value is not None else []
            value = [hashlib.sha256(i.data).hexdigest() for i in many]
        fields[f.name] = value.value if hasattr(value, "value") else value
    data = orjson.dumps({"surface": surface, **fields}, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(data).hexdigest()


async def find(sessions: async_sessionmaker, key_id: int, key: str, request_hash: str) -> Task | None:
    """The task this key already names for this API key, or None when the request is new (a
    stale or interrupted binding is let go here); Conflict when the key named another request."""
    async with sessions() as session:
        task = (await session.execute(select(Task).where(
            Task.key_id == key_id, Task.idempotency_key == key))).scalar_one_or_none()
    if task is None:
        return None
    created = task.created_at if task.created_at.tzinfo else task.created_at.replace(tzinfo=timezone.utc)
    interrupted = task.status == "failed" and (task.error or {}).get("code") == "task_interrupted"
    if created < datetime.now(timezone.utc) - KEEP or interrupted:
        async with sessions() as session, session.begin():
            await session.execute(update(Task).where(Task.id == task.id).values(idempotency_key=None))
        return None
    if task.request_hash != request_hash:
        raise Conflict(f"This {HEADER} was used with a different request ({task.id}); use a new key for a "
                       "new request.", field=HEADER, code="idempotency_key_reused")
    return task
