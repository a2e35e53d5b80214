"""What a route needs, declared in its signature (FastAPI's `Annotated` dependencies) instead of
fetched from `request.app.state`: `async def generate(request: Request, engine: EngineDep)`.
The shared services are built once in app.py's lifespan; a test overrides one dependency
(`app.dependency_overrides[services] = ...`), not a global."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from pixelgate.config import Settings
from pixelgate.services.engine import Engine, RequestContext
from pixelgate.services.fetch import Fetcher
from pixelgate.services.routing import ChannelDirectory
from pixelgate.services.storage import ImageStore, UrlSigner
from pixelgate.services.tasks import TaskService

if TYPE_CHECKING:
    from pixelgate.app import Services


def services(request: Request) -> "Services":
    return request.app.state.services


ServicesDep = Annotated["Services", Depends(services)]
SettingsDep = Annotated[Settings, Depends(lambda request: request.app.state.services.settings)]
EngineDep = Annotated[Engine, Depends(lambda request: request.app.state.services.engine)]
TasksDep = Annotated[TaskService, Depends(lambda request: request.app.state.services.tasks)]
StorageDep = Annotated[ImageStore, Depends(lambda request: request.app.state.services.storage)]
SignerDep = Annotated[UrlSigner, Depends(lambda request: request.app.state.services.signer)]
FetcherDep = Annotated[Fetcher, Depends(lambda request: request.app.state.services.fetcher)]
DirectoryDep = Annotated[ChannelDirectory, Depends(lambda request: request.app.state.services.directory)]
ContextDep = Annotated[RequestContext, Depends(lambda request: request.state.ctx)]
"""The request's context (its id, key, cost...), made by the surface's route class."""
