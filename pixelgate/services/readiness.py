"""What `/readyz` answers: whether this instance can serve requests now. It checks the database,
Redis (when configured) and the image store, all at once, each within a short timeout, so a
load balancer's probe never hangs on a store that does not answer. `/healthz` only says that the
process runs (liveness): restarting an instance does not bring its database back.

Each check is "ok", "timeout" or "unavailable"; the details go to the log, not to the (keyless)
probe."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable

from sqlalchemy import text

log = logging.getLogger("pixelgate.readiness")

DATABASE_TIMEOUT = 2.0


async def readiness(services) -> tuple[bool, dict[str, str]]:
    """(ready, {component: outcome})."""
    checks = {"database": _outcome("database", _database(services.db), DATABASE_TIMEOUT),
              "storage": _outcome("storage", services.storage.check(), services.settings.storage_timeout_seconds)}
    if services.redis is not None:
        checks["redis"] = _outcome("redis", services.redis.ping(), services.redis.timeout * 2)
    outcomes = dict(zip(checks, await asyncio.gather(*checks.values())))
    return all(v == "ok" for v in outcomes.values()), outcomes


async def _database(db) -> None:
    async with db.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _outcome(name: str, check: Awaitable[None], seconds: float) -> str:
    try:
        async with asyncio.timeout(seconds):
            await check
    except Exception as exc:
        timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)
        log.warning("not ready: %s %s (%s)", name, "timed out" if timed_out else "failed",
                    str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__)
        return "timeout" if timed_out else "unavailable"
    return "ok"
