"""The console's routes: one function per page or action, each calling the same services as the
admin API. Actions are POSTed forms (htmx swaps the answer in place), each CSRF-checked."""

from __future__ import annotations

import json
import secrets
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy import select

from pixelgate.config import ChannelConfig
from pixelgate.console import data
from pixelgate.console.session import (COOKIE, LOGIN_COOKIE, MAX_AGE, csrf_token, csrf_valid, new_session,
                                       principal_of, read_session)
from pixelgate.db.models import Account, RequestLog, Task
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.errors import GatewayError, NotFound
from pixelgate.services.auth import Principal, key_view
from pixelgate.services.engine import RequestContext, StreamCompleted
from pixelgate.services.routing import channel_view
from pixelgate.services.storage import file_name

HERE = Path(__file__).parent
templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
static = StaticFiles(directory=HERE / "static")

ADMIN_PAGES = ("channels", "keys", "accounts", "prices", "requests")
NAV = [("overview", "Overview"), ("channels", "Channels"), ("keys", "Keys"), ("accounts", "Accounts"),
       ("prices", "Prices"), ("requests", "Requests"), ("tasks", "Tasks"), ("playground", "Playground"),
       ("gallery", "Gallery")]


class NotSignedIn(Exception):
    pass


def _render(request: Request, template: str, /, *, http_status: int = 200, **context: Any) -> HTMLResponse:
    session = read_session(request)
    principal = context.get("principal")
    nav = [(slug, label) for slug, label in NAV if principal is None or principal.is_admin or slug not in ADMIN_PAGES]
    html = templates.get_template(template).render(
        request=request, nav=nav, csrf=csrf_token(request, session["n"]) if session else "",
        image_url=lambda image: _image_url(request, image), **context)
    return HTMLResponse(html, status_code=http_status, headers={"cache-control": "no-store"})


def _image_url(request: Request, image: dict) -> str:
    return request.app.state.services.signer.url(str(request.base_url), file_name(image["id"], image["format"]))


async def _who(request: Request, page: str) -> Principal:
    principal = await principal_of(request)
    if principal is None:
        raise NotSignedIn()
    if page in ADMIN_PAGES and not principal.is_admin:
        raise GatewayError("This page needs an admin key.", status=403, code="admin_required")
    return principal


async def _form(request: Request) -> dict[str, str]:
    """The POSTed form, once its CSRF token matches the session's."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    session = read_session(request)
    if session is None or not csrf_valid(request, session["n"], form.get("csrf") or request.headers.get("x-csrf-token")):
        raise GatewayError("The form's security token is missing or stale: reload the page.", status=403,
                           code="csrf_failed")
    return form


def _scope(principal: Principal) -> int | None:
    """The key whose data a page shows: every key's for an admin."""
    return None if principal.is_admin else principal.key_id


