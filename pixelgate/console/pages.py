"""The console's routes: one function per page or action, each calling the same services as the
admin API. Actions are POSTed forms (htmx swaps the answer in place), each CSRF-checked. A route
takes the services as the APIs' routes do (surfaces.deps.ServicesDep) and hands them to the
helpers here (session, form, rendering)."""

from __future__ import annotations

import json
import secrets
import time
from datetime import timezone
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from starlette.datastructures import UploadFile

from pixelgate.config import ChannelConfig
from pixelgate.console import data
from pixelgate.console.render import HERE, SECURITY_HEADERS, render
from pixelgate.console.session import (COOKIE, LOGIN_COOKIE, MAX_AGE, close, csrf_valid, current, open_session,
                                       principal_of, same)
from pixelgate.db.models import Account, RequestLog, Task
from pixelgate.domain.catalog import PRICE_DIMENSIONS, catalog
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.errors import GatewayError, InvalidRequest, NotFound
from pixelgate.providers.base import GENERATE
from pixelgate.services.auth import Principal, key_view
from pixelgate.services.engine import RequestContext
from pixelgate.services.routing import KNOWN_MODELS, _with_successors, channel_view
from pixelgate.services.shared import Services
from pixelgate.providers import REGISTRY
from pixelgate.surfaces import admin, deps
from pixelgate.surfaces.deps import ServicesDep
from pixelgate.surfaces._route import _validation_error
from pixelgate.surfaces._body import check_depth, invalid, parse

static = StaticFiles(directory=HERE / "static")

ADMIN_PAGES = ("channels", "keys", "accounts", "prices", "requests")
NAV = [("overview", "Overview"), ("channels", "Channels"), ("keys", "Keys"), ("accounts", "Accounts"),
       ("prices", "Prices"), ("requests", "Requests"), ("tasks", "Tasks"), ("playground", "Playground"),
       ("gallery", "Gallery")]


class NotSignedIn(Exception):
    pass


def _render(request: Request, services: Services, template: str, /, *, http_status: int = 200,
            **context: Any) -> HTMLResponse:
    principal = context.get("principal")
    nav = [(slug, label) for slug, label in NAV if principal is None or principal.is_admin or slug not in ADMIN_PAGES]
    return render(request, services, template, http_status=http_status, nav=nav, **context)


async def _who(request: Request, services: Services, page: str) -> Principal:
    principal = await principal_of(request, services)
    if principal is None:
        raise NotSignedIn()
    if page in ADMIN_PAGES and not principal.is_admin:
        raise GatewayError("This page needs an admin key.", status=403, code="admin_required")
    return principal


async def _form(request: Request, services: Services) -> dict[str, str]:
    """The POSTed form, once its CSRF token matches the session's. Files (a playground upload)
    wait in request.state.uploads as (filename, bytes)."""
    try:
        posted = await request.form(max_files=2, max_fields=60)
    except GatewayError:  # the body limit (surfaces/_limits.py)
        raise
    except Exception as exc:  # python-multipart reports malformed bodies with assorted types
        raise InvalidRequest(f"The form could not be read: {exc}.", code="invalid_form") from None
    form = {k: v for k, v in posted.items() if isinstance(v, str)}
    session = await current(request, services)
    if session is None or not csrf_valid(services.signer, session.id,
                                         form.get("csrf") or request.headers.get("x-csrf-token")):
        raise GatewayError("The form's security token is missing or stale: reload the page.", status=403,
                           code="csrf_failed")
    check_depth(form)  # a NUL in any field: PostgreSQL stores no text with one
    request.state.uploads = {}
    for name, value in posted.multi_items():
        if isinstance(value, UploadFile) and value.filename:
            request.state.uploads[name] = (value.filename, await value.read())
    return form


def _scope(principal: Principal) -> int | None:
    """The key whose data a page shows: every key's for an admin."""
    return None if principal.is_admin else principal.key_id


