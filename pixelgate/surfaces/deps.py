"""What a route needs, declared in its signature (FastAPI's `Annotated` dependencies) instead of
fetched from `request.app.state`: `async def generate(request: Request, engine: EngineDep)`.
The shared services (services.shared) are built once in app.py's lifespan; a test overrides one
dependency (`app.dependency_overrides[services] = ...`), not a global."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pixelgate.config import Settings
from pixelgate.services.engine import Engine, RequestContext
from pixelgate.services.fetch import Fetcher
from pixelgate.services.routing import ChannelDirectory
from pixelgate.services.shared import Services
from pixelgate.services.storage import ImageStore, UrlSigner
from pixelgate.services.tasks import TaskService


def services(request: Request) -> Services:
    return request.app.state.services


def _service(name: str):
    def get(request: Request):
        return getattr(request.app.state.services, name)
    get.__name__ = name
    return Depends(get)


def _context(request: Request) -> RequestContext:
    return request.state.ctx


ServicesDep = Annotated[Services, Depends(services)]
SettingsDep = Annotated[Settings, _service("settings")]
EngineDep = Annotated[Engine, _service("engine")]
TasksDep = Annotated[TaskService, _service("tasks")]
StorageDep = Annotated[ImageStore, _service("storage")]
SignerDep = Annotated[UrlSigner, _service("signer")]
FetcherDep = Annotated[Fetcher, _service("fetcher")]
DirectoryDep = Annotated[ChannelDirectory, _service("directory")]
ContextDep = Annotated[RequestContext, Depends(_context)]
"""The request's context (its id, key, cost...), made by the surface's route class."""