class ConsoleRoute(APIRoute):
    """Errors become pages: no session sends to the sign-in page, a refusal is shown as such."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except NotSignedIn:
                return RedirectResponse("/console/login", status_code=303)
            except GatewayError as exc:
                return _render(request, "error.html", http_status=exc.status, message=exc.message,
                               principal=await principal_of(request))

        return handle


router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)


# -- signing in --

@router.get("/")
@router.get("/console")
async def home() -> Response:
    return RedirectResponse("/console/overview", status_code=303)


@router.get("/console/login")
async def login_page(request: Request) -> Response:
    nonce = secrets.token_hex(16)
    response = _render(request, "login.html", principal=None, login_csrf=nonce, error=None)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict", path="/console")
    return response


@router.post("/console/login")
async def login(request: Request) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not secrets.compare_digest(expected, form.get("csrf", "")):
        return _render(request, "login.html", http_status=403, principal=None, login_csrf=expected or "",
                       error="The sign-in form expired: try again.")
    token = form.get("key", "").strip()
    try:
        await request.app.state.services.keys.authenticate(token)
    except GatewayError as exc:
        return _render(request, "login.html", http_status=401, principal=None, login_csrf=expected, error=exc.message)
    response = RedirectResponse("/console/overview", status_code=303)
    response.set_cookie(COOKIE, new_session(request, token), max_age=MAX_AGE, httponly=True, samesite="strict",
                        path="/console", secure=request.url.scheme == "https")
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    await _form(request)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


# -- pages --

@router.get("/console/overview")
async def overview(request: Request, hours: int = 24) -> Response:
    principal = await _who(request, "overview")
    services = request.app.state.services
    await services.records.flush()
    report = await data.overview(services.sessions, _scope(principal), max(1, min(hours, 24 * 31)))
    return _render(request, "overview.html", principal=principal, report=report, hours=hours,
                   series=json.dumps(report["series"]), currency=services.engine.billing.currency)


@router.get("/console/channels")
async def channels(request: Request, message: str | None = None) -> Response:
    principal = await _who(request, "channels")
    services = request.app.state.services
    await services.records.flush()
    rows = [channel_view(r) for r in await services.directory.list()]
    health = await data.channel_health(services.sessions)
    from pixelgate.providers import REGISTRY

    return _render(request, "channels.html", principal=principal, channels=rows, health=health,
                   providers=sorted(REGISTRY), message=message)


@router.post("/console/channels")
async def add_channel(request: Request) -> Response:
    await _who(request, "channels")
    form = await _form(request)
    services = request.app.state.services
    try:
        cfg = ChannelConfig(name=form.get("name", ""), provider=form.get("provider", ""),
                            base_url=form.get("base_url") or None, api_key=form.get("api_key") or None,
                            models=[m.strip() for m in form.get("models", "").split(",") if m.strip()],
                            priority=int(form.get("priority") or 0), weight=int(form.get("weight") or 1))
    except (ValidationError, ValueError) as exc:
        return await channels(request, message=f"Not added: {_first_error(exc)}")
    await services.directory.create(cfg)
    return RedirectResponse("/console/channels", status_code=303)


@router.post("/console/channels/{name}/toggle")
async def toggle_channel(name: str, request: Request) -> Response:
    await _who(request, "channels")
    await _form(request)
    directory = request.app.state.services.directory
    row = await directory.get(name)
    await directory.update(name, {"enabled": not row.enabled})
    return RedirectResponse("/console/channels", status_code=303)


@router.post("/console/channels/{name}/edit")
async def edit_channel(name: str, request: Request) -> Response:
    await _who(request, "channels")
    form = await _form(request)
    changes: dict[str, Any] = {}
    for field in ("base_url", "api_key"):
        if form.get(field):
            changes[field] = form[field]
    if form.get("models"):
        changes["models"] = [m.strip() for m in form["models"].split(",") if m.strip()]
    for field in ("priority", "weight"):
        if form.get(field):
            changes[field] = int(form[field])
    try:
        await request.app.state.services.directory.update(name, changes)
    except (ValidationError, ValueError) as exc:
        return await channels(request, message=f"Not saved: {_first_error(exc)}")
    return RedirectResponse("/console/channels", status_code=303)


@router.post("/console/channels/{name}/test")
async def test_channel(name: str, request: Request) -> Response:
    """A real, small call through this channel alone: the image, or the exact upstream error."""
    principal = await _who(request, "channels")
    await _form(request)
    services = request.app.state.services
    row = await services.directory.get(name)
    model = row.models[0]
    req = ImageRequest(operation=Operation.GENERATE, model=model, prompt="a small test image: a red circle",
                       channel=name, delivery=Delivery.URL)
    ctx = RequestContext(request_id="req_" + secrets.token_hex(12), surface="console",
                         base_url=str(request.base_url), principal=principal)
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
    return _render(request, "_test_result.html", principal=principal, name=name, model=model, outcome=outcome,
                   ms=round((time.perf_counter() - started) * 1000))


@router.get("/console/keys")
async def keys(request: Request) -> Response:
    principal = await _who(request, "keys")
    services = request.app.state.services
    async with services.sessions() as session:
        accounts = list((await session.execute(select(Account).order_by(Account.id))).scalars())
    return _render(request, "keys.html", principal=principal, keys=[key_view(k) for k in await services.keys.list()],
                   accounts=accounts, created=None)


@router.post("/console/keys")
async def create_key(request: Request) -> Response:
    principal = await _who(request, "keys")
    form = await _form(request)
    services = request.app.state.services
    models = [m.strip() for m in form.get("allowed_models", "").split(",") if m.strip()] or None
    from datetime import datetime, timezone

    expires = (datetime.fromisoformat(form["expires_at"]).replace(tzinfo=timezone.utc)
               if form.get("expires_at") else None)
    row, token = await services.keys.create(
        form.get("name") or "console", is_admin=form.get("is_admin") == "on", expires_at=expires,
        allowed_models=models, account_id=int(form["account_id"]) if form.get("account_id") else None,
        rate_limit_rpm=int(form["rate_limit_rpm"]) if form.get("rate_limit_rpm") else None,
        max_concurrent=int(form["max_concurrent"]) if form.get("max_concurrent") else None)
    async with services.sessions() as session:
        accounts = list((await session.execute(select(Account).order_by(Account.id))).scalars())
    return _render(request, "keys.html", principal=principal, keys=[key_view(k) for k in await services.keys.list()],
                   accounts=accounts, created={"name": row.name, "key": token})


@router.post("/console/keys/{key_id}/toggle")
async def toggle_key(key_id: int, request: Request) -> Response:
    await _who(request, "keys")
    await _form(request)
    keys_ = request.app.state.services.keys
    row = await keys_.get(key_id)
    await keys_.update(key_id, enabled=not row.enabled)
    return RedirectResponse("/console/keys", status_code=303)


@router.get("/console/accounts")
async def accounts(request: Request, account: int | None = None, message: str | None = None) -> Response:
    principal = await _who(request, "accounts")
    services = request.app.state.services
    async with services.sessions() as session:
        rows = list((await session.execute(select(Account).order_by(Account.id))).scalars())
    entries = await data.ledger(services.sessions, account) if account else []
    return _render(request, "accounts.html", principal=principal, accounts=rows, selected=account, ledger=entries,
                   currency=services.engine.billing.currency, message=message)


@router.post("/console/accounts")
async def create_account(request: Request) -> Response:
    await _who(request, "accounts")
    form = await _form(request)
    balance = _decimal(form.get("balance"))
    account = await request.app.state.services.engine.billing.create_account(form.get("name") or "account",
                                                                              balance, _decimal(form.get("spend_limit")))
    return RedirectResponse(f"/console/accounts?account={account.id}", status_code=303)


@router.post("/console/accounts/{account_id}/topup")
async def top_up(account_id: int, request: Request) -> Response:
    await _who(request, "accounts")
    form = await _form(request)
    amount = _decimal(form.get("amount"))
    if amount is None:
        return await accounts(request, account_id, message="Top-up not applied: the amount is not a number.")
    reference = form.get("reference") or "topup_" + secrets.token_hex(8)
    try:
        await request.app.state.services.engine.billing.top_up(account_id, amount, reference)
    except GatewayError as exc:
        return await accounts(request, account_id, message=f"Top-up not applied: {exc.message}")
    return RedirectResponse(f"/console/accounts?account={account_id}", status_code=303)


@router.get("/console/prices")
async def prices(request: Request, message: str | None = None) -> Response:
    principal = await _who(request, "prices")
    billing = request.app.state.services.engine.billing
    origin = {1: "built-in", 2: "config file", 3: "console / admin API"}
    rows = [{"model": p.model, "operation": p.operation, "dimensions": p.dimensions, "amount": p.describe(),
             "origin": origin[rank], "source": f"{p.source} ({p.date})" if p.date else p.source}
            for model, entries in sorted((await billing.table()).items()) for rank, p in entries]
    return _render(request, "prices.html", principal=principal, prices=rows, currency=billing.currency,
                   message=message)


@router.post("/console/prices")
async def set_price(request: Request) -> Response:
    await _who(request, "prices")
    form = await _form(request)
    services = request.app.state.services
    amount = _decimal(form.get("amount"))
    if not form.get("model") or amount is None or amount < 0:
        return await prices(request, message="Not saved: give a model and an amount of 0 or more.")
    dimensions = {k: form[k] for k in ("quality", "size", "tier", "speed") if form.get(k)}
    await services.engine.billing.set_price(form["model"], amount, form.get("currency") or None,
                                            form.get("operation") or "*", dimensions)  # the newest wins
    await services.invalidation.changed("prices")
    return RedirectResponse("/console/prices", status_code=303)


@router.get("/console/requests")
async def request_log(request: Request, model: str | None = None, status: str | None = None,
                      key: int | None = None) -> Response:
    principal = await _who(request, "requests")
    services = request.app.state.services
    await services.records.flush()
    rows = await data.requests(services.sessions, key, model or None, status or None)
    return _render(request, "requests.html", principal=principal, rows=rows, model=model or "",
                   status_filter=status or "", key=key or "")


@router.get("/console/requests/{request_id}")
async def request_detail(request_id: str, request: Request) -> Response:
    principal = await _who(request, "requests")
    async with request.app.state.services.sessions() as session:
        row = await session.get(RequestLog, request_id)
    if row is None:
        raise NotFound(f"No request {request_id}.")
    return _render(request, "request.html", principal=principal, row=row)


@router.get("/console/tasks")
async def tasks(request: Request) -> Response:
    principal = await _who(request, "tasks")
    rows = await data.tasks(request.app.state.services.sessions, _scope(principal))
    return _render(request, "tasks.html", principal=principal, rows=rows)


@router.get("/console/tasks/{task_id}")
async def task_detail(task_id: str, request: Request) -> Response:
    principal = await _who(request, "tasks")
    services = request.app.state.services
    async with services.sessions() as session:
        task = await session.get(Task, task_id)
    if task is None or (not principal.is_admin and task.key_id != principal.key_id):
        raise NotFound(f"No task {task_id}.")
    template = "_task.html" if request.headers.get("hx-request") else "task.html"
    return _render(request, template, principal=principal, task=task,
                   deliveries=await services.tasks.deliveries(task_id))


@router.post("/console/tasks/{task_id}/cancel")
async def cancel_task(task_id: str, request: Request) -> Response:
    principal = await _who(request, "tasks")
    await _form(request)
    services = request.app.state.services
    async with services.sessions() as session:
        task = await session.get(Task, task_id)
    if task is None or (not principal.is_admin and task.key_id != principal.key_id):
        raise NotFound(f"No task {task_id}.")
    await services.tasks.cancel(task_id, task.key_id)
    return RedirectResponse(f"/console/tasks/{task_id}", status_code=303)


@router.get("/console/playground")
async def playground(request: Request, model: str | None = None) -> Response:
    principal = await _who(request, "playground")
    services = request.app.state.services
    models = [m for m, _ in await services.directory.models() if principal.may_use(m)]
    chosen = model if model in models else (models[0] if models else None)
    caps = (await services.directory.route(chosen)).capabilities if chosen else None
    template = "_playground_form.html" if request.headers.get("hx-request") else "playground.html"
    return _render(request, template, principal=principal, models=models, model=chosen, caps=caps)


@router.post("/console/playground")
async def run_playground(request: Request) -> Response:
    """Generate as the signed-in key would through the OpenAI API, and show the same call as
    curl and as OpenAI SDK code."""
    principal = await _who(request, "playground")
    form = await _form(request)
    services = request.app.state.services
    body: dict[str, Any] = {"model": form.get("model", ""), "prompt": form.get("prompt", "")}
    for field in ("size", "quality", "style", "background", "output_format"):
        if form.get(field):
            body[field] = form[field]
    if form.get("n") and form["n"] != "1":
        body["n"] = int(form["n"])
    req = ImageRequest(operation=Operation.GENERATE, model=body["model"], prompt=body["prompt"] or None,
                       n=body.get("n", 1), size=body.get("size"), quality=body.get("quality"),
                       style=body.get("style"), background=body.get("background"),
                       output_format=body.get("output_format"), delivery=Delivery.URL)
    ctx = RequestContext(request_id="req_" + secrets.token_hex(12), surface="console",
                         base_url=str(request.base_url), principal=principal)
    try:
        result = await services.engine.generate(req, ctx)
        outcome: dict[str, Any] = {"ok": True, "images": [i.url for i in result.images], "cost": ctx.cost}
        status, error = 200, None
    except GatewayError as exc:
        outcome = {"ok": False, "error": exc.message, "field": exc.field}
        status, error = exc.status, exc
    finally:
        await ctx.finish()
    services.log_request(ctx, status, error)
    base = str(request.base_url).rstrip("/")
    curl = (f"curl {base}/v1/images/generations \\\n  -H \"Authorization: Bearer $PG_KEY\" "
            f"-H \"Content-Type: application/json\" \\\n  -d '{json.dumps(body)}'")
    args = ", ".join(f"{k}={v!r}" for k, v in body.items())
    sdk = (f"from openai import OpenAI\n\nclient = OpenAI(base_url=\"{base}/v1\", api_key=\"pg-...\")\n"
           f"result = client.images.generate({args}, response_format=\"url\")\nprint(result.data[0].url)")
    return _render(request, "_playground_result.html", principal=principal, outcome=outcome, curl=curl, sdk=sdk,
                   request_id=ctx.request_id)


@router.post("/console/playground/stream")
async def stream_playground(request: Request) -> Response:
    """The same, for a model that streams: partial images as server-sent events while the image
    is made, then the finished image's link (the page draws each as it arrives)."""
    principal = await _who(request, "playground")
    form = await _form(request)
    services = request.app.state.services
    req = ImageRequest(operation=Operation.GENERATE, model=form.get("model", ""), prompt=form.get("prompt") or None,
                       size=form.get("size") or None, stream=True, partial_images=2, delivery=Delivery.URL)
    ctx = RequestContext(request_id="req_" + secrets.token_hex(12), surface="console",
                         base_url=str(request.base_url), principal=principal)

    def event(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    async def events():
        status, error = 200, None
        try:
            async for item in await services.engine.stream(req, ctx):
                if isinstance(item, StreamCompleted):
                    yield event("image", {"url": item.image.url, "request": ctx.request_id})
                else:
                    yield event("partial", {"b64": str(item.b64), "index": item.index})
        except GatewayError as exc:
            status, error = exc.status, exc
            yield event("error", {"message": exc.message})
        finally:
            await ctx.finish()
            services.log_request(ctx, status, error)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})


@router.get("/console/gallery")
async def gallery(request: Request) -> Response:
    principal = await _who(request, "gallery")
    services = request.app.state.services
    await services.records.flush()
    return _render(request, "gallery.html", principal=principal,
                   images=await data.gallery(services.sessions, _scope(principal)))


def _decimal(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value not in (None, "") else None
    except InvalidOperation:
        return None


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc']) or 'channel'}: {err['msg']}"
    return str(exc)