class ConsoleRoute(APIRoute):
    """Errors become pages: no session sends to the sign-in page, a refusal is shown as such.
    The error page is rendered outside the route's dependencies (which may be what failed), so
    it takes the services from surfaces.deps itself."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                _check_params(request)
                response = await handler(request)
            except NotSignedIn:
                response = RedirectResponse("/console/login", status_code=303)
            except (GatewayError, RequestValidationError) as exc:
                if isinstance(exc, RequestValidationError):  # a query or path value of the wrong type
                    exc = _validation_error(exc)
                template = "_error.html" if request.headers.get("hx-request") else "error.html"
                services = await deps.services(request)
                response = _render(request, services, template, http_status=exc.status, status=exc.status,
                                   message=exc.message, field=exc.field,
                                   principal=await principal_of(request, services))
            response.headers.update(SECURITY_HEADERS)
            return response

        return handle


def _check_params(request: Request) -> None:
    """Path and query values reach SQL: a NUL (which PostgreSQL refuses in text) is a 400."""
    for name, value in [*request.path_params.items(), *request.query_params.items()]:
        if isinstance(value, str) and "\x00" in value:
            raise InvalidRequest(f"'{name}' may not contain NUL characters.", field=name)


def _parse(model: type[BaseModel], data: dict) -> Any:
    """A form's fields through the admin API's own model: the same rules, the field named."""
    return parse(model, {k: v for k, v in data.items() if v not in (None, "")})


router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)


# -- signing in --

@router.get("/")
@router.get("/console")
async def home() -> Response:
    return RedirectResponse("/console/overview", status_code=303)


@router.get("/console/login")
async def login_page(request: Request, services: ServicesDep) -> Response:
    nonce = secrets.token_hex(16)
    response = _render(request, services, "login.html", principal=None, login_csrf=nonce, error=None)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict", path="/console")
    return response


@router.post("/console/login")
async def login(request: Request, services: ServicesDep) -> Response:
    """A key, checked as every API checks one: an address that keeps failing is throttled by the
    same count of failed authentications (services.auth_failures) as the APIs; a key that
    verifies is never throttled."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not same(expected, form.get("csrf", "")):
        return _render(request, services, "login.html", http_status=403, principal=None, login_csrf=expected or "",
                       error="The sign-in form expired: try again.")
    token = form.get("key", "").strip()
    address = request.client.host if request.client else ""
    try:
        principal = await services.keys.authenticate(token, address)  # a key that fails counts
    except GatewayError as exc:
        response = _render(request, services, "login.html", http_status=exc.status, principal=None,
                           login_csrf=expected, error=exc.message)
        response.headers.update(exc.headers)
        return response
    response = RedirectResponse("/console/overview", status_code=303)
    response.set_cookie(COOKIE, await open_session(services, principal), max_age=MAX_AGE, httponly=True,
                        samesite="strict", path="/console", secure=request.url.scheme == "https")
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/console/logout")
async def logout(request: Request, services: ServicesDep) -> Response:
    await _form(request, services)
    await close(request, services)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


# -- pages --

@router.get("/console/overview")
async def overview(request: Request, services: ServicesDep, days: int = 1) -> Response:
    principal = await _who(request, services, "overview")
    await services.records.flush()
    days = max(1, min(days, 31))
    report = await data.overview(services.sessions, _scope(principal), days)
    account = (await services.engine.billing.account(principal.account_id)
               if principal.account_id is not None and not principal.is_admin else None)
    return _render(request, services, "overview.html", principal=principal, report=report, days=days,
                   series=json.dumps(report["series"]), account=account)


@router.get("/console/channels")
async def channels(request: Request, services: ServicesDep) -> Response:
    principal = await _who(request, services, "channels")
    await services.records.flush()
    rows = [channel_view(r) | {"testable": testable_models(r.models, r.provider)} for r in await services.directory.list()]
    health = await data.channel_health(services.sessions)
    return _render(request, services, "channels.html", principal=principal, channels=rows, health=health,
                   providers=sorted(REGISTRY))


