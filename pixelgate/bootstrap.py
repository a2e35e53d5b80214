"""What runs before a gateway serves: the schema, the keys that seal secrets, the configuration's
channels, the URL-signing secret and the admin key. A CLI command runs only the first two
(`prepare_database`): it changes nothing it does not name. Kept apart from the web application
(pixelgate.app) so that a CLI command does not import it."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from pixelgate.config import ChannelConfig, Settings
from pixelgate.db.models import Meta
from pixelgate.db.session import migrate, sessionmaker
from pixelgate.services import sealing
from pixelgate.services.auth import KeyStore
from pixelgate.services.routing import SANDBOX_CHANNEL, ChannelDirectory, Reconciled

log = logging.getLogger("pixelgate")


@dataclass
class Started:
    admin_key: str | None
    """A newly generated admin key, which the caller prints once."""
    channels: Reconciled


async def prepare_database(settings: Settings, db: AsyncEngine) -> None:
    """The schema, and the keys that seal secrets: what every command needs."""
    await migrate(db)
    configure_sealing(settings)
    await sealing.reseal(sessionmaker(db))  # rows from before sealing; and a wrong key stops here, named


async def start(settings: Settings, db: AsyncEngine) -> Started:
    """Everything, once before serving (after the caller checked what it can check)."""
    await prepare_database(settings, db)
    sessions = sessionmaker(db)
    applied = await apply_config(settings, ChannelDirectory(sessions))
    await signing_secret(sessions, settings)
    return Started(await KeyStore(sessions).ensure_admin(settings.admin_key), applied)


async def bootstrap(settings: Settings, db: AsyncEngine) -> str | None:
    """`start` for an application started on its own (create_app with migrate_on_start): what
    it did to the channels goes to the log. Returns a newly generated admin key."""
    started = await start(settings, db)
    for line in channel_report(started.channels, settings):
        (log.warning if line.startswith("warning: ") else log.info)(line.removeprefix("warning: "))
    return started.admin_key


async def apply_config(settings: Settings, directory: ChannelDirectory, prune: bool = False,
                       dry_run: bool = False) -> Reconciled:
    """The configuration's channels into the database (`serve`, `pixelgate config apply`)."""
    return await directory.reconcile(configured_channels(settings), settings.sandbox, prune, dry_run)


def channel_report(done: Reconciled, settings: Settings, dry_run: bool = False) -> list[str]:
    """`done` in lines an operator reads: what changed, and what the configuration no longer
    declares and how to remove it."""
    verb = (lambda past, present: f"would {present}") if dry_run else (lambda past, present: past)
    lines = [f"channel {n!r}: {verb('added', 'add')}" for n in done.added]
    lines += [f"channel {n!r}: {verb('changed', 'change')} ({', '.join(fields)})" for n, fields in done.changed]
    lines += [f"channel {n!r}: {verb('removed', 'remove')} (not in the configuration)" for n in done.removed]
    for name in done.disabled:
        switch = "sandbox" if name == SANDBOX_CHANNEL else "simulate_vendors"
        lines.append(f"channel {name!r}: {verb('disabled', 'disable')} ({switch} is off; "
                     "`pixelgate config apply --prune` removes it)")
    lines += [f"warning: channel {n!r} is no longer in the configuration but still serves: "
              f"`pixelgate config apply --prune` (or `pixelgate channels remove {n}`) removes it" for n in done.stale]
    lines += [f"channel {n!r}: the configuration's is not applied: a channel of that name was made or changed "
              "with the admin API, the console or the CLI, and it is kept" for n in done.kept]
    return lines


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
