"""create_app(settings) -> the ASGI application. The lifespan builds every shared object
(database engine, HTTP pool, storage, services) and tears it down; nothing is module-global."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixelgate import __version__
from pixelgate import logs, simulators
from pixelgate.access import AccessLog
from pixelgate.bootstrap import bootstrap, configure_sealing, signing_secret
from pixelgate.config import Settings, load_settings
from pixelgate.db.session import make_engine, sessionmaker
from pixelgate.domain.prices import Price
from pixelgate.errors import GatewayError
from pixelgate.services.auth import KeyStore
from pixelgate.services.authfailures import AuthFailures
from pixelgate.services.billing import Billing
from pixelgate.services.engine import Engine
from pixelgate.services.fetch import Fetcher
from pixelgate.services.invalidation import Invalidation
from pixelgate.services.ratelimit import RateLimiter
from pixelgate.services.readiness import readiness
from pixelgate.services.redisconn import RedisLink
from pixelgate.services.records import RecordWriter
from pixelgate.services.routing import ChannelDirectory
from pixelgate.services.sandbox import SandboxTransport
from pixelgate.services.shared import Services
from pixelgate.services.storage import UrlSigner, open_storage
from pixelgate.services.tasks import TaskService
from pixelgate.services.transport import HttpTransport
from pixelgate.services.webhooks import WebhookSender
from pixelgate import console
from pixelgate.surfaces import admin, files, ideogram, midjourney, openai_images, predictions, replicate
from pixelgate.surfaces import gemini
from pixelgate.surfaces import stability
from pixelgate.surfaces import chat, responses
from pixelgate.surfaces import _openapi
from pixelgate.surfaces._limits import BodyLimit
from pixelgate.surfaces._route import openai_error

log = logging.getLogger("pixelgate")


async def start_services(settings: Settings) -> Services:
    db = make_engine(settings.resolved_database_url)
    configure_sealing(settings)
    if settings.migrate_on_start:
        generated = await bootstrap(settings, db)
        if generated:
            print(f"pixelgate: created admin key (shown once, keep it): {generated}", flush=True)
    sessions = sessionmaker(db)
    directory = ChannelDirectory(sessions, settings.cache_seconds)
    storage = await open_storage(settings)
    signer = UrlSigner(await signing_secret(sessions, settings), settings.url_ttl_seconds, settings.public_base_url)
    records = RecordWriter(sessions)
    records.start()
    http = HttpTransport(settings.upstream_connections,
                         simulators.Simulators() if settings.simulate_vendors else None, settings.upstream_max_bytes,
                         Fetcher(settings.fetch_allow_hosts, settings.upstream_max_bytes, 60))
    billing = Billing(sessions, settings.currency, settings.exchange_rates, settings.unpriced,
                      [Price(p.model, p.amount, p.currency or settings.currency, p.operation, dict(p.dimensions),
                             "config file") for p in settings.prices]
                      + (simulators.free_prices(settings.currency) if settings.simulate_vendors else []),
                      settings.cache_seconds)
    redis = RedisLink(settings.redis_url, settings.redis_timeout_seconds) if settings.redis_url else None
    limiter = RateLimiter(redis, settings.redis_namespace, settings.slot_seconds)
    engine = Engine(settings, directory, storage, signer, records,
                    {"http": http, "sandbox": SandboxTransport()}, billing, limiter)
    fetcher = Fetcher(settings.fetch_allow_hosts, settings.fetch_max_bytes, settings.fetch_timeout_seconds)
    keys = KeyStore(sessions, settings.cache_seconds)
    invalidation = Invalidation(redis, settings.redis_namespace)
    for topic, cache in (("keys", keys), ("channels", directory), ("prices", billing)):
        invalidation.on(topic, cache.forget)
    keys.announce = directory.announce = invalidation.changed
    invalidation.start()
    services = Services(settings, db, sessions, keys, directory, storage, signer, records, http, fetcher, engine,
                        None, invalidation, redis=redis)  # type: ignore[arg-type]
    # A task's webhook carries the task as its own API shows it.
    async def midjourney_task(task, base: str) -> dict:
        return midjourney.render_task(task, base, services)

    renderers = {"predictions": lambda task, base: predictions.render_task(task, base, services),
                 "replicate": lambda task, base: replicate.render(task, base, services),
                 "midjourney": midjourney_task,
                 "openai": lambda task, base: openai_images.render_webhook(task, base, services),
                 "chat": lambda task, base: chat.render_webhook(task, base, services),
                 "ideogram": lambda task, base: ideogram.render_webhook(task, base, services),
                 "responses": lambda task, base: responses.render_task(task, base, services),
                 "gemini": lambda task, base: gemini.render_operation(task, base, services)}
    webhooks = WebhookSender(sessions, fetcher, renderers, settings.webhook_retry_seconds,
                             settings.fetch_timeout_seconds, settings.poll_interval_seconds,
                             settings.webhook_per_destination)
    services.tasks = TaskService(sessions, engine, webhooks, settings.poll_interval_seconds,
                                 settings.task_deadline_seconds, settings.task_lease_seconds,
                                 settings.task_store_retry_seconds)
    services.tasks.start()
    services.auth_failures = AuthFailures(settings.auth_failures_per_minute, 60, redis, settings.redis_namespace)
    keys.throttle = services.auth_failures
    return services


async def stop_services(services: Services) -> None:
    await services.tasks.close()
    await services.invalidation.close()
    await services.storage.aclose()
    await services.records.close()
    await services.http.close()
    await services.fetcher.close()
    await services.engine.limiter.close()
    await services.auth_failures.close()
    if services.redis is not None:  # after every user of the shared link stopped
        await services.redis.aclose()
    await services.db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.services = await start_services(settings)
        # What start-up made lives as long as the process: kept out of the collector's sight, a
        # full collection later walks only what requests make (not every module and route again).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await stop_services(app.state.services)

    app = FastAPI(title="pixelgate", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # /docs: _openapi.install, offline
    _openapi.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog, currency=settings.currency)  # outermost: it sees the 413s too
    app.include_router(gemini.v1_models_router)  # before OpenAI's /v1/models: Gemini clients only
    app.include_router(openai_images.router)
    app.include_router(openai_images.models_router)
    app.include_router(predictions.router)
    app.include_router(replicate.router)
    app.include_router(midjourney.router)
    app.include_router(ideogram.router)
    app.include_router(gemini.router)
    app.include_router(gemini.models_router)
    app.include_router(stability.router)
    app.include_router(files.router)
    app.include_router(chat.router)
    app.include_router(responses.router)
    app.include_router(admin.router)
    app.include_router(admin.metrics_router)
    app.include_router(console.router)
    app.mount("/console/static", console.pages.static, name="console-static")

    _unrouted_in_each_apis_shape(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ready, checks = await readiness(app.state.services)
        return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                            status_code=200 if ready else 503)

    return app


UNROUTED_SHAPES = (("/ideogram", ideogram.render_error), ("/mj", midjourney.render_error),
                   ("/mj-", midjourney.render_error), ("/v1beta", gemini.render_error),
                   ("/stability", stability.render_error))
"""Path prefixes whose API has an error shape of its own; anything else answers in OpenAI's."""


def _unrouted_in_each_apis_shape(app: FastAPI) -> None:
    """A path no route serves (404) or a method it does not take (405) answers in the error shape
    of the API the path belongs to, not FastAPI's {"detail": ...}; the console keeps its pages."""

    @app.exception_handler(StarletteHTTPException)
    async def unrouted(request: Request, exc: StarletteHTTPException) -> Response:
        path = request.url.path
        if path.startswith(("/console", "/docs", "/redoc")):
            return await http_exception_handler(request, exc)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        message = f"No route {request.method} {path}." if exc.status_code == 404 else str(exc.detail)
        error = GatewayError(message, code=code, status=exc.status_code)
        render = next((r for prefix, r in UNROUTED_SHAPES if path.startswith(prefix)), openai_error)
        response = render(error)
        response.headers.update(exc.headers or {})
        return response


def app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory` and for each worker process of `pixelgate serve`."""
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)