STATUS_RANK = {"current": 0, None: 1, "deprecated": 2, "retired": 3}


def testable_models(models: list[str], provider: str) -> list[str]:
    """The models a channel's Test can make an image with, best first: those its vendor still
    serves (current before deprecated; retired ones last, with their successors), and that generate."""
    vendor = REGISTRY.get(provider)
    served = _with_successors(list(models), vendor) if vendor else list(models)

    def caps(model: str):
        own = vendor.models.get(model) if vendor else None
        return own or (KNOWN_MODELS.get(model) or (None, vendor.generic if vendor else None))[1]

    def rank(model: str) -> int:
        entry = catalog().get(model)
        return STATUS_RANK[entry.status() if entry else None]

    makers = [m for m in served if (c := caps(m)) is None or GENERATE in c.operations]
    return sorted(makers, key=rank)


@router.post("/console/channels")
async def add_channel(request: Request, services: ServicesDep) -> Response:
    await _who(request, services, "channels")
    form = await _form(request, services)
    cfg = _parse(ChannelConfig, {**{k: form.get(k) for k in ("name", "provider", "base_url", "api_key", "priority",
                                                             "weight")}, "models": _names(form.get("models"))})
    await services.directory.create(cfg)
    return RedirectResponse("/console/channels", status_code=303)


@router.post("/console/channels/{name}/toggle")
async def toggle_channel(name: str, request: Request, services: ServicesDep) -> Response:
    await _who(request, services, "channels")
    await _form(request, services)
    directory = services.directory
    row = await directory.get(name)
    await directory.update(name, {"enabled": not row.enabled})
    return RedirectResponse("/console/channels", status_code=303)


@router.post("/console/channels/{name}/edit")
async def edit_channel(name: str, request: Request, services: ServicesDep) -> Response:
    await _who(request, services, "channels")
    form = await _form(request, services)
    changes: dict[str, Any] = {k: form[k] for k in ("base_url", "api_key", "priority", "weight") if form.get(k)}
    if form.get("models"):
        changes["models"] = _names(form["models"])
    try:
        await services.directory.update(name, changes)
    except ValidationError as exc:  # the same rules as the admin API's PATCH
        raise invalid(exc) from None
    return RedirectResponse("/console/channels", status_code=303)


@router.post("/console/channels/{name}/test")
async def test_channel(name: str, request: Request, services: ServicesDep) -> Response:
    """A real, small call through this channel alone: the image, or the exact upstream error."""
    principal = await _who(request, services, "channels")
    form = await _form(request, services)
    row = await services.directory.get(name)
    choices = testable_models(row.models, row.provider)
    model = form.get("model") or (choices[0] if choices else row.models[0])
    if model not in choices and model not in row.models:
        raise InvalidRequest(f"Channel {name} does not serve model '{model}'.", field="model")
    req = ImageRequest(operation=Operation.GENERATE, model=model, prompt="a small test image: a red circle",
                       channel=name, delivery=Delivery.URL)
    ctx = _context(request, principal)
    started = time.perf_counter()
    try:
        result = await services.engine.generate(req, ctx)
        outcome = {"ok": True, "images": [i.url for i in result.images]}
    except GatewayError as exc:
        outcome = {"ok": False, "error": exc.message, "code": exc.code, "status": exc.status}
    finally:
        await ctx.finish()
    status = 200 if outcome["ok"] else outcome["status"]
    services.log_request(ctx, status, None if outcome["ok"] else GatewayError(outcome["error"], code=outcome["code"]))
    return _render(request, services, "_test_result.html", principal=principal, name=name, model=model, outcome=outcome,
                   ms=round((time.perf_counter() - started) * 1000))


@router.get("/console/keys")
async def keys(request: Request, services: ServicesDep) -> Response:
    principal = await _who(request, services, "keys")
    async with services.sessions() as session:
        accounts = list((await session.execute(select(Account).order_by(Account.id))).scalars())
    return _render(request, services, "keys.html", principal=principal,
                   keys=[key_view(k) for k in await services.keys.list()], accounts=accounts, created=None)


