"""The admin JSON API under /admin/ (admin keys only): keys, channels and the request log.
Upstream keys are accepted here but never returned."""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import delete, select

from pixelgate.config import ChannelConfig
from pixelgate.db.models import PriceRow, RequestLog, Task
from pixelgate.domain.catalog import PriceDimension, TokenRates
from pixelgate.errors import InvalidRequest, NotFound
from pixelgate.services.auth import key_view, presented_token
from pixelgate.services.routing import channel_view, channel_warnings
from pixelgate.services import metrics
from pixelgate.services.usage import MAX_ID, usage
from pixelgate.surfaces._answers import (AccountView, AdminTask, ChannelList, ChannelView, KeyList, KeyView,
                                         NewChannel, NewKey, NewPrice, OpenAIError, PriceList, RequestList,
                                         UsageReport)
from pixelgate.surfaces._body import JsonBody, invalid, parse
from pixelgate.surfaces._route import openai_error, surface_route
from pixelgate.surfaces._json import JSONResponse
from pixelgate.surfaces._openapi import Errors, body, json, ok, schema_of
from pixelgate.surfaces.deps import (AdminDep, BillingDep, DirectoryDep, KeysDep, ServicesDep, SettingsDep,
                                     admin_caller, principal)

router = APIRouter(prefix="/admin", route_class=surface_route("admin", openai_error, logged=False), tags=["Admin"])
metrics_router = APIRouter(route_class=surface_route("admin", openai_error, logged=False), tags=["Admin"])
"""GET /metrics, where Prometheus looks by default."""
ERRORS = Errors(OpenAIError, always=(401, 403, 429, 500), notes={403: "The key is not an admin key"})
GONE = {"description": "Deleted"}


MAX_AMOUNT = Decimal("999999999999")
"""Money columns are NUMERIC(20, 8): twelve digits before the point."""


def _id(value: int, what: str, field: str = "id") -> int:
    """A path id beyond the INTEGER columns names nothing (and would fail in the query)."""
    if not 1 <= value <= MAX_ID:
        raise NotFound(f"No {what} with id {value}.", field=field)
    return value


def _not_null(value: Any) -> Any:
    """A PATCH leaves out what it keeps; a null for a column that cannot be empty is refused (a
    400 naming the field) rather than reaching the database (a 500)."""
    if value is None:
        raise ValueError("it cannot be null (leave the field out to keep its value)")
    return value


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    expires_at: datetime | None = None
    allowed_models: list[str] | None = None
    is_admin: bool = False
    account_id: int | None = Field(default=None, le=MAX_ID, ge=-MAX_ID)
    rate_limit_rpm: int | None = Field(default=None, ge=1, le=MAX_ID)
    max_concurrent: int | None = Field(default=None, ge=1, le=MAX_ID)
    group: str | None = Field(default=None, min_length=1, max_length=64)


class KeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=128)
    expires_at: datetime | None = None
    allowed_models: list[str] | None = None
    enabled: bool | None = None
    account_id: int | None = Field(default=None, le=MAX_ID, ge=-MAX_ID)
    rate_limit_rpm: int | None = Field(default=None, ge=1, le=MAX_ID)
    max_concurrent: int | None = Field(default=None, ge=1, le=MAX_ID)
    group: str | None = Field(default=None, min_length=1, max_length=64)
    _present = field_validator("name", "enabled", mode="before")(_not_null)


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    balance: Decimal | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    spend_limit: Decimal | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    markup: Decimal = Field(default=Decimal(1), gt=0, le=1000)
    """Every price the account pays is multiplied by it (1.2: list price + 20%)."""


class AccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=128)
    spend_limit: Decimal | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    markup: Decimal | None = Field(default=None, gt=0, le=1000)
    _present = field_validator("name", "markup", mode="before")(_not_null)


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    reference: str = Field(default_factory=lambda: "topup_" + secrets.token_hex(8), min_length=1, max_length=48)


