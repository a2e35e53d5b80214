"""Spend and images by key, model, channel and day, from the request log (synchronous requests)
and the tasks table (asynchronous ones, charged when they end)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import case, func, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.db.models import RequestLog, Task
from pixelgate.errors import InvalidRequest

GROUPS = ("key", "model", "channel", "day", "hour")
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
    # Summed by the database, one row per group: a month of a busy gateway is millions of rows,
    # which fetched and added up here took seconds of the event loop and their memory.
    async with sessions() as session:
        dialect = (await session.connection()).dialect.name
        # Answered requests and failed ones (which keep their model, at no cost); a task's
        # submission (201), and a request answered from its own task once it was done, are
        # counted through the task instead.
        group = _group(RequestLog, group_by, dialect)
        # A refusal the Midjourney API answers with HTTP 200 and a code (as the proxies do) failed too.
        failed = or_(RequestLog.status >= 400, RequestLog.error_code.is_not(None))
        log = select(group, func.sum(RequestLog.cost), func.sum(RequestLog.images_delivered), func.count(),
                     func.sum(case((failed, 1), else_=0))).where(
            RequestLog.created_at >= since, or_(RequestLog.status == 200, RequestLog.status >= 400),
            ~select(Task.id).where(Task.request_id == RequestLog.id).exists()).group_by(group)
        group = _group(Task, group_by, dialect)
        tasks = select(group, func.sum(Task.cost), func.sum(_images(dialect)), func.count(),
                       func.sum(case((Task.status == "failed", 1), else_=0))).where(
            Task.created_at >= since, Task.completed_at.is_not(None)).group_by(group)
        if key_id is not None:
            log, tasks = log.where(RequestLog.key_id == key_id), tasks.where(Task.key_id == key_id)
        rows = [*(await session.execute(log)).all(), *(await session.execute(tasks)).all()]
    totals: dict[str, dict] = defaultdict(lambda: {"cost": Decimal(0), "images": 0, "requests": 0, "failed": 0})
    for name, cost, images, requests, failed in rows:
        entry = totals[str(name)]
        entry["cost"] += Decimal(cost or 0)
        entry["images"] += int(images or 0)
        entry["requests"] += int(requests)
        entry["failed"] += int(failed or 0)
    data = [{group_by: name, **values} for name, values in sorted(totals.items())]
    return {"group_by": group_by, "since": since.isoformat(), "data": data,
            "total_cost": sum((d["cost"] for d in data), Decimal(0)),
            "total_images": sum(d["images"] for d in data)}


def _group(table, group_by: str, dialect: str):
    if group_by in ("day", "hour"):  # the UTC date (and hour), as text: 2026-11-21, 2026-11-21T07:00
        if dialect == "postgresql":
            shape = "YYYY-MM-DD" if group_by == "day" else 'YYYY-MM-DD"T"HH24:00'
            return func.to_char(func.timezone("UTC", table.created_at), shape)
        # SQLite keeps the UTC time as text
        return func.strftime("%Y-%m-%d" if group_by == "day" else "%Y-%m-%dT%H:00", table.created_at)
    return {"key": table.key_id, "model": table.model, "channel": table.channel}[group_by]


def _images(dialect: str):
    """How many images a task's output lists (output is a JSON array, SQL NULL or JSON null)."""
    if dialect == "postgresql":
        return case((func.json_typeof(Task.output) == "array", func.json_array_length(Task.output)), else_=0)
    return case((func.json_type(Task.output) == "array", func.json_array_length(Task.output)), else_=0)