@router.post("/console/keys")
async def create_key(request: Request, services: ServicesDep) -> Response:
    principal = await _who(request, services, "keys")
    form = await _form(request, services)
    body = _parse(admin.KeyCreate, {**{k: form.get(k) for k in ("name", "account_id", "rate_limit_rpm",
                                                                   "max_concurrent", "expires_at")},
                                    "allowed_models": _names(form.get("allowed_models")) or None,
                                    "is_admin": form.get("is_admin") == "on"})
    if body.account_id is not None:
        await services.engine.billing.account(body.account_id)
    expires = body.expires_at
    if expires is not None and expires.tzinfo is None:  # a datetime-local field: taken as UTC
        expires = expires.replace(tzinfo=timezone.utc)
    row, token = await services.keys.create(
        body.name, is_admin=body.is_admin, expires_at=expires, allowed_models=body.allowed_models,
        account_id=body.account_id, rate_limit_rpm=body.rate_limit_rpm, max_concurrent=body.max_concurrent)
    async with services.sessions() as session:
        accounts = list((await session.execute(select(Account).order_by(Account.id))).scalars())
    return _render(request, services, "keys.html", principal=principal,
                   keys=[key_view(k) for k in await services.keys.list()], accounts=accounts,
                   created={"name": row.name, "key": token})


@router.post("/console/keys/{key_id}/toggle")
async def toggle_key(key_id: int, request: Request, services: ServicesDep) -> Response:
    await _who(request, services, "keys")
    await _form(request, services)
    keys_ = services.keys
    row = await keys_.get(admin._id(key_id, "API key"))
    await keys_.update(key_id, enabled=not row.enabled)
    return _redirect(request, "/console/keys")