def account_view(account) -> dict:
    return {"id": account.id, "name": account.name, "balance": account.balance, "reserved": account.reserved,
            "spent": account.spent, "spend_limit": account.spend_limit, "markup": account.markup,
            "available": None if account.balance is None else Decimal(account.balance) - Decimal(account.reserved)}


@router.get("/metrics", summary="Prometheus metrics",
            responses={**ok(None, also={"text/plain": {"type": "string", "description": metrics.CONTENT_TYPE}}),
                       **ERRORS()})
@metrics_router.get("/metrics", summary="Prometheus metrics (also with the metrics_token)",
                    responses={**ok(None, also={"text/plain": {"type": "string", "description": metrics.CONTENT_TYPE}}),
                               **ERRORS()})
async def prometheus_metrics(request: Request, settings: SettingsDep) -> Response:
    """Prometheus text format; scrape it with the `metrics_token` (or the admin key) as bearer token."""
    expected = settings.metrics_token
    token = presented_token(request.headers)
    if not (expected and token and hmac.compare_digest(token.encode(), expected.encode())):
        await admin_caller(await principal(request))
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


@router.get("/keys", summary="List keys", responses={**ok(KeyList), **ERRORS()})
async def list_keys(_: AdminDep, keys: KeysDep) -> Response:
    return JSONResponse({"data": [key_view(k) for k in await keys.list()]})


@router.post("/keys", summary="Create a key", status_code=201, responses={**ok(NewKey, 201), **ERRORS(400, 404, 413)},
             openapi_extra=body(json(KeyCreate)))
async def create_key(_: AdminDep, data: JsonBody, keys: KeysDep, billing: BillingDep) -> Response:
    new = parse(KeyCreate, data)
    if new.account_id is not None:
        await billing.account(new.account_id)
    row, token = await keys.create(
        new.name, is_admin=new.is_admin, expires_at=new.expires_at, allowed_models=new.allowed_models,
        account_id=new.account_id, rate_limit_rpm=new.rate_limit_rpm, max_concurrent=new.max_concurrent,
        group=new.group)
    return JSONResponse({**key_view(row), "key": token}, status_code=201)


@router.get("/keys/{key_id}", summary="Get a key", responses={**ok(KeyView), **ERRORS(400, 404)})
async def get_key(key_id: int, _: AdminDep, keys: KeysDep) -> Response:
    return JSONResponse(key_view(await keys.get(_id(key_id, "API key"))))


@router.patch("/keys/{key_id}", summary="Update a key", responses={**ok(KeyView), **ERRORS(400, 404, 413)},
              openapi_extra=body(json(KeyUpdate)))
async def update_key(key_id: int, _: AdminDep, data: JsonBody, keys: KeysDep, billing: BillingDep) -> Response:
    _id(key_id, "API key")
    update = parse(KeyUpdate, data)
    if update.account_id is not None:  # as on creation: a key pays from an account that exists
        await billing.account(update.account_id)
    row = await keys.update(key_id, **update.model_dump(exclude_unset=True))
    return JSONResponse(key_view(row))


@router.delete("/keys/{key_id}", summary="Delete a key", status_code=204, responses={204: GONE, **ERRORS(400, 404)})
async def delete_key(key_id: int, _: AdminDep, keys: KeysDep) -> Response:
    await keys.delete(_id(key_id, "API key"))
    return Response(status_code=204)


@router.get("/channels", summary="List channels", responses={**ok(ChannelList), **ERRORS()})
async def list_channels(_: AdminDep, directory: DirectoryDep) -> Response:
    return JSONResponse({"data": [channel_view(c) for c in await directory.list()]})


@router.post("/channels", summary="Create a channel", status_code=201,
             responses={**ok(NewChannel, 201), **ERRORS(400, 413)}, openapi_extra=body(json(ChannelConfig)))
async def create_channel(_: AdminDep, data: JsonBody, directory: DirectoryDep, settings: SettingsDep,
                         billing: BillingDep) -> Response:
    cfg = parse(ChannelConfig, data)
    row = await directory.create(cfg)
    warnings = channel_warnings(cfg, settings.unpriced == "refuse", await billing.table())
    return JSONResponse({**channel_view(row), "warnings": warnings}, status_code=201)


