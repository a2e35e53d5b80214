"""What the console's pages show, read from the request log, tasks and ledger (SQL aggregates,
never whole tables into Python)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from statistics import median

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.db.models import LedgerEntry, RequestLog, Task
from pixelgate.services.usage import usage


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _since(hours: int) -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=hours)


async def overview(sessions: async_sessionmaker, key_id: int | None, days: int = 1) -> dict:
    """Requests, images, spend and errors per hour, and totals by model and by channel: the
    figures of GET /admin/usage (services.usage, synchronous requests and tasks alike)."""
    hourly, by_model, by_channel = [await usage(sessions, group, key_id, days) for group in ("hour", "model", "channel")]
    start = datetime.fromisoformat(hourly["since"]).replace(minute=0, second=0, microsecond=0)
    buckets = [start + timedelta(hours=i) for i in range(days * 24 + 1)]
    index = {b.strftime("%Y-%m-%dT%H:00"): i for i, b in enumerate(buckets)}
    series: dict[str, list] = {"t": [int(b.timestamp()) for b in buckets], "requests": [0] * len(buckets),
                               "images": [0] * len(buckets), "spend": [0.0] * len(buckets), "errors": [0] * len(buckets)}
    for row in hourly["data"]:
        i = index.get(row["hour"])
        if i is not None:
            series["requests"][i], series["images"][i] = row["requests"], row["images"]
            series["errors"][i], series["spend"][i] = row["failed"], float(row["cost"])  # chart points only
    requests = sum(r["requests"] for r in by_model["data"])
    errors = sum(r["failed"] for r in by_model["data"])
    totals = {"requests": requests, "images": by_model["total_images"], "spend": by_model["total_cost"],
              "errors": errors, "error_rate": errors / requests if requests else 0.0}

    def table(report: dict, group: str) -> list[dict]:
        rows = sorted(report["data"], key=lambda r: -r["requests"])
        return [{"name": "—" if r[group] == "None" else r[group], "requests": r["requests"], "images": r["images"],
                 "spend": r["cost"], "errors": r["failed"]} for r in rows]

    return {"series": series, "by_model": table(by_model, "model"), "by_channel": table(by_channel, "channel"),
            "totals": totals}


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


async def gallery(sessions: async_sessionmaker, key_id: int | None, page: int = 0,
                  per_page: int = 60) -> tuple[list[dict], bool]:
    """One page of the images the gateway kept (newest first), each with its model, prompt and
    request, from the request log (synchronous answers) and from finished tasks; and whether an
    older page exists. Rows without a kept image (a poll, a refusal, base64 not kept) are passed
    over, not counted against the page."""
    want = (page + 1) * per_page + 1
    logs = select(RequestLog).where(RequestLog.images_delivered > 0).order_by(RequestLog.created_at.desc())
    done = select(Task).where(Task.status == "succeeded").order_by(Task.completed_at.desc())
    if key_id is not None:
        logs, done = logs.where(RequestLog.key_id == key_id), done.where(Task.key_id == key_id)

    def logged(r: RequestLog) -> list[dict]:
        return [{"id": i["id"], "format": i["format"], "model": r.model, "when": _aware(r.created_at),
                 "request": r.id, "prompt": i.get("prompt") or ""} for i in r.images or [] if i.get("kept", True)]

    def made(t: Task) -> list[dict]:
        prompt = (t.request or {}).get("prompt") or (t.input or {}).get("prompt") or ""
        return [{"id": i["id"], "format": i["format"], "model": t.model, "when": _aware(t.completed_at),
                 "request": t.request_id, "task": t.id, "prompt": prompt} for i in t.output or []]

    async with sessions() as session:
        found = [*await _collect(session, logs, logged, want), *await _collect(session, done, made, want)]
    found.sort(key=lambda g: g["when"] or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    seen: set[str] = set()
    unique = [g for g in found if not (g["id"] in seen or seen.add(g["id"]))]  # a task's images are on its request too
    return unique[page * per_page:(page + 1) * per_page], len(unique) > (page + 1) * per_page


async def _collect(session, query, images_of, want: int, batch: int = 200) -> list[dict]:
    """The images of the query's rows, newest first, until `want` of them (or the rows) run out."""
    found: list[dict] = []
    offset = 0
    while len(found) < want:
        rows = list((await session.execute(query.limit(batch).offset(offset))).scalars())
        found += [image for row in rows for image in images_of(row)]
        if len(rows) < batch:
            break
        offset += batch
    return found


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
