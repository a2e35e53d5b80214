"""What the console's pages show, read from the request log, tasks and ledger (SQL aggregates,
never whole tables into Python)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from statistics import median

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.db.models import LedgerEntry, RequestLog, Task


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _since(hours: int) -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=hours)


async def overview(sessions: async_sessionmaker, key_id: int | None, hours: int = 24) -> dict:
    """Requests, images, spend and errors per hour, and totals by model and by channel."""
    since = _since(hours)
    where = [RequestLog.created_at >= since] + ([RequestLog.key_id == key_id] if key_id is not None else [])
    failed = func.sum(case((RequestLog.status >= 400, 1), else_=0))
    columns = (func.count(), func.coalesce(func.sum(RequestLog.images_delivered), 0),
               func.coalesce(func.sum(RequestLog.cost), 0), failed)
    async with sessions() as session:
        rows = (await session.execute(select(RequestLog.created_at, RequestLog.status, RequestLog.images_delivered,
                                             RequestLog.cost).where(*where))).all()
        by_model = (await session.execute(select(RequestLog.model, *columns).where(*where)
                                          .group_by(RequestLog.model).order_by(func.count().desc()))).all()
        by_channel = (await session.execute(select(RequestLog.channel, *columns).where(*where)
                                            .group_by(RequestLog.channel).order_by(func.count().desc()))).all()
    start = since.replace(minute=0, second=0, microsecond=0)
    buckets = [start + timedelta(hours=i) for i in range(hours + 1)]
    series = {"t": [int(b.timestamp()) for b in buckets], "requests": [0] * len(buckets),
              "images": [0] * len(buckets), "spend": [0.0] * len(buckets), "errors": [0] * len(buckets)}
    for created, status, images, cost in rows:
        created = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
        i = min(len(buckets) - 1, max(0, int((created - start).total_seconds() // 3600)))
        series["requests"][i] += 1
        series["images"][i] += images or 0
        series["spend"][i] += float(cost or 0)
        series["errors"][i] += status >= 400
    table = lambda rows: [{"name": r[0] or "—", "requests": r[1], "images": r[2], "spend": Decimal(r[3] or 0),  # noqa: E731
                           "errors": r[4] or 0} for r in rows]
    totals = {k: sum(series[k]) for k in ("requests", "images", "errors")}
    totals["spend"] = sum(Decimal(str(v)) for v in series["spend"])
    totals["error_rate"] = (totals["errors"] / totals["requests"]) if totals["requests"] else 0.0
    return {"series": series, "by_model": table(by_model), "by_channel": table(by_channel), "totals": totals}


async def channel_health(sessions: async_sessionmaker, hours: int = 24) -> dict[str, dict]:
    """Per channel: last success, last failure (with its error), median latency of successes,
    and failovers (attempts that failed and were retried on another channel)."""
    async with sessions() as session:
        rows = (await session.execute(select(RequestLog.attempts, RequestLog.created_at)
                                      .where(RequestLog.created_at >= _since(hours))
                                      .order_by(RequestLog.created_at))).all()
    health: dict[str, dict] = {}
    for attempts, created in rows:
        for i, attempt in enumerate(attempts or []):
            entry = health.setdefault(attempt["channel"], {"ok": 0, "failed": 0, "failovers": 0, "latencies": [],
                                                           "last_success": None, "last_failure": None,
                                                           "last_error": None})
            if attempt.get("error"):
                entry["failed"] += 1
                entry["last_failure"], entry["last_error"] = created, attempt.get("message") or attempt["error"]
                if i + 1 < len(attempts):
                    entry["failovers"] += 1
            else:
                entry["ok"] += 1
                entry["last_success"] = created
                entry["latencies"].append(attempt.get("ms") or 0)
    for entry in health.values():
        entry["median_ms"] = round(median(entry.pop("latencies")), 1) if entry["ok"] else None
    return health


async def requests(sessions: async_sessionmaker, key_id: int | None, model: str | None, status: str | None,
                   limit: int = 100) -> list[RequestLog]:
    query = select(RequestLog).order_by(RequestLog.created_at.desc()).limit(limit)
    if key_id is not None:
        query = query.where(RequestLog.key_id == key_id)
    if model:
        query = query.where(RequestLog.model == model)
    if status == "ok":
        query = query.where(RequestLog.status < 400)
    elif status == "error":
        query = query.where(RequestLog.status >= 400)
    async with sessions() as session:
        return list((await session.execute(query)).scalars())


async def gallery(sessions: async_sessionmaker, key_id: int | None, limit: int = 60) -> list[dict]:
    """Recent images the gateway kept, each with the request that made it."""
    query = (select(RequestLog).where(RequestLog.images.is_not(None)).order_by(RequestLog.created_at.desc())
             .limit(limit))
    if key_id is not None:
        query = query.where(RequestLog.key_id == key_id)
    async with sessions() as session:
        rows = list((await session.execute(query)).scalars())
        tasks = select(Task).where(Task.output.is_not(None)).order_by(Task.completed_at.desc()).limit(limit)
        if key_id is not None:
            tasks = tasks.where(Task.key_id == key_id)
        done = list((await session.execute(tasks)).scalars())
    found = [{"id": i["id"], "format": i["format"], "model": r.model, "when": _aware(r.created_at), "request": r.id,
              "params": r.operation} for r in rows for i in (r.images or []) if i.get("kept", True)]
    found += [{"id": i["id"], "format": i["format"], "model": t.model, "when": _aware(t.completed_at), "request": t.request_id,
               "params": (t.request or {}).get("prompt") or ""} for t in done for i in (t.output or [])]
    found.sort(key=lambda g: g["when"] or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    return found[:limit]


async def ledger(sessions: async_sessionmaker, account_id: int, limit: int = 100) -> list[LedgerEntry]:
    async with sessions() as session:
        return list((await session.execute(select(LedgerEntry).where(LedgerEntry.account_id == account_id)
                                           .order_by(LedgerEntry.id.desc()).limit(limit))).scalars())


async def tasks(sessions: async_sessionmaker, key_id: int | None, limit: int = 100) -> list[Task]:
    query = select(Task).order_by(Task.created_at.desc()).limit(limit)
    if key_id is not None:
        query = query.where(Task.key_id == key_id)
    async with sessions() as session:
        return list((await session.execute(query)).scalars())