@router.get("/channels/{name}", summary="Get a channel", responses={**ok(ChannelView), **ERRORS(404)})
async def get_channel(name: str, _: AdminDep, directory: DirectoryDep) -> Response:
    return JSONResponse(channel_view(await directory.get(name)))


@router.patch("/channels/{name}", summary="Update a channel", responses={**ok(ChannelView), **ERRORS(400, 404, 413)},
              openapi_extra=body(json({"type": "object", "properties": schema_of(ChannelConfig)["properties"]})))
async def update_channel(name: str, _: AdminDep, changes: JsonBody, directory: DirectoryDep) -> Response:
    unknown = set(changes) - set(ChannelConfig.model_fields) - {"name"}
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidRequest(f"Unknown channel field '{field}'.", field=field, code="unknown_parameter")
    try:
        row = await directory.update(name, changes)
    except ValidationError as exc:  # the channel as changed, checked as a new one is
        raise invalid(exc) from None
    return JSONResponse(channel_view(row))


@router.delete("/channels/{name}", summary="Delete a channel", status_code=204, responses={204: GONE, **ERRORS(404)})
async def delete_channel(name: str, _: AdminDep, directory: DirectoryDep) -> Response:
    await directory.delete(name)
    return Response(status_code=204)


@router.get("/requests", summary="The request log", responses={**ok(RequestList), **ERRORS(400)})
async def list_requests(_: AdminDep, services: ServicesDep, limit: int = 50) -> Response:
    await services.records.flush()
    async with services.sessions() as session:
        rows = (await session.execute(
            select(RequestLog).order_by(RequestLog.created_at.desc()).limit(min(max(limit, 1), 1000)))).scalars()
        data = [{c: getattr(r, c) for c in ("id", "key_id", "surface", "operation", "model", "channel",
                                            "status", "error_code", "error", "images_requested",
                                            "images_delivered", "latency_ms", "cost", "images", "attempts")}
                | {"created_at": r.created_at.isoformat()} for r in rows]
    return JSONResponse({"data": data})


# ---- accounts, prices, usage ----

@router.post("/accounts", summary="Create an account", status_code=201,
             responses={**ok(AccountView, 201), **ERRORS(400, 413)}, openapi_extra=body(json(AccountCreate)))
async def create_account(_: AdminDep, data: JsonBody, billing: BillingDep) -> Response:
    new = parse(AccountCreate, data)
    account = await billing.create_account(new.name, new.balance, new.spend_limit, new.markup)
    return JSONResponse(account_view(account), status_code=201)


@router.patch("/accounts/{account_id}", summary="Update an account",
              responses={**ok(AccountView), **ERRORS(400, 404, 413)}, openapi_extra=body(json(AccountUpdate)))
async def update_account(account_id: int, _: AdminDep, data: JsonBody, billing: BillingDep, keys: KeysDep) -> Response:
    _id(account_id, "account", "account_id")
    account = await billing.update_account(account_id, **parse(AccountUpdate, data).model_dump(exclude_unset=True))
    await keys.changed()  # a key's principal carries its account's markup
    return JSONResponse(account_view(account))


@router.get("/accounts/{account_id}", summary="Get an account", responses={**ok(AccountView), **ERRORS(400, 404)})
async def get_account(account_id: int, _: AdminDep, billing: BillingDep) -> Response:
    return JSONResponse(account_view(await billing.account(_id(account_id, "account", "account_id"))))


@router.post("/accounts/{account_id}/topup", summary="Top up an account",
             responses={**ok(AccountView), **ERRORS(400, 404, 413)}, openapi_extra=body(json(TopUp)))
async def top_up(account_id: int, _: AdminDep, data: JsonBody, billing: BillingDep) -> Response:
    _id(account_id, "account", "account_id")
    given = parse(TopUp, data)
    account = await billing.top_up(account_id, given.amount, given.reference)
    return JSONResponse(account_view(account))


class PriceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=128)
    amount: Decimal = Field(default=Decimal(0), ge=0, le=MAX_AMOUNT)
    tokens: TokenRates | None = None
    """A token price (per million tokens); `amount` is then ignored."""
    currency: str | None = Field(default=None, min_length=3, max_length=8)
    operation: str = Field(default="*", min_length=1, max_length=32)
    dimensions: dict[PriceDimension, str] = Field(default_factory=dict)


@router.get("/prices", summary="The price table", responses={**ok(PriceList), **ERRORS()})
async def list_prices(_: AdminDep, billing: BillingDep) -> Response:
    """The effective price table: built-in defaults, config-file prices and admin prices."""
    origin = {1: "default", 2: "config", 3: "admin"}
    data = [{"model": p.model, "operation": p.operation, "dimensions": p.dimensions, "amount": p.amount,
             "tokens": p.tokens.model_dump(mode="json") if p.tokens else None,
             "currency": p.currency, "origin": origin[rank], "source": p.source, "date": p.date}
            for model, entries in sorted((await billing.table()).items()) for rank, p in entries]
    return JSONResponse({"currency": billing.currency, "data": data})


@router.post("/prices", summary="Set a price", status_code=201, responses={**ok(NewPrice, 201), **ERRORS(400, 413)},
             openapi_extra=body(json(PriceCreate)))
async def create_price(_: AdminDep, data: JsonBody, services: ServicesDep) -> Response:
    """Set the price of (model, operation, dimensions): 201 with a new entry, 200 when it
    replaces the one set before (the newest price wins)."""
    price = parse(PriceCreate, data)
    row, new = await services.engine.billing.set_price(price.model, price.amount, price.currency, price.operation,
                                                       price.dimensions, price.tokens)
    await services.invalidation.changed("prices")
    return JSONResponse({"id": row.id, **price.model_dump(mode="json"), "currency": row.currency},
                        status_code=201 if new else 200)


@router.delete("/prices/{price_id}", summary="Delete a price", status_code=204,
               responses={204: GONE, **ERRORS(400, 404)})
async def delete_price(price_id: int, _: AdminDep, services: ServicesDep) -> Response:
    _id(price_id, "price")
    async with services.sessions() as session, session.begin():
        result = await session.execute(delete(PriceRow).where(PriceRow.id == price_id))
    if result.rowcount == 0:
        raise NotFound(f"No price with id {price_id}.", field="id")
    await services.invalidation.changed("prices")
    return Response(status_code=204)


@router.get("/usage", summary="Usage of every key", responses={**ok(UsageReport), **ERRORS(400)})
async def all_usage(_: AdminDep, services: ServicesDep, group_by: str = "model", key_id: int | None = None,
                    days: int = 30) -> Response:
    await services.records.flush()
    report = await usage(services.sessions, group_by, key_id, days)
    return JSONResponse({"currency": services.engine.billing.currency, **report})


@router.get("/tasks/{task_id}", summary="Any key's task", responses={**ok(AdminTask), **ERRORS(404)})
async def get_task(task_id: str, _: AdminDep, services: ServicesDep) -> Response:
    """Any key's task, with every webhook delivery and attempt."""
    async with services.sessions() as session:
        task = await session.get(Task, task_id)
    if task is None:
        raise NotFound(f"No task with id '{task_id}'.", field="id")
    deliveries = [{"id": d.id, "event": d.event, "url": d.url, "delivered": d.delivered, "attempts": d.attempts,
                   "last_status": d.last_status, "last_error": d.last_error, "log": d.log}
                  for d in await services.tasks.deliveries(task_id)]
    return JSONResponse({"id": task.id, "key_id": task.key_id, "model": task.model_path, "status": task.status,
                         "channel": task.channel, "jobs": task.jobs, "error": task.error, "cost": task.cost,
                         "created_at": task.created_at.isoformat(), "webhooks": deliveries})
