"""Services: every shared object of one process, built once by app.py's lifespan and handed
to the routes (surfaces.deps); nothing is module-global."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from pixelgate.config import Settings
from pixelgate.errors import GatewayError
from pixelgate.services import metrics
from pixelgate.services.auth import KeyStore
from pixelgate.services.authfailures import AuthFailures
from pixelgate.services.engine import Engine, RequestContext
from pixelgate.services.fetch import Fetcher
from pixelgate.services.invalidation import Invalidation
from pixelgate.services.records import RecordWriter
from pixelgate.services.redisconn import RedisLink
from pixelgate.services.routing import ChannelDirectory
from pixelgate.services.storage import ImageStore, UrlSigner
from pixelgate.services.tasks import TaskService
from pixelgate.services.transport import HttpTransport


@dataclass
class Services:
    settings: Settings
    db: AsyncEngine
    sessions: async_sessionmaker
    keys: KeyStore
    directory: ChannelDirectory
    storage: ImageStore
    signer: UrlSigner
    records: RecordWriter
    http: HttpTransport
    fetcher: Fetcher
    engine: Engine
    tasks: TaskService
    invalidation: Invalidation
    auth_failures: AuthFailures = dataclasses.field(default_factory=lambda: AuthFailures(0))
    redis: RedisLink | None = None

    def log_request(self, ctx: RequestContext, status: int, error: GatewayError | None = None) -> None:
        """A finished request into the request log and the metrics, from the same row."""
        rows = ctx.rows(status, error)
        self.records.add(*rows)
        metrics.observe(rows[0][1])
