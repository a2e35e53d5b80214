"""Spend and images by key, model, channel and day, from the request log (synchronous requests)
and the tasks table (asynchronous ones, charged when they end)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.db.models import RequestLog, Task
from pixelgate.errors import InvalidRequest

GROUPS = ("key", "model", "channel", "day")
MAX_DAYS = 36_600
MAX_ID = 2**31 - 1
"""Ids are 32-bit INTEGER columns: PostgreSQL refuses larger values in a query, SQLite past 2**63."""


async def usage(sessions: async_sessionmaker, group_by: str = "model", key_id: int | None = None,
                days: int = 30) -> dict:
    if group_by not in GROUPS:
        raise InvalidRequest(f"'group_by' must be one of {', '.join(GROUPS)}.", field="group_by")
    if not 1 <= days <= MAX_DAYS:  # beyond it the start date overflows
        raise InvalidRequest(f"'days' must be from 1 to {MAX_DAYS}.", field="days")
    if key_id is not None and not -MAX_ID <= key_id <= MAX_ID:
        raise InvalidRequest(f"'key_id' must be an id (at most {MAX_ID}).", field="key_id")
    since = datetime.now(timezone.utc) - timedelta(days=days)
    # Answered requests and failed ones (which keep their model, at no cost); a task's submission
    # (201) is counted through its task instead.
    log = select(RequestLog.key_id, RequestLog.model, RequestLog.channel, RequestLog.created_at,
                 RequestLog.cost, RequestLog.images_delivered, RequestLog.status).where(
        RequestLog.created_at >= since, or_(RequestLog.status == 200, RequestLog.status >= 400))
    tasks = select(Task.key_id, Task.model, Task.channel, Task.created_at, Task.cost, Task.output, Task.status).where(
        Task.created_at >= since, Task.completed_at.is_not(None))
    if key_id is not None:
        log, tasks = log.where(RequestLog.key_id == key_id), tasks.where(Task.key_id == key_id)
    totals: dict[str, dict] = defaultdict(lambda: {"cost": Decimal(0), "images": 0, "requests": 0, "failed": 0})
    async with sessions() as session:
        rows = [(k, m, c, t, cost, n, status >= 400) for k, m, c, t, cost, n, status in (await session.execute(log)).all()]
        rows += [(k, m, c, t, cost, len(out or []), status == "failed")
                 for k, m, c, t, cost, out, status in (await session.execute(tasks)).all()]
    for key, model, channel, created, cost, images, failed in rows:
        group = {"key": key, "model": model, "channel": channel, "day": created.date().isoformat()}[group_by]
        entry = totals[str(group)]
        entry["cost"] += Decimal(cost or 0)
        entry["images"] += images or 0
        entry["requests"] += 1
        entry["failed"] += failed
    data = [{group_by: name, **values} for name, values in sorted(totals.items())]
    return {"group_by": group_by, "since": since.isoformat(), "data": data,
            "total_cost": sum((d["cost"] for d in data), Decimal(0)),
            "total_images": sum(d["images"] for d in data)}
