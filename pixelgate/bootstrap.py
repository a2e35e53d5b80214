"""What runs once before a gateway serves, and before every CLI command: the schema, the keys that
seal secrets, the config file's channels, the URL-signing secret and the admin key. Kept apart
from the web application (pixelgate.app) so that a CLI command does not import it."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from pixelgate.config import ChannelConfig, Settings
from pixelgate.db.models import Meta
from pixelgate.db.session import migrate, sessionmaker
from pixelgate.services import sealing
from pixelgate.services.auth import KeyStore
from pixelgate.services.routing import ChannelDirectory


async def bootstrap(settings: Settings, db: AsyncEngine) -> str | None:
    """Schema, config channels and the admin key: run once before serving. Returns a newly
    generated admin key, which the caller prints once."""
    await migrate(db)
    sessions = sessionmaker(db)
    configure_sealing(settings)
    await sealing.reseal(sessions)  # rows from before sealing; and a wrong key stops here, named
    await ChannelDirectory(sessions).sync_config(configured_channels(settings), settings.sandbox)
    await signing_secret(sessions, settings)
    return await KeyStore(sessions).ensure_admin(settings.admin_key)


def configure_sealing(settings: Settings) -> str:
    """This instance's keys for the secrets at rest (services.sealing)."""
    return sealing.configure(settings.encryption_key, settings.encryption_key_file, settings.data_dir,
                             settings.encryption_keys_previous)


def configured_channels(settings: Settings) -> list[ChannelConfig]:
    """The config file's channels, and the simulated vendors' when asked for."""
    if not settings.simulate_vendors:
        return settings.channels
    from pixelgate import simulators  # only now: they are web apps
    taken = {c.name for c in settings.channels}
    return settings.channels + [ChannelConfig(**c) for c in simulators.channels() if c["name"] not in taken]


async def signing_secret(sessions: async_sessionmaker, settings: Settings) -> str:
    """The secret that signs image URLs: the setting, else one kept (sealed) in the database."""
    if settings.secret_key:
        return settings.secret_key
    async with sessions() as session, session.begin():
        row = await session.get(Meta, "url_signing_secret")
        if row is None:
            row = Meta(key="url_signing_secret", value=secrets.token_hex(32))
            session.add(row)
    async with sessions() as session:  # re-read: a concurrent first start may have won
        return (await session.execute(select(Meta.value).where(Meta.key == "url_signing_secret"))).scalar_one()
