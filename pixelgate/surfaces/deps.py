"""What a route needs, declared in its signature (FastAPI's `Annotated` dependencies) instead of
fetched from `request.app.state`: `async def generate(request: Request, engine: EngineDep)`.
The shared services (services.shared) are built once in app.py's lifespan; a test overrides one
dependency (`app.dependency_overrides[services] = ...`), not a global."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.config import Settings
from pixelgate.errors import Forbidden
from pixelgate.services.auth import KeyStore, Principal
from pixelgate.services.billing import Billing
from pixelgate.services.engine import Engine, RequestContext
from pixelgate.services.fetch import Fetcher
from pixelgate.services.routing import ChannelDirectory
from pixelgate.services.shared import Services
from pixelgate.services.storage import ImageStore, UrlSigner
from pixelgate.services.tasks import TaskService
from pixelgate.surfaces._route import authenticate


# Every dependency here is `async def`, though none awaits: FastAPI runs a plain `def` one in
# its thread pool, a thread hop per dependency per request (it made a 0.7 ms request 3 ms).

async def services(request: Request) -> Services:
    return request.app.state.services


def _service(name: str):
    async def get(request: Request):
        return getattr(request.app.state.services, name)
    get.__name__ = name
    return Depends(get)


async def _context(request: Request) -> RequestContext:
    return request.state.ctx


async def _billing(request: Request) -> Billing:
    return request.app.state.services.engine.billing


async def principal(request: Request) -> Principal:
    """The caller's key, from whichever header its SDK sends (services.auth.presented_token),
    set on the request's context; Unauthorized (401) without a good one (a key that does not
    verify counts against the client's address). Raised while the route is served, so each API
    answers it in its own shape."""
    return await authenticate(request)


async def admin_caller(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    if not caller.is_admin:
        raise Forbidden("This endpoint needs an admin key.", code="admin_required")
    return caller


ServicesDep = Annotated[Services, Depends(services)]
"""All of them, for a route that passes them on (to a renderer, a task helper)."""
SettingsDep = Annotated[Settings, _service("settings")]
EngineDep = Annotated[Engine, _service("engine")]
TasksDep = Annotated[TaskService, _service("tasks")]
StorageDep = Annotated[ImageStore, _service("storage")]
SignerDep = Annotated[UrlSigner, _service("signer")]
FetcherDep = Annotated[Fetcher, _service("fetcher")]
DirectoryDep = Annotated[ChannelDirectory, _service("directory")]
KeysDep = Annotated[KeyStore, _service("keys")]
BillingDep = Annotated[Billing, Depends(_billing)]
SessionsDep = Annotated[async_sessionmaker, _service("sessions")]
ContextDep = Annotated[RequestContext, Depends(_context)]
"""The request's context (its id, key, cost...), made by the surface's route class."""
PrincipalDep = Annotated[Principal, Depends(principal)]
"""The authenticated caller (also on ContextDep's `principal`): declare it first, so that a
missing key is answered 401 before the body is looked at."""
AdminDep = Annotated[Principal, Depends(admin_caller)]
"""An admin key's caller; 403 for any other key."""