def _redirect(request: Request, url: str) -> Response:
    """Where to go after an action: htmx follows HX-Redirect with a full page load."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"hx-redirect": url})
    return RedirectResponse(url, status_code=303)


@router.get("/console/accounts")
async def accounts(request: Request, services: ServicesDep, account: int | None = None) -> Response:
    principal = await _who(request, services, "accounts")
    if account is not None:
        admin._id(account, "account", "account")
    async with services.sessions() as session:
        rows = list((await session.execute(select(Account).order_by(Account.id))).scalars())
    entries = await data.ledger(services.sessions, account) if account else []
    return _render(request, services, "accounts.html", principal=principal, accounts=rows, selected=account,
                   ledger=entries, currency=services.engine.billing.currency)


@router.post("/console/accounts")
async def create_account(request: Request, services: ServicesDep) -> Response:
    await _who(request, services, "accounts")
    form = await _form(request, services)
    body = _parse(admin.AccountCreate, {k: form.get(k) for k in ("name", "balance", "spend_limit")})
    account = await services.engine.billing.create_account(body.name, body.balance, body.spend_limit, body.markup)
    return RedirectResponse(f"/console/accounts?account={account.id}", status_code=303)


@router.post("/console/accounts/{account_id}/topup")
async def top_up(account_id: int, request: Request, services: ServicesDep) -> Response:
    await _who(request, services, "accounts")
    form = await _form(request, services)
    admin._id(account_id, "account", "account_id")
    body = _parse(admin.TopUp, {k: form.get(k) for k in ("amount", "reference")})
    await services.engine.billing.top_up(account_id, body.amount, body.reference)
    return RedirectResponse(f"/console/accounts?account={account_id}", status_code=303)


@router.get("/console/prices")
async def prices(request: Request, services: ServicesDep) -> Response:
    principal = await _who(request, services, "prices")
    billing = services.engine.billing
    origin = {1: "built-in", 2: "config file", 3: "console / admin API"}
    rows = [{"model": p.model, "operation": p.operation, "dimensions": p.dimensions, "amount": p.amount,
             "tokens": p.tokens, "price_currency": p.currency, "origin": origin[rank],
             "source": f"{p.source} ({p.date})" if p.date else p.source}
            for model, entries in sorted((await billing.table()).items()) for rank, p in entries]
    return _render(request, services, "prices.html", principal=principal, prices=rows)


@router.post("/console/prices")
async def set_price(request: Request, services: ServicesDep) -> Response:
    await _who(request, services, "prices")
    form = await _form(request, services)
    body = _parse(admin.PriceCreate, {**{k: form.get(k) for k in ("model", "amount", "currency", "operation")},
                                      "dimensions": {k: form[k] for k in PRICE_DIMENSIONS
                                                     if form.get(k)}})
    await services.engine.billing.set_price(body.model, body.amount, body.currency, body.operation,
                                            dict(body.dimensions))  # the newest wins, as on the admin API
    await services.invalidation.changed("prices")
    return RedirectResponse("/console/prices", status_code=303)


@router.get("/console/requests")
async def request_log(request: Request, services: ServicesDep, model: str | None = None, status: str | None = None,
                      key: int | None = None) -> Response:
    principal = await _who(request, services, "requests")
    await services.records.flush()
    if key is not None:
        admin._id(key, "API key", "key")
    rows = await data.requests(services.sessions, key, model or None, status or None)
    return _render(request, services, "requests.html", principal=principal, rows=rows, model=model or "",
                   status_filter=status or "", key=key or "")


@router.get("/console/requests/{request_id}")
async def request_detail(request_id: str, request: Request, services: ServicesDep) -> Response:
    principal = await _who(request, services, "requests")
    async with services.sessions() as session:
        row = await session.get(RequestLog, request_id)
    if row is None:
        raise NotFound(f"No request {request_id}.")
    return _render(request, services, "request.html", principal=principal, row=row)


@router.get("/console/tasks")
async def tasks(request: Request, services: ServicesDep) -> Response:
    principal = await _who(request, services, "tasks")
    rows = await data.tasks(services.sessions, _scope(principal))
    return _render(request, services, "tasks.html", principal=principal, rows=rows)


def _context(request: Request, principal: Principal) -> RequestContext:
    return RequestContext(request_id="req_" + secrets.token_hex(12), surface="console",
                          base_url=str(request.base_url), principal=principal)


async def _task_of(services: Services, principal: Principal, task_id: str) -> Task:
    """A task the signed-in key may see: its own, or any for an admin."""
    async with services.sessions() as session:
        task = await session.get(Task, task_id)
    if task is None or (not principal.is_admin and task.key_id != principal.key_id):
        raise NotFound(f"No task {task_id}.", field="task")
    return task


@router.get("/console/tasks/{task_id}")
async def task_detail(task_id: str, request: Request, services: ServicesDep) -> Response:
    principal = await _who(request, services, "tasks")
    task = await _task_of(services, principal, task_id)
    template = "_task.html" if request.headers.get("hx-request") else "task.html"
    return _render(request, services, template, principal=principal, task=task,
                   deliveries=await services.tasks.deliveries(task_id))


@router.post("/console/tasks/{task_id}/cancel")
async def cancel_task(task_id: str, request: Request, services: ServicesDep) -> Response:
    principal = await _who(request, services, "tasks")
    await _form(request, services)
    task = await _task_of(services, principal, task_id)
    await services.tasks.cancel(task_id, task.key_id)
    return RedirectResponse(f"/console/tasks/{task_id}", status_code=303)


@router.get("/console/gallery")
async def gallery(request: Request, services: ServicesDep, page: int = 0) -> Response:
    principal = await _who(request, services, "gallery")
    await services.records.flush()
    page = max(0, min(page, 10_000))
    images, more = await data.gallery(services.sessions, _scope(principal), page)
    return _render(request, services, "gallery.html", principal=principal, images=images, page=page, more=more)


def _names(value: str | None) -> list[str]:
    """A comma-separated list of names (models), as the forms take it."""
    return [m.strip() for m in (value or "").split(",") if m.strip()]

